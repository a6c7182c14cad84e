"""Handlers on a Dask cluster: ``q.start_worker(dask=client)``, ``pgq-nb worker --dask ADDR``.

The worker still claims, heartbeats and records every job in Postgres; only the handler's
call runs on the cluster. Each attempt is one task, ``client.submit(run_job, ...,
pure=False, key="pgq_nb-<job id>-<attempt>-<token>")``: Dask pickles the handler with
cloudpickle (functions, closures and lambdas of notebook cells ship), the result is encoded
to JSON on the Dask worker (:mod:`pgq_nb.process_child`), and the queue records it as for a
thread. Dask's workers must be able to import ``pgq_nb`` (install the same version there).

What Dask can and cannot stop: past its timeout, or cancelled (a cancel request, the worker's
stop), the attempt ends in the queue at once and its task is cancelled with
``client.cancel``. A task still waiting is dropped; a task already running on a Dask worker
is **not** interrupted (Dask does not stop a running Python function): it runs to its end and
its result is thrown away, so its side effects may still happen after the job was retried.
Use ``executor="process"`` (a pool of this machine) where a timeout must really stop the code.

A Dask worker lost while it runs the task (killed, out of memory under its nanny): the
scheduler first reruns the task elsewhere, up to ``distributed.scheduler.allowed-failures``
times (Dask's default: 3); past that the task fails with ``KilledWorker``, which ends the
attempt as :class:`~pgq_nb.errors.DaskWorkerLost`, retried per the entrypoint's policy
(the attempts Dask had queued on that worker too). A job is never lost with its worker: the
queue's row outlives both, and a job finishes once in history whatever Dask reran.

Imported only by a worker given ``dask=`` (:mod:`pgq_nb.executors`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import cloudpickle
import distributed

from pgq_nb.errors import (
    DaskWorkerLost,
    InvalidInputError,
    JobTimeoutError,
    UnpicklableHandlerError,
)
from pgq_nb.process_child import job_fields, run_job

if TYPE_CHECKING:
    from pgq_nb.models import Job
    from pgq_nb.registry import EntrypointSpec

logger = logging.getLogger("pgq_nb.worker")

#: How long ``pgq-nb worker --dask ADDRESS`` waits to reach the scheduler.
CONNECT_TIMEOUT_S = 10.0


def connect(address: str, timeout: float | None = None) -> Any:
    """A client of the scheduler at ``address`` (``tcp://host:8786``), or a clear error."""
    wait = CONNECT_TIMEOUT_S if timeout is None else timeout
    try:
        client: Any = distributed.Client  # (untyped)
        return client(address, timeout=wait, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise InvalidInputError(
            f"could not reach the Dask scheduler at {address!r} within {wait:g} s "
            f"({type(exc).__name__}: {exc}): start it (`dask scheduler`, then `dask worker "
            f"{address}` on each machine) or check the address and that its port is open here"
        ) from None


def scheduler_address(client: Any) -> str:
    """Where ``client``'s scheduler is, for ``q.workers()`` (best effort)."""
    return str(getattr(client.scheduler, "address", None) or "unknown")


def check_client(client: object) -> distributed.Client:
    """``client`` if it is a running, synchronous ``distributed.Client`` whose scheduler
    answers, else a clear error (before anything is claimed)."""
    if not isinstance(client, distributed.Client):
        raise InvalidInputError(
            f"dask must be a distributed.Client (e.g. Client('tcp://scheduler:8786') or "
            f"Client(LocalCluster())), not {type(client).__name__}"
        )
    if client.asynchronous:
        raise InvalidInputError(
            "dask= needs a synchronous distributed.Client (the default): the queue's worker "
            "runs on its own event loop; create it with Client(address) without "
            "asynchronous=True"
        )
    if client.status != "running":
        raise InvalidInputError(
            f"the Dask client is {client.status}, not running: create a new one "
            "(Client(address)) or reconnect it before giving it to the worker"
        )
    try:
        info = client.scheduler_info()
        if not info.get("workers"):
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        raise InvalidInputError(
            f"the Dask scheduler at {scheduler_address(client)} does not answer or has no "
            f"worker ({type(exc).__name__}: {exc}): start `dask worker "
            f"{scheduler_address(client)}` on the cluster's machines, then try again"
        ) from None
    return client


class _Attempt:
    """One attempt on its way through Dask: submitted with others of the same loop turn, its
    result fetched with others that finished about together."""

    __slots__ = ("dropped", "fields", "future", "handler", "key", "outcome")

    def __init__(self, handler: Any, fields: dict[str, Any], key: str) -> None:
        self.handler = handler
        self.fields = fields
        self.key = key
        self.future: Any = None  # the Dask future, once submitted
        self.dropped = False  # timed out or cancelled before it was submitted
        self.outcome: asyncio.Future[Any] = asyncio.get_running_loop().create_future()


class DaskExecutor:
    """A :class:`pgq_nb.executors.JobExecutor` on a Dask cluster (see the module's docs)."""

    kind = "dask"

    def __init__(self, client: Any) -> None:
        self.client: Any = check_client(client)
        self.address = scheduler_address(client)
        self.size = max(1, sum(client.nthreads().values()))
        self._checked: dict[int, Any] = {}  # handlers known to pickle (by id; kept alive)
        self._fetchers = concurrent.futures.ThreadPoolExecutor(
            max_workers=FETCHERS, thread_name_prefix="pgq_nb-dask"
        )
        self._to_submit: list[_Attempt] = []
        self._finished: list[_Attempt] = []
        self._fetching = 0  # batches of results being fetched now
        self._fetch_task: asyncio.Future[None] | None = None

    def pids(self) -> list[int]:
        """None of this machine's processes: the tasks run in Dask's workers."""
        return []

    async def run(self, spec: EntrypointSpec, job: Job, *, timeout: float | None) -> Any:
        """Run one attempt as a task on the cluster (see the module's docs)."""
        if id(spec.handler) not in self._checked:  # (one taken on after the start: say why)
            check_sendable(spec.name, spec.handler)
            self._checked[id(spec.handler)] = spec.handler
        key = f"pgq_nb-{job.id}-{job.attempts}-{uuid.uuid4().hex[:8]}"
        attempt = _Attempt(spec.handler, job_fields(job), key)
        if not self._to_submit:  # the first of this loop turn: submit them all at its end
            asyncio.get_running_loop().call_soon(self._submit)
        self._to_submit.append(attempt)
        began = time.monotonic()
        try:
            finished, _ = await asyncio.wait([attempt.outcome], timeout=timeout)
        except asyncio.CancelledError:
            self._drop(attempt)  # a running task is not interrupted (module's docs)
            raise
        if not finished:
            self._drop(attempt)
            logger.warning(
                "a handler on Dask ran past its timeout; its task was cancelled (a task that "
                "already runs is not interrupted by Dask)",
                extra={"job_id": job.id, "entrypoint": job.entrypoint, "timeout_s": timeout},
            )
            raise JobTimeoutError(
                f"the handler ran longer than its timeout of {timeout:g} s on Dask; the "
                f"attempt ended after {time.monotonic() - began:.1f} s and its task was "
                "cancelled (if it was already running on a Dask worker, it runs on: Dask does "
                "not interrupt a running task)"
            )
        return attempt.outcome.result()

    def _drop(self, attempt: _Attempt) -> None:
        attempt.dropped = True
        if attempt.future is not None:
            self.client.cancel(attempt.future)

    def _submit(self) -> None:
        """Submit the attempts of this loop turn: one ``client.map`` (one message to the
        scheduler) per handler."""
        batch, self._to_submit = self._to_submit, []
        groups: dict[int, list[_Attempt]] = {}
        for attempt in batch:
            if not attempt.dropped:
                groups.setdefault(id(attempt.handler), []).append(attempt)
        loop = asyncio.get_running_loop()
        for attempts in groups.values():
            try:
                futures = self.client.map(
                    run_job,
                    [a.handler for a in attempts],
                    [a.fields for a in attempts],
                    [None] * len(attempts),
                    key=[a.key for a in attempts],
                    pure=False,
                )
            except Exception as exc:  # (the client closed meanwhile)
                for attempt in attempts:
                    _settle(attempt, False, exc, self.address)
                continue
            for attempt, future in zip(attempts, futures, strict=True):
                attempt.future = future
                # Dask runs every done-callback in one thread of its own: it only wakes the
                # loop, which fetches the results that finished about together at once
                future.add_done_callback(
                    lambda _, a=attempt: loop.call_soon_threadsafe(self._finish, a)
                )

    def _finish(self, attempt: _Attempt) -> None:
        if attempt.outcome.done():  # timed out or cancelled meanwhile
            return
        self._finished.append(attempt)
        if self._fetching < FETCHERS:
            self._fetching += 1
            self._fetch_task = asyncio.ensure_future(self._fetch())

    async def _fetch(self) -> None:
        """Fetch the results of the attempts that finished, a batch (one ``client.gather``)
        at a time, in threads of our own (a fetch is a round trip to the cluster)."""
        loop = asyncio.get_running_loop()
        try:
            while self._finished:
                batch, self._finished = self._finished, []
                batch = [a for a in batch if not a.outcome.done()]
                futures = [a.future for a in batch]
                outcomes = await loop.run_in_executor(self._fetchers, _gather, self.client, futures)
                for attempt, (ok, value) in zip(batch, outcomes, strict=True):
                    _settle(attempt, ok, value, self.address)
        finally:
            self._fetching -= 1

    async def close(self) -> None:
        """End the threads that fetch results; the client and its cluster belong to whoever
        made them."""
        self._fetchers.shutdown(wait=False)


#: Threads fetching results at once (each a batch of them).
FETCHERS = 2


def _gather(client: Any, futures: list[Any]) -> list[tuple[bool, Any]]:
    """Each future's (True, result) or (False, error): those that finished in one
    ``client.gather`` (one round trip), the others (and all, if that fails) one by one."""
    got: dict[int, Any] = {}
    finished = [i for i, f in enumerate(futures) if f.status == "finished"]
    if finished:
        try:
            values = client.gather([futures[i] for i in finished])
            got = dict(zip(finished, values, strict=True))
        except BaseException:  # (one was lost meanwhile: each alone tells which)
            got = {}
    outcomes: list[tuple[bool, Any]] = []
    for i, future in enumerate(futures):
        if i in got:
            outcomes.append((True, got[i]))
            continue
        try:
            outcomes.append((True, future.result()))
        except BaseException as exc:  # every way a task ends is told (a cancel too)
            outcomes.append((False, exc))
    return outcomes


def _settle(attempt: _Attempt, ok: bool, value: Any, address: str) -> None:
    if attempt.outcome.done():
        return
    if ok:
        attempt.outcome.set_result(value)
    else:
        attempt.outcome.set_exception(_translated(value, address))


def _translated(exc: BaseException, address: str) -> BaseException:
    """The attempt's error: the handler's own, or a clear one for what Dask did to it."""
    if isinstance(exc, distributed.KilledWorker):
        return DaskWorkerLost(
            f"the Dask worker running the handler was lost ({exc}): killed, or ended by its "
            "nanny (out of memory?). This attempt is lost and retried per the entrypoint's "
            "policy"
        )
    if isinstance(exc, concurrent.futures.CancelledError | asyncio.CancelledError):
        return DaskWorkerLost(
            f"the Dask task of this attempt was cancelled by the cluster (the client lost its "
            f"scheduler at {address}, or someone cancelled it): the attempt is retried per "
            "the entrypoint's policy"
        )
    if isinstance(exc, Exception):
        return exc
    return RuntimeError(f"{type(exc).__name__}: {exc}")


def check_sendable(name: str, handler: Any) -> None:
    """UnpicklableHandlerError unless ``handler`` can be pickled for Dask (which object and
    why, from the processes' check when loky is installed)."""
    try:
        from pgq_nb.process_pool import check_sendable as check
    except ImportError:  # pgq_nb[dask] without pgq_nb[processes]: the same check, shorter
        try:
            cloudpickle.dumps(handler)
        except Exception as exc:
            raise UnpicklableHandlerError(
                f"the handler of entrypoint {name!r} cannot be sent to Dask: it (or something "
                f"it uses) cannot be pickled ({type(exc).__name__}: {exc}). Move it to a "
                "module and import it, or make it a plain function that creates such objects "
                "itself (a connection, a lock)"
            ) from None
        return
    check(name, handler)
