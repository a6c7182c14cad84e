"""The async façade: ``q.aio`` is an AsyncQueue, over a :class:`~pgq_nb.store.Store` (where the
SQL runs) and a :class:`~pgq_nb.registry.Registry` (the entrypoints of this process)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, overload

import asyncpg

from pgq_nb import enqueue_submit, runtime, schema_install
from pgq_nb import worker_notices as notices
from pgq_nb.config import Settings
from pgq_nb.enqueue import ANALYZE_AFTER_ROWS as ANALYZE_AFTER_ROWS
from pgq_nb.enqueue import Dedupe
from pgq_nb.errors import JobNotFoundError, UnknownEntrypointError
from pgq_nb.hooks import F as HookF
from pgq_nb.models import check_int
from pgq_nb.nbjobs.api import NotebookMethods
from pgq_nb.operations import Operations
from pgq_nb.query_errors import guard_public_calls
from pgq_nb.registry import EntrypointSpec as EntrypointSpec
from pgq_nb.registry import H, Handler, Registry
from pgq_nb.retention_api import RetentionMethods
from pgq_nb.retry import RetryPolicy
from pgq_nb.schedule.api import ScheduleMethods
from pgq_nb.schedule.api_data import DataScheduleMethods
from pgq_nb.snooze import DEFAULT_MAX_SNOOZES
from pgq_nb.store import Store
from pgq_nb.transaction import AsyncTransaction
from pgq_nb.views import Views
from pgq_nb.worker import Worker, WorkerStats
from pgq_nb.workflow_build import AsyncWorkflow
from pgq_nb.workflow_run import AsyncWorkflowRun

__all__ = ["ANALYZE_AFTER_ROWS", "AsyncQueue", "EntrypointSpec", "Handler"]

F = TypeVar("F", bound=Callable[[], Any])


@guard_public_calls
class AsyncQueue(
    Operations, Views, ScheduleMethods, DataScheduleMethods, NotebookMethods, RetentionMethods
):
    """The async API of a queue. Every coroutine runs on the pgq_nb loop whatever loop awaits
    it, except with your own connection (``connection=``): then on that connection's loop.
    A server gone since connect() raises DatabaseUnavailableError (the embedded one is started
    again, and the call run once more when that is safe): see :mod:`pgq_nb.query_errors`."""

    def __init__(
        self, pool: asyncpg.Pool, dsn: str, settings: Settings, retry: RetryPolicy | None = None
    ) -> None:
        self.store = Store.build(pool, dsn, settings)
        self.registry = Registry(self.store.queries, retry)
        # the same objects under the names the mixins and callers use (never rebound)
        self.pool = pool
        self.dsn = dsn
        self.settings = settings
        self.schema = settings.schema
        self.queries = self.store.queries
        self.channel = self.store.channel
        self.resources = self.store.resources
        self.retry = self.registry.retry
        self.handlers = self.registry.handlers
        self.schedule_specs = self.registry.schedule_specs
        self._unsynced_schedules = self.registry.unsynced_schedules
        self.background_failures: list[notices.Failures] = []

    # -- registry ---------------------------------------------------------------------------

    def entrypoint(
        self,
        name: str,
        *,
        concurrency: int | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | dt.timedelta | None = None,
        transactional: bool = False,
        max_running: int | None = None,
        rate_limit: str | float | None = None,
        executor: str | None = None,
        memory_limit: str | int | None = None,
        concurrency_key: str | Callable[[Any], Any] | None = None,
        max_per_key: int | None = None,
        max_snoozes: int = DEFAULT_MAX_SNOOZES,
        cache: bool = False,
        cache_ttl: float | dt.timedelta | str | None = None,
        version: str | None = None,
    ) -> Callable[[H], H]:
        """Register a handler for jobs of ``name``: ``async def`` or plain ``def`` (run in a
        thread), taking a :class:`Job`. Its return value is stored as the job's result.

        ``transactional``: the handler gets ``job.tx``, a transaction that also records the
        job's completion, so "write the output and mark the job done" is atomic; if the
        handler raises, its writes are rolled back and the job fails (and is retried)
        like any other.

        ``max_running`` caps the jobs of this entrypoint running at once across every worker
        process (slot rows in the database; a dead worker's slot is freed when its heartbeat
        goes stale). ``rate_limit`` (``"100/s"``, ``"30/min"``, ``"500/h"``) caps how many
        start per unit of time across every worker: any one-second window sees at most the
        rate plus a tenth of it (at least one job) more.

        ``concurrency`` caps how many jobs of this entrypoint one worker process runs at once.
        ``retry`` is its RetryPolicy (default: the queue's). ``timeout`` (seconds) fails an
        attempt that runs longer, counted from the handler's start: an async handler is
        cancelled; a plain ``def`` handler's thread cannot be stopped, so the attempt ends
        (failed) when it returns, and the job is not run again until then.

        ``executor="process"`` runs each attempt in a process of the worker's pool (see
        ``processes=`` of :meth:`run_until_idle`; a worker of threads keeps one per core for
        such entrypoints): ``timeout`` and a cancel then end the process (it is replaced), and
        ``memory_limit`` (``"2GB"``, or bytes) fails an attempt that needs more with
        MemoryLimitExceeded, the worker and other jobs unharmed. The handler must pickle
        (cell-defined functions, closures and lambdas do; it is checked here), gets no
        ``job.resources`` and cannot be transactional. ``executor="thread"`` keeps it in the
        worker even when the worker runs processes. See :mod:`pgq_nb.process_pool`.

        ``concurrency_key`` (a payload field's name, or a function of the payload returning a
        str or int, or None for no key) with ``max_per_key`` (default 1): at most that many
        jobs of one key run at once across every worker on every machine, while jobs of other
        keys run freely. The key is computed at enqueue; a payload without the field is
        refused. A function key can only be computed in a process where this handler is
        registered: enqueuing from elsewhere (another notebook, ``pgq-nb``) needs a field key.
        See :mod:`pgq_nb.keys`; ``q.limits(keys=True)`` shows the busiest keys.

        ``max_snoozes`` (default 100) caps how often one job may ``raise pgq_nb.Snooze(...)``
        ("not yet, ask again later", no attempt used); the snooze beyond it fails the job for
        good. See :mod:`pgq_nb.snooze`.

        ``cache=True``: a job whose payload, entrypoint and handler version (``version=``, else
        a hash of the handler's source) match a job that succeeded (within ``cache_ttl``:
        seconds, a timedelta, ``"7d"``; None: for ever) is not run: it succeeds with that
        job's result, recorded as ``cached_from`` it. ``cache=False`` on an enqueue forces a
        run. See :mod:`pgq_nb.caching`.
        """
        return self.registry.entrypoint(
            name,
            concurrency=concurrency,
            retry=retry,
            timeout=timeout,
            transactional=transactional,
            max_running=max_running,
            rate_limit=rate_limit,
            executor=executor,
            memory_limit=memory_limit,
            concurrency_key=concurrency_key,
            max_per_key=max_per_key,
            max_snoozes=max_snoozes,
            cache=cache,
            cache_ttl=cache_ttl,
            version=version,
        )

    def on(self, event: str) -> Callable[[HookF], HookF]:
        """Register a callback for ``event`` of every job this queue's workers run:
        ``"started"``, ``"succeeded"``, ``"failed"`` (every failed attempt), ``"retried"`` (a
        failed attempt that will be retried), ``"dead"`` (one that failed for good) or
        ``"snoozed"`` (the handler raised ``pgq_nb.Snooze``: back to the queue, no failure). A
        ``def`` or ``async def`` taking ``(job, outcome)`` (a :class:`pgq_nb.hooks.Outcome`:
        status, error, result, attempt, duration), run by the worker after the outcome is
        recorded (``started``: as the attempt starts). A hook that raises is logged and changes
        nothing; one that blocks holds up neither the worker nor the job. See
        :mod:`pgq_nb.hooks`."""
        return self.registry.hooks.on(event)

    # -- enqueue ----------------------------------------------------------------------------

    @overload
    async def enqueue(
        self,
        entrypoint: str,
        payload: Any = None,
        priority: int = 0,
        *,
        execute_after: dt.datetime | dt.timedelta | None = None,
        dedupe_key: str | None = None,
        dedupe: Dedupe = "active",
        connection: Any = None,
        tags: Sequence[str] | None = None,
        meta: dict[str, Any] | None = None,
        cache: bool | None = None,
    ) -> int: ...

    @overload
    async def enqueue(
        self,
        entrypoint: list[str],
        payload: Sequence[Any] | None = None,
        priority: Sequence[int] | int = 0,
        *,
        execute_after: dt.datetime | dt.timedelta | None = None,
        dedupe_key: None = None,
        dedupe: Dedupe = "active",
        connection: Any = None,
        tags: Sequence[str] | None = None,
        meta: dict[str, Any] | None = None,
        cache: bool | None = None,
    ) -> list[int]: ...

    @overload
    async def enqueue(
        self,
        entrypoint: list[str],
        payload: Sequence[Any] | None = None,
        priority: Sequence[int] | int = 0,
        *,
        execute_after: dt.datetime | dt.timedelta | None = None,
        dedupe_key: Sequence[str | None],
        dedupe: Dedupe = "active",
        connection: Any = None,
        tags: Sequence[str] | None = None,
        meta: dict[str, Any] | None = None,
        cache: bool | None = None,
    ) -> list[int | None]: ...

    async def enqueue(
        self,
        entrypoint: str | list[str],
        payload: Any = None,
        priority: Any = 0,
        *,
        execute_after: dt.datetime | dt.timedelta | None = None,
        dedupe_key: Any = None,
        dedupe: Dedupe = "active",
        connection: Any = None,
        tags: Sequence[str] | None = None,
        meta: dict[str, Any] | None = None,
        cache: bool | None = None,
    ) -> Any:
        """Add a job and return its id.

        The PgQueuer shape ``enqueue([entrypoints], [payloads], [priorities])`` adds many in one
        round trip and returns their ids in order. ``payload`` is bytes (stored as is) or a
        JSON-serialisable value. ``execute_after`` delays the job (aware datetime or timedelta).
        ``dedupe_key`` keeps a second job with the same key out while one is queued or running
        (``dedupe="active"``), only while queued (``"queued"``), or for a window after enqueue
        (a ``timedelta``): a single enqueue raises DuplicateJobError; a batch (a list of keys)
        skips those rows, returns None for them and warns (see :mod:`pgq_nb.enqueue`).

        ``connection``: an asyncpg connection of yours, inside a transaction; the job commits
        or rolls back with it (it runs on that connection's own event loop, see
        :func:`pgq_nb.runtime.run_for`).

        ``tags`` (a list of str) and ``meta`` (a JSON object) label the job (in a batch, every
        job): kept in history, seen by the handler as ``job.tags`` and ``job.meta``, filtered
        on by every view (``q.history(tag="exp-7")``); see :mod:`pgq_nb.labels`.

        ``cache=False`` runs the job(s) even when their entrypoint has ``cache=True`` and a
        cached result exists (the success is still recorded for later jobs to reuse).
        """
        call = enqueue_submit.submit(
            self.store,
            self.registry,
            entrypoint,
            payload,
            priority,
            execute_after,
            dedupe_key,
            dedupe,
            connection,
            self.analyze,
            tags,
            meta,
            cache,
        )
        return await runtime.run_for(connection, call)

    @runtime.bridged
    async def analyze(self) -> None:
        """Refresh planner statistics of the jobs table (done after large bulk enqueues)."""
        await enqueue_submit.analyze_jobs(self.store)

    # -- transactions and resources ---------------------------------------------------------

    def transaction(self) -> AsyncTransaction:
        """``async with q.aio.transaction() as tx:`` — your SQL and your jobs commit together."""
        return AsyncTransaction(self.store, self.registry)

    def resource(self, name: str) -> Callable[[F], F]:
        """Register a factory for ``job.resources[name]``, run once per worker process; see
        :mod:`pgq_nb.resources`."""
        return self.store.resources.factory(name)

    # -- workflows ----------------------------------------------------------------------------

    def workflow(self, name: str) -> AsyncWorkflow:
        """Start building a workflow (a DAG of jobs); see :mod:`pgq_nb.workflow_build`."""
        return AsyncWorkflow(self.store, self.registry, name)

    @runtime.bridged
    async def workflow_run(self, workflow_id: int) -> AsyncWorkflowRun:
        """A submitted run by id (for example after a kernel restart)."""
        row = await self.pool.fetchrow(
            self.queries["get_workflow"], check_int("workflow_id", workflow_id, bits=64)
        )
        if row is None:
            raise JobNotFoundError(f"no workflow run with id {workflow_id}")
        return AsyncWorkflowRun(self.store, row["id"], row["name"])

    # -- workers ----------------------------------------------------------------------------

    @runtime.bridged
    async def run_until_idle(
        self,
        *,
        concurrency: int | None = None,
        entrypoints: list[str] | None = None,
        wait_for_scheduled: float = 60.0,
        timeout: float | None = None,
        processes: int | bool | None = None,
        dask: Any = None,
    ) -> WorkerStats:
        """Process jobs here until none is due now or within ``wait_for_scheduled`` seconds
        and none is running; return what was done.

        ``timeout`` stops it earlier (running jobs still get to finish). An interrupt (the
        notebook's Stop button) stops it too: unfinished jobs go back to the queue.

        ``processes=N`` (``True``: one per core) runs plain ``def`` handlers in N processes of
        this machine instead of threads, so CPU-bound pandas code uses every core; handlers
        defined in cells work (see :mod:`pgq_nb.process_pool`). ``async def`` and
        transactional handlers, and entrypoints with ``executor="thread"``, still run here.
        ``concurrency`` (jobs claimed at once) defaults to 32, or to 2N with processes (one
        running and one ready per process; the timeout counts from the handler's start).
        ``dask=client`` (a ``distributed.Client``) runs them on that Dask cluster's workers
        instead (concurrency: 2 per Dask thread; see :mod:`pgq_nb.dask_executor`).

        When it stops it warns, in one line each (see :mod:`pgq_nb.worker_notices`), of jobs
        that failed for good here (``JobsFailed``), and of queued jobs due within
        ``wait_for_scheduled`` that it left because no handler here and no live worker serves
        their entrypoint (``JobsWithoutHandler``).
        """
        if entrypoints is None and not self.registry.handlers:  # nothing could run
            waiting = await notices.unserved(self.store, self.registry, wait_for_scheduled)
            raise UnknownEntrypointError(notices.no_handlers_message(waiting))
        worker = Worker(
            self,
            concurrency=concurrency,
            entrypoints=entrypoints,
            stop_when_idle=True,
            wait_for_scheduled=wait_for_scheduled,
            processes=processes,
            dask=dask,
        )
        if timeout is not None:
            asyncio.get_running_loop().call_later(timeout, worker.request_stop)
        stats = await worker.run()
        notices.tell_failed(worker.failures)
        await notices.tell_unserved(self.store, self.registry, wait_for_scheduled, serves_new=None)
        await notices.tell_paused(self.store, list(worker.specs), wait_for_scheduled)
        return stats

    @runtime.bridged
    async def run_worker(
        self,
        *,
        concurrency: int | None = None,
        entrypoints: list[str] | None = None,
        grace_period: float = 30.0,
        processes: int | bool | None = None,
        dask: Any = None,
    ) -> WorkerStats:
        """Work until cancelled or interrupted (what ``pgq-nb worker`` runs); ``processes``
        and ``dask`` as for :meth:`run_until_idle`."""
        worker = Worker(
            self,
            concurrency=concurrency,
            entrypoints=entrypoints,
            grace_period=grace_period,
            processes=processes,
            dask=dask,
        )
        return await worker.run()

    # -- schema -----------------------------------------------------------------------------

    @runtime.bridged
    async def install(self) -> int:
        """Install (or upgrade) the schema; idempotent. Returns the schema version."""
        return await schema_install.install(self.pool, self.schema)

    @runtime.bridged
    async def upgrade(self) -> int:
        """Apply pending migrations; returns the schema version."""
        return await schema_install.install(self.pool, self.schema, upgrade=True)

    @runtime.bridged
    async def uninstall(self) -> None:
        """Drop the schema with every job, result and worker record in it."""
        await schema_install.uninstall(self.pool, self.schema)
