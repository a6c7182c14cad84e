"""The async core: handler registry, enqueue, look-ups. ``q.aio`` is an AsyncQueue."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import inspect
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

import asyncpg

from pgq_nb import runtime, schema_install, sql
from pgq_nb.config import Settings
from pgq_nb.dag import AsyncWorkflow
from pgq_nb.enqueue import Dedupe, enqueue_many, enqueue_one, parse_rate, rate_burst
from pgq_nb.errors import (
    InvalidInputError,
    JobNotFoundError,
    UnknownEntrypointError,
)
from pgq_nb.models import Job, check_int, check_text
from pgq_nb.operations import Operations
from pgq_nb.resources import Resources
from pgq_nb.retry import RetryPolicy
from pgq_nb.schedule_api import ScheduleMethods
from pgq_nb.schedules import ScheduleSpec
from pgq_nb.transaction import AsyncTransaction
from pgq_nb.views import Views
from pgq_nb.workflow_run import AsyncWorkflowRun

if TYPE_CHECKING:
    from pgq_nb.worker import WorkerStats

Handler = Callable[[Job], Any]
H = TypeVar("H", bound=Handler)
F = TypeVar("F", bound=Callable[[], Any])

#: Bulk enqueues at least this large refresh the planner's statistics afterwards.
ANALYZE_AFTER_ROWS = 5_000


@dataclasses.dataclass(frozen=True, kw_only=True)
class EntrypointSpec:
    """A registered handler and how to run it."""

    name: str
    handler: Handler
    is_async: bool
    concurrency: int | None
    retry: RetryPolicy
    timeout: float | None
    transactional: bool = False
    max_running: int | None = None
    rate_per_s: float | None = None

    @property
    def limited(self) -> bool:
        """Has a limit that holds across workers (claims go through claim_limited)."""
        return self.max_running is not None or self.rate_per_s is not None


class AsyncQueue(Operations, Views, ScheduleMethods):
    """The async API of a queue. Every coroutine runs on the pgq_nb loop whatever loop awaits
    it, except with your own connection (``connection=``): then on that connection's loop."""

    def __init__(
        self, pool: asyncpg.Pool, dsn: str, settings: Settings, retry: RetryPolicy | None = None
    ) -> None:
        self.pool = pool
        self.retry = retry or RetryPolicy()
        self.dsn = dsn
        self.settings = settings
        self.schema = settings.schema
        self.queries = sql.queries(settings.schema)
        self.channel = sql.channel_name(settings.schema)
        self.handlers: dict[str, EntrypointSpec] = {}
        self.schedule_specs: dict[str, ScheduleSpec] = {}
        self._unsynced_schedules: set[str] = set()
        self.resources = Resources()
        self._known_remote: set[str] = set()
        self._unsynced: set[str] = set()

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
        """
        if not isinstance(name, str) or not name.strip():
            raise InvalidInputError("an entrypoint name must be a non-empty string")
        check_text("entrypoint name", name)
        if concurrency is not None and (check_int("concurrency", concurrency) < 1):
            raise InvalidInputError("concurrency must be at least 1 (or None for no cap)")
        if max_running is not None and check_int("max_running", max_running) < 1:
            raise InvalidInputError("max_running must be at least 1 (or None for no limit)")
        per_s = parse_rate(rate_limit)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidInputError("retry must be a pgq_nb.RetryPolicy")
        seconds = timeout.total_seconds() if isinstance(timeout, dt.timedelta) else timeout
        if seconds is not None and (not isinstance(seconds, int | float) or seconds <= 0):
            raise InvalidInputError("timeout must be a positive number of seconds or None")

        def register(handler: H) -> H:
            if not callable(handler):
                raise InvalidInputError(f"@entrypoint({name!r}) must decorate a function")
            is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
                getattr(handler, "__call__", None)  # noqa: B004 - async callable objects
            )
            self.handlers[name] = EntrypointSpec(
                name=name,
                handler=handler,
                is_async=is_async,
                concurrency=concurrency,
                retry=retry or self.retry,
                timeout=None if seconds is None else float(seconds),
                transactional=bool(transactional),
                max_running=max_running,
                rate_per_s=per_s,
            )
            self._unsynced.add(name)
            return handler

        return register

    async def _sync_entrypoints(self, conn: Any) -> None:
        """Record the entrypoint names this queue has handlers for (enqueue checks names
        against them), without touching what workers recorded about them."""
        if self._unsynced:
            names = sorted(self._unsynced)
            await conn.execute(self.queries["declare_entrypoints"], names)
            self._unsynced.difference_update(names)

    async def _register_entrypoints(self, conn: Any, names: list[str]) -> None:
        """A starting worker records its entrypoints' retry limits and global flow limits,
        which then hold for every worker."""
        await self._sync_entrypoints(conn)
        limits = [self.handlers[n].retry.max_attempts for n in names]
        await conn.execute(self.queries["upsert_entrypoints"], names, limits)
        for name in names:
            spec = self.handlers[name]
            burst = rate_burst(spec.rate_per_s) if spec.rate_per_s else 1.0
            await conn.execute(
                self.queries["set_limits"], name, spec.max_running, spec.rate_per_s, burst
            )

    async def _check_entrypoints(self, names: set[str], conn: Any) -> None:
        unknown = names - self.handlers.keys() - self._known_remote
        if not unknown:
            return
        rows = await conn.fetch(self.queries["known_entrypoints"])
        self._known_remote = {r["name"] for r in rows}
        unknown -= self._known_remote
        if unknown:
            name = sorted(unknown)[0]
            raise UnknownEntrypointError(
                f"no handler is registered for entrypoint {name!r}; register it with "
                f"@q.entrypoint({name!r}) in this process, or start a worker that registers it, "
                f"before enqueueing (known: {sorted(self.handlers.keys() | self._known_remote)})"
            )

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
        """
        call = self._enqueue(
            entrypoint, payload, priority, execute_after, dedupe_key, dedupe, connection
        )
        return await runtime.run_for(connection, call)

    @contextlib.asynccontextmanager
    async def _connection(self, connection: Any) -> AsyncIterator[Any]:
        if connection is not None:
            yield connection
        else:
            async with self.pool.acquire() as conn:
                yield conn

    async def _enqueue(
        self,
        entrypoint: str | list[str],
        payload: Any,
        priority: Any,
        execute_after: dt.datetime | dt.timedelta | None,
        dedupe_key: Any,
        dedupe: Dedupe,
        connection: Any,
    ) -> Any:
        async with self._connection(connection) as conn:
            if isinstance(entrypoint, list | tuple):
                result: Any = await enqueue_many(
                    self,
                    conn,
                    list(entrypoint),
                    payload,
                    priority,
                    execute_after,
                    dedupe_key,
                    dedupe,
                )
            else:
                result = await enqueue_one(
                    self,
                    conn,
                    entrypoint,
                    payload,
                    priority,
                    execute_after,
                    dedupe_key,
                    dedupe,
                )
        if isinstance(result, list) and len(result) >= ANALYZE_AFTER_ROWS and connection is None:
            await self.analyze()
        return result

    @runtime.bridged
    async def analyze(self) -> None:
        """Refresh planner statistics of the jobs table (done after large bulk enqueues)."""
        async with self.pool.acquire() as conn:
            await conn.execute(self.queries["analyze_jobs"])

    # -- transactions and resources ---------------------------------------------------------

    def transaction(self) -> AsyncTransaction:
        """``async with q.aio.transaction() as tx:`` — your SQL and your jobs commit together."""
        return AsyncTransaction(self)

    def resource(self, name: str) -> Callable[[F], F]:
        """Register a factory for ``job.resources[name]``, run once per worker process; see
        :mod:`pgq_nb.resources`."""
        return self.resources.factory(name)

    # -- workflows ----------------------------------------------------------------------------

    def workflow(self, name: str) -> AsyncWorkflow:
        """Start building a workflow (a DAG of jobs); see :mod:`pgq_nb.dag`."""
        return AsyncWorkflow(self, name)

    @runtime.bridged
    async def workflow_run(self, workflow_id: int) -> AsyncWorkflowRun:
        """A submitted run by id (for example after a kernel restart)."""
        row = await self.pool.fetchrow(
            self.queries["get_workflow"], check_int("workflow_id", workflow_id, bits=64)
        )
        if row is None:
            raise JobNotFoundError(f"no workflow run with id {workflow_id}")
        return AsyncWorkflowRun(self, row["id"], row["name"])

    # -- workers ----------------------------------------------------------------------------

    @runtime.bridged
    async def run_until_idle(
        self,
        *,
        concurrency: int = 32,
        entrypoints: list[str] | None = None,
        wait_for_scheduled: float = 60.0,
        timeout: float | None = None,
    ) -> WorkerStats:
        """Process jobs here until none is due now or within ``wait_for_scheduled`` seconds
        and none is running; return what was done.

        ``timeout`` stops it earlier (running jobs still get to finish). An interrupt (the
        notebook's Stop button) stops it too: unfinished jobs go back to the queue.
        """
        from pgq_nb.worker import Worker  # the worker module builds on this one

        worker = Worker(
            self,
            concurrency=concurrency,
            entrypoints=entrypoints,
            stop_when_idle=True,
            wait_for_scheduled=wait_for_scheduled,
        )
        if timeout is not None:
            asyncio.get_running_loop().call_later(timeout, worker.request_stop)
        return await worker.run()

    @runtime.bridged
    async def run_worker(
        self,
        *,
        concurrency: int = 32,
        entrypoints: list[str] | None = None,
        grace_period: float = 30.0,
    ) -> WorkerStats:
        """Work until cancelled or interrupted (what ``pgq-nb worker`` runs)."""
        from pgq_nb.worker import Worker

        worker = Worker(
            self, concurrency=concurrency, entrypoints=entrypoints, grace_period=grace_period
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
