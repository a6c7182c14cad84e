"""Handlers on a Dask cluster: ``q.start_worker(dask=client)``, ``pgq-nb worker --dask ADDR``.

The worker still claims, heartbeats and records every job in Postgres; only the handler's
call runs on the cluster. The attempts that start in one loop turn go to the scheduler in one
``client.map`` per handler (keys ``pgq_nb-<job id>-<attempt>-<token>``): one task per attempt
while the entrypoint's attempts are long or not measured yet, and for short ones chunks of
several attempts per task (``pgq_nb-chunk<n>-<first job id>-...``, sized to about 0.2 s of
work: :mod:`pgq_nb.dask_chunks`), each attempt's outcome still its own. Attempts with a
``timeout=`` always run alone. Dask pickles the handler with cloudpickle (functions, closures
and lambdas of notebook cells ship), the result is encoded to JSON on the Dask worker
(:mod:`pgq_nb.process_child`), and the queue records it as for a thread. Dask's workers must
be able to import ``pgq_nb`` (install the same version there).

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
(the attempts Dask had queued on that worker too, and every attempt of a chunk it ran: a
chunk shares its task's fate). A job is never lost with its worker: the queue's row outlives
both, and a job finishes once in history whatever Dask reran. A cancelled attempt in a chunk
ends at once in the queue; the chunk runs on and that attempt's outcome is thrown away.

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

from pgq_nb.dask_chunks import MAX_CHUNK, Durations, run_chunk, split, with_trace
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
    """One attempt on its way through Dask: submitted with others of the same loop turn (in a
    chunk with others of its entrypoint, unless it has a timeout), its outcome fetched with
    others that finished about together."""

    __slots__ = ("dropped", "fields", "handler", "key", "name", "outcome", "task", "timed")

    def __init__(self, spec: EntrypointSpec, fields: dict[str, Any], key: str) -> None:
        self.handler = spec.handler
        self.name = spec.name
        self.timed = spec.timeout is not None  # never chunked
        self.fields = fields
        self.key = key
        self.task: _Task | None = None  # the Dask task that runs it, once submitted
        self.dropped = False  # timed out or cancelled: its outcome is not wanted any more
        self.outcome: asyncio.Future[Any] = asyncio.get_running_loop().create_future()


class _Task:
    """One Dask task: one attempt (``run_job``) or a chunk of them (``run_chunk``)."""

    __slots__ = ("attempts", "chunked", "future")

    def __init__(self, attempts: list[_Attempt], chunked: bool) -> None:
        self.attempts = attempts
        self.chunked = chunked
        self.future: Any = None


class DaskExecutor:
    """A :class:`pgq_nb.executors.JobExecutor` on a Dask cluster (see the module's docs)."""

    kind = "dask"

    def __init__(self, client: Any) -> None:
        self.client: Any = check_client(client)
        self.address = scheduler_address(client)
        self.size: int = max(1, sum(client.nthreads().values()))
        self._checked: dict[int, Any] = {}  # handlers known to pickle (by id; kept alive)
        self._fetchers = concurrent.futures.ThreadPoolExecutor(
            max_workers=FETCHERS, thread_name_prefix="pgq_nb-dask"
        )
        self._to_submit: list[_Attempt] = []
        self._finished: list[_Task] = []
        self._fetching = 0  # batches of results being fetched now
        self._fetch_task: asyncio.Future[None] | None = None
        self.durations = Durations()  # of recent attempts, by entrypoint: the chunks' sizes
        self.tasks = 0  # Dask tasks submitted (each attempt was one before chunks)

    def pids(self) -> list[int]:
        """None of this machine's processes: the tasks run in Dask's workers."""
        return []

    def depth(self) -> int:
        """Attempts a worker without ``concurrency=`` runs at once: two tasks per Dask thread
        (one running, one ready), each a chunk of the largest size in use (two attempts per
        Dask thread until a short entrypoint is measured, as before chunks)."""
        return 2 * self.size * self.durations.largest()

    def max_depth(self) -> int:
        """The most :meth:`depth` can become."""
        return 2 * self.size * MAX_CHUNK

    async def run(self, spec: EntrypointSpec, job: Job, *, timeout: float | None) -> Any:
        """Run one attempt on the cluster, alone or in a chunk (see the module's docs)."""
        if id(spec.handler) not in self._checked:  # (one taken on after the start: say why)
            check_sendable(spec.name, spec.handler)
            self._checked[id(spec.handler)] = spec.handler
        key = f"pgq_nb-{job.id}-{job.attempts}-{uuid.uuid4().hex[:8]}"
        attempt = _Attempt(spec, job_fields(job), key)
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
        """The attempt ended in the queue: its task is cancelled once no attempt of it is
        wanted (the others of a chunk run on; this one's outcome is thrown away)."""
        attempt.dropped = True
        task = attempt.task
        if task is not None and all(a.dropped for a in task.attempts):
            self.client.cancel(task.future)

    def _submit(self) -> None:
        """Submit the attempts of this loop turn: one ``client.map`` (one message to the
        scheduler) per handler and kind of task; those of an entrypoint without a timeout in
        chunks sized by its recent attempts' durations (:mod:`pgq_nb.dask_chunks`)."""
        batch, self._to_submit = self._to_submit, []
        groups: dict[tuple[int, str, bool], list[_Attempt]] = {}
        for a in batch:
            if not a.dropped:
                groups.setdefault((id(a.handler), a.name, a.timed), []).append(a)
        for (_, _, timed), attempts in groups.items():
            if timed:
                self._map(run_job, [_Task([a], False) for a in attempts])
            else:
                size = self.durations.chunk_size(attempts[0].name)
                self._map(run_chunk, [_Task(c, True) for c in split(attempts, size)])

    def _map(self, function: Any, tasks: list[_Task]) -> None:
        loop = asyncio.get_running_loop()
        if function is run_job:
            args: list[Any] = [[t.attempts[0].fields for t in tasks], [None] * len(tasks)]
        else:
            args = [[[a.fields for a in t.attempts] for t in tasks]]
        keys = [_key(t) for t in tasks]
        try:
            futures = self.client.map(
                function, [t.attempts[0].handler for t in tasks], *args, key=keys, pure=False
            )
        except Exception as exc:  # (the client closed meanwhile)
            for task in tasks:
                _settle_all(task, exc, self.address)
            return
        self.tasks += len(tasks)
        for task, future in zip(tasks, futures, strict=True):
            task.future = future
            for attempt in task.attempts:
                attempt.task = task
            # Dask runs every done-callback in one thread of its own: it only wakes the loop,
            # which fetches the results that finished about together at once
            future.add_done_callback(lambda _, t=task: loop.call_soon_threadsafe(self._finish, t))

    def _finish(self, task: _Task) -> None:
        if all(a.outcome.done() or a.dropped for a in task.attempts):  # none wanted any more
            return
        self._finished.append(task)
        if self._fetching < FETCHERS:
            self._fetching += 1
            self._fetch_task = asyncio.ensure_future(self._fetch())

    async def _fetch(self) -> None:
        """Fetch the results of the tasks that finished, a batch (one ``client.gather``) at a
        time, in threads of our own (a fetch is a round trip to the cluster)."""
        loop = asyncio.get_running_loop()
        try:
            while self._finished:
                batch, self._finished = self._finished, []
                futures = [t.future for t in batch]
                outcomes = await loop.run_in_executor(self._fetchers, _gather, self.client, futures)
                for task, (ok, value) in zip(batch, outcomes, strict=True):
                    if not ok:
                        _settle_all(task, value, self.address)
                    elif not task.chunked:
                        _settle(task.attempts[0], True, value, self.address)
                    else:
                        self._settle_chunk(task, value)
        finally:
            self._fetching -= 1

    def _settle_chunk(self, task: _Task, outcomes: list[Any]) -> None:
        for attempt, (ok, value, trace, seconds) in zip(task.attempts, outcomes, strict=True):
            self.durations.add(attempt.name, seconds)
            _settle(attempt, ok, value if ok else with_trace(value, trace), self.address)

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


def _key(task: _Task) -> str:
    """The task's key: its attempt's, or for a chunk its first attempt's and how many more."""
    first = task.attempts[0].key
    more = len(task.attempts) - 1
    return first.replace("pgq_nb-", f"pgq_nb-chunk{more + 1}-", 1) if more else first


def _settle_all(task: _Task, exc: BaseException, address: str) -> None:
    """Every attempt of ``task`` ends with its error (a chunk shares its task's fate)."""
    for attempt in task.attempts:
        _settle(attempt, False, exc, address)


def _settle(attempt: _Attempt, ok: bool, value: Any, address: str) -> None:
    if attempt.outcome.done() or attempt.dropped:
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
