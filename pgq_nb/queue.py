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

from pgq_nb import db, runtime, sql
from pgq_nb.config import Settings
from pgq_nb.dag import AsyncWorkflow
from pgq_nb.errors import (
    DuplicateJobError,
    InvalidInputError,
    JobNotFoundError,
    UnknownEntrypointError,
)
from pgq_nb.models import Job, check_int, encode_payload
from pgq_nb.operations import Operations
from pgq_nb.resources import Resources
from pgq_nb.retry import RetryPolicy
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


def _check_time(value: object) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.timedelta):
        return dt.datetime.now(dt.UTC) + value
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise InvalidInputError(
                "execute_after is a naive datetime; give it a time zone "
                "(datetime.now(timezone.utc) + ...) or pass a timedelta"
            )
        return value
    raise InvalidInputError(
        f"execute_after must be a timezone-aware datetime or a timedelta, not "
        f"{type(value).__name__}"
    )


class AsyncQueue(Operations, Views):
    """The async API of a queue. Every method runs on the pgq_nb loop whatever loop awaits it."""

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
    ) -> Callable[[H], H]:
        """Register a handler for jobs of ``name``: ``async def`` or plain ``def`` (run in a
        thread), taking a :class:`Job`. Its return value is stored as the job's result.

        ``transactional``: the handler gets ``job.tx``, a transaction that also records the
        job's completion, so "write the output and mark the job done" is atomic; if the
        handler raises, its writes are rolled back and the job fails (and is retried)
        like any other.

        ``concurrency`` caps how many jobs of this entrypoint one worker process runs at once.
        ``retry`` is its RetryPolicy (default: the queue's). ``timeout`` (seconds) fails an
        attempt that runs longer: an async handler is cancelled; a plain ``def`` handler's
        thread cannot be stopped, so it runs on and its result is discarded.
        """
        if not isinstance(name, str) or not name.strip():
            raise InvalidInputError("an entrypoint name must be a non-empty string")
        if concurrency is not None and (check_int("concurrency", concurrency) < 1):
            raise InvalidInputError("concurrency must be at least 1 (or None for no cap)")
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
            )
            self._unsynced.add(name)
            return handler

        return register

    async def _sync_entrypoints(self, conn: Any) -> None:
        if self._unsynced:
            names = sorted(self._unsynced)
            limits = [self.handlers[n].retry.max_attempts for n in names]
            await conn.execute(self.queries["upsert_entrypoints"], names, limits)
            self._unsynced.difference_update(names)

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
        connection: Any = None,
    ) -> list[int]: ...

    async def enqueue(
        self,
        entrypoint: str | list[str],
        payload: Any = None,
        priority: Any = 0,
        *,
        execute_after: dt.datetime | dt.timedelta | None = None,
        dedupe_key: str | None = None,
        connection: Any = None,
    ) -> int | list[int]:
        """Add a job and return its id.

        The PgQueuer shape ``enqueue([entrypoints], [payloads], [priorities])`` adds many in one
        round trip and returns their ids in order. ``payload`` is bytes (stored as is) or a
        JSON-serialisable value. ``execute_after`` delays the job (aware datetime or timedelta).
        A ``dedupe_key`` equal to a queued or running job's raises DuplicateJobError.

        ``connection``: an asyncpg connection of yours, inside a transaction; the job commits
        or rolls back with it (it runs on that connection's own event loop).
        """
        call = self._enqueue(entrypoint, payload, priority, execute_after, dedupe_key, connection)
        if connection is not None:
            return await call
        return await runtime.run_here(call)

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
        dedupe_key: str | None,
        connection: Any,
    ) -> int | list[int]:
        if isinstance(entrypoint, list | tuple):
            if dedupe_key is not None:
                raise InvalidInputError(
                    "dedupe_key applies to a single job; enqueue such jobs one at a time"
                )
            return await self._enqueue_many(
                list(entrypoint), payload, priority, execute_after, connection
            )
        if not isinstance(entrypoint, str):
            raise InvalidInputError(
                f"entrypoint must be a str or a list of str, not {type(entrypoint).__name__}"
            )
        data = encode_payload(payload)
        prio = check_int("priority", priority)
        when = _check_time(execute_after)
        if dedupe_key is not None and not isinstance(dedupe_key, str):
            raise InvalidInputError("dedupe_key must be a str or None")
        async with self._connection(connection) as conn:
            await self._sync_entrypoints(conn)
            await self._check_entrypoints({entrypoint}, conn)
            job_id = await conn.fetchval(
                self.queries["enqueue_one"], entrypoint, data, prio, when, dedupe_key
            )
            if job_id is None:
                existing = await conn.fetchval(self.queries["find_dedupe"], dedupe_key)
                raise DuplicateJobError(
                    f"a job with dedupe_key {dedupe_key!r} is already queued or running "
                    f"(job {existing}); wait for it to finish or use another key",
                    dedupe_key=str(dedupe_key),
                    existing_id=existing,
                )
        return int(job_id)

    async def _enqueue_many(
        self,
        entrypoints: list[str],
        payloads: Sequence[Any] | None,
        priorities: Sequence[int] | int,
        execute_after: dt.datetime | dt.timedelta | None,
        connection: Any,
    ) -> list[int]:
        n = len(entrypoints)
        if payloads is None:
            payloads = [None] * n
        if isinstance(priorities, int) and not isinstance(priorities, bool):
            priorities = [priorities] * n
        if isinstance(payloads, bytes | str | dict) or not isinstance(payloads, Sequence):
            raise InvalidInputError("with a list of entrypoints, payload must be a list too")
        if not isinstance(priorities, Sequence):
            raise InvalidInputError("with a list of entrypoints, priority must be a list or int")
        if not len(payloads) == len(priorities) == n:
            raise InvalidInputError(
                f"entrypoints, payloads and priorities must have the same length; got "
                f"{n}, {len(payloads)} and {len(priorities)}"
            )
        for i, ep in enumerate(entrypoints):
            if not isinstance(ep, str):
                raise InvalidInputError(f"entrypoints[{i}] is {type(ep).__name__}, not str")
        encoded = []
        for i, p in enumerate(payloads):
            try:
                encoded.append(encode_payload(p))
            except InvalidInputError as exc:
                raise type(exc)(f"payloads[{i}]: {exc}") from None
        prios = [check_int(f"priorities[{i}]", p) for i, p in enumerate(priorities)]
        when = _check_time(execute_after)
        if n == 0:
            return []
        async with self._connection(connection) as conn:
            await self._sync_entrypoints(conn)
            await self._check_entrypoints(set(entrypoints), conn)
            rows = await conn.fetch(
                self.queries["enqueue_many"], entrypoints, encoded, prios, [when] * n
            )
        if n >= ANALYZE_AFTER_ROWS and connection is None:
            await self.analyze()
        return sorted(r["id"] for r in rows)

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
        return await db.install(self.pool, self.schema)

    @runtime.bridged
    async def upgrade(self) -> int:
        """Apply pending migrations; returns the schema version."""
        return await db.install(self.pool, self.schema, upgrade=True)

    @runtime.bridged
    async def uninstall(self) -> None:
        """Drop the schema with every job, result and worker record in it."""
        await db.uninstall(self.pool, self.schema)
