"""A worker's upkeep: registration, LISTEN/NOTIFY, cancel requests, heartbeats, reclaiming.

A base class of :class:`pgq_nb.worker.Worker`, kept apart from the claim/run/complete loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncpg

from pgq_nb import db
from pgq_nb import worker_decisions as decisions
from pgq_nb.errors import DatabaseUnavailableError, PgqError
from pgq_nb.executors import executor_label
from pgq_nb.schedule import database, runner
from pgq_nb.workflow_state import settle_steps

if TYPE_CHECKING:
    from pgq_nb.executors import JobExecutor
    from pgq_nb.models import Job
    from pgq_nb.registry import EntrypointSpec, Registry
    from pgq_nb.schedule.database import ScheduleSpec
    from pgq_nb.store import Store

logger = logging.getLogger("pgq_nb.worker")

#: Seconds a starting worker keeps retrying transient failures (no free connection slot, a
#: server restarting) before it gives up with an error.
REGISTER_PATIENCE_S = 60.0


class Upkeep:
    """Everything a worker does besides running jobs."""

    store: Store
    registry: Registry
    specs: dict[str, EntrypointSpec]
    concurrency: int
    worker_id: int | None
    _q: dict[str, str]
    _listener: asyncpg.Connection | None
    _wake: asyncio.Event
    _running: dict[int, tuple[Job, asyncio.Future[Any]]]
    _cancelling: set[int]
    _paused: set[str]
    _schedules: list[ScheduleSpec]
    _executor: Any
    _pool: JobExecutor | None
    processes: int | None
    _sweep_orphans: Callable[[Any], Awaitable[None]]
    _wake_in: Callable[[float | None], None]
    _beating_since: float | None  # loop time since when its heartbeats have gone through
    _rereading: asyncio.Task[None] | None = None
    _reread_again = False

    async def _insert_worker_row(self, conn: Any) -> int:
        """A new row in ``workers`` for this process; its id tags the jobs it claims."""
        worker_id: int = await conn.fetchval(
            self._q["register_worker"],
            socket.gethostname(),
            os.getpid(),
            list(self.specs),
            self.concurrency,
            executor_label(self.processes, self._pool),
            self._pool.size if self._pool is not None else None,
        )
        return worker_id

    async def _register(self) -> None:
        await self.store.resources.open()
        delay = 0.25
        deadline = asyncio.get_running_loop().time() + REGISTER_PATIENCE_S
        while True:
            try:
                async with self.store.pool.acquire() as conn:
                    await self._register_on(conn)
                break
            except db.TRANSIENT_ERRORS as exc:
                if asyncio.get_running_loop().time() + delay > deadline:
                    raise DatabaseUnavailableError(
                        f"the worker could not register within {REGISTER_PATIENCE_S:g} s: "
                        f"{type(exc).__name__}: {exc}. If the server has no free connection "
                        "slot, raise its max_connections (PGQ_NB_MAX_CONNECTIONS for the "
                        "embedded server), run fewer or smaller workers, or close idle clients"
                    ) from exc
                logger.warning(
                    "worker registration failed; retrying",
                    extra={"error": f"{type(exc).__name__}: {exc}", "retry_in_s": delay},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        if any(not s.is_async for s in self.specs.values()):
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.concurrency, thread_name_prefix="pgq_nb-job"
            )
        await self._listen()
        if self._listener is not None:
            # Registering read the pauses and cancel requests before LISTEN began: one sent in
            # between went unheard, and would hold only from the next heartbeat. Read again.
            await self._reread()
        # a worker that just registered has just been heard from
        self._beating_since = (
            asyncio.get_running_loop().time() - self.store.settings.heartbeat_timeout
        )
        logger.info("worker started", extra={"worker_id": self.worker_id})

    async def _register_on(self, conn: Any) -> None:
        await self.registry.register(conn, list(self.specs))
        if self._schedules:
            await database.register(conn, self._q, self._schedules)
        self._paused = {r["name"] for r in await conn.fetch(self._q["paused_entrypoints"])}
        self.worker_id = await self._insert_worker_row(conn)

    async def _listen(self, retry_for: float | None = None) -> None:
        try:
            self._listener = await db.connect_one(self.store.dsn, retry_for=retry_for)
            await self._listener.execute(db.SESSION_SETUP)
            await self._listener.add_listener(self.store.channel, self._on_notify)
            self._listener.add_termination_listener(self._listener_lost)
        except (PgqError, OSError, asyncpg.PostgresError) as exc:
            logger.warning("LISTEN failed; polling only", extra={"error": str(exc)})
            self._listener = None
        # the scheduler sleeps long only while it would hear of schedule changes (and looks
        # again now: one may have been missed while nobody listened)
        runner.set_listening(self.store, self._listener is not None)

    def _listener_lost(self, connection: Any) -> None:
        runner.set_listening(self.store, False)

    def _on_notify(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        """A NOTIFY is a hint, never an order: anyone who may connect can send one on the
        channel. Cancel and pause requests are read back from the tables, which only roles
        with rights on the schema can write. A pause holds claims of that entrypoint at once
        (the safe side: jobs enqueued right after ``q.pause()`` must not slip through), and
        the read-back lifts it again within a round trip if the tables say otherwise."""
        kind, _, rest = payload.partition(":")
        if kind == "due":  # a job retried somewhere, due in `rest` seconds
            self._wake_in(decisions.parse_due(rest))
            return
        if kind == "schedules":  # a schedule added, changed, removed or resumed somewhere
            runner.poke(self.store)
            return
        if kind == "pause":
            self._paused.add(rest)
        if kind in ("cancel", "pause", "resume"):
            self._reread_requests()
        else:
            self._wake.set()

    def _reread_requests(self) -> None:
        if self._rereading is not None and not self._rereading.done():
            self._reread_again = True
            return
        self._rereading = asyncio.ensure_future(self._reread())

    async def _reread(self) -> None:
        """Read this worker's cancel requests and the paused entrypoints now."""
        while True:
            self._reread_again = False
            try:
                async with self.store.pool.acquire() as conn:
                    wanted = await conn.fetch(self._q["cancel_requested"], self.worker_id)
                    paused = await conn.fetch(self._q["paused_entrypoints"])
            except db.TRANSIENT_ERRORS:
                return  # the next heartbeat reads them
            self._cancel([r["id"] for r in wanted])
            self._paused = {r["name"] for r in paused}
            self._wake.set()
            if not self._reread_again:
                return

    def _cancel(self, ids: list[int]) -> None:
        """Cancel the given jobs if this worker runs them (async handlers are interrupted)."""
        for job_id in ids:
            running = self._running.get(job_id)
            if running is not None and job_id not in self._cancelling:
                self._cancelling.add(job_id)
                running[1].cancel()

    async def _heartbeat_loop(self) -> None:
        settings = self.store.settings
        while True:
            await asyncio.sleep(settings.heartbeat_interval)
            try:
                if self._listener is None or self._listener.is_closed():
                    await self._listen(retry_for=0.0)  # one try: the beat must not wait
                if self._listener is not None:
                    # the worker's own connection: liveness never waits for a pooled one,
                    # which handlers (transactional ones hold theirs while they run) may all use
                    await self._beat(self._listener)
                else:  # no connection of its own to be had (a full server): the pool's
                    async with self.store.pool.acquire() as conn:
                        await self._beat(conn)
            except db.TRANSIENT_ERRORS as exc:
                self._beating_since = None
                logger.warning("heartbeat failed", extra={"error": str(exc)})

    async def _beat(self, conn: asyncpg.Connection) -> None:
        """One heartbeat: say this worker lives, reclaim dead workers' jobs, poll cancel requests,
        free stale slots, re-read pauses."""
        settings = self.store.settings
        alive = await conn.fetchval(self._q["heartbeat_worker"], self.worker_id)
        if alive is None:
            logger.warning(
                "this worker was presumed dead and its jobs requeued; re-registering",
                extra={"worker_id": self.worker_id},
            )
            self.worker_id = await self._insert_worker_row(conn)
        now = asyncio.get_running_loop().time()
        if self._beating_since is None:
            self._beating_since = now
        if now - self._beating_since < settings.heartbeat_timeout:
            # this worker could not send heartbeats a moment ago: the others may not have
            # been able to either, so it does not judge them until it has been heard from
            # for a whole timeout itself
            reclaimed = []
        else:
            async with conn.transaction():
                reclaimed = await conn.fetch(self._q["reclaim_stale"], settings.heartbeat_timeout)
                lost = [r for r in reclaimed if not r["requeued"]]
                await settle_steps(conn, self._q, lost, [])
        if reclaimed:
            await conn.execute(self._q["notify_jobs"])
            logger.warning(
                "reclaimed jobs of dead workers",
                extra={
                    "requeued": [r["id"] for r in reclaimed if r["requeued"]],
                    "failed": [r["id"] for r in reclaimed if not r["requeued"]],
                },
            )
        await self._sweep_orphans(conn)
        wanted = await conn.fetch(self._q["cancel_requested"], self.worker_id)
        if wanted:
            self._cancel([r["id"] for r in wanted])
        await conn.execute(self._q["sweep_slots"])
        paused = await conn.fetch(self._q["paused_entrypoints"])
        self._paused = {r["name"] for r in paused}
