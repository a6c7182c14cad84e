"""How a worker stops: the grace period, interrupting handlers, returning jobs, deregistering.

A base class of :class:`pgq_nb.worker.Worker`. Two ways to stop:

- graceful (``request_stop()``; SIGINT/SIGTERM once; ``w.stop()``): claiming stops, running
  handlers get the grace period to finish, then ``async def`` handlers are cancelled and their
  jobs returned to the queue (not counted as attempts);
- hard (``request_stop(hard=True)``; a second signal; the notebook's Stop button): no grace
  period, the same interruption at once.

A ``def`` handler runs in a thread, which cannot be stopped: its job stays picked by this
worker (heartbeat going) until the thread returns, and its real outcome is then recorded, so
it is never run elsewhere while the abandoned run goes on. In a worker process that is about
to exit (``process_exits``, what ``pgq-nb worker`` sets) a hard stop instead returns those
jobs too, due a few seconds later, and the process then ends, taking its threads with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from pgq_nb.completion import Finished

if TYPE_CHECKING:
    from pgq_nb.executors import JobExecutor
    from pgq_nb.models import Job
    from pgq_nb.store import Store
    from pgq_nb.worker import WorkerStats

logger = logging.getLogger("pgq_nb.worker")

#: Seconds before jobs returned by a process that is exiting may run again: their threads end
#: with the process, a moment after the jobs were given back.
EXIT_RETURN_DELAY_S = 3.0
_INTERRUPTED = "interrupted: its worker shut down; not counted as an attempt"
_CANCELLED = "cancelled while running"  # as pgq_nb.worker records a cancel it heard of
_KEEP: set[asyncio.Task[Any]] = set()  # stop tasks that outlive run() (kept from the GC)


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Wait for ``event`` at most ``seconds``. (Not ``asyncio.wait_for``: on Python 3.11 it can
    swallow a cancellation that arrives as the event is set, and a stopping worker then waits
    forever; ``asyncio.timeout`` does not.)"""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


class Stopping:
    """Stopping a worker; see the module's docstring."""

    store: Store
    worker_id: int | None
    grace_period: float
    process_exits: bool
    stats: WorkerStats
    _q: dict[str, str]
    _running: dict[int, tuple[Job, asyncio.Future[Any]]]
    _interrupted: list[int]
    _finished: list[Finished]
    _stopping: asyncio.Event
    _hard_stop: asyncio.Event
    _slot_free: asyncio.Event
    _wake: asyncio.Event
    _listener: asyncpg.Connection | None
    _executor: Any
    _pool: JobExecutor | None

    _flush: Callable[[], Awaitable[None]]
    _known_ids: Callable[[], list[int]]
    _orphans: Callable[[Any, Sequence[int]], Awaitable[set[int]]]
    _return_orphans: Callable[[Any, set[int]], Awaitable[None]]

    def request_stop(self, hard: bool = False) -> None:
        """Stop claiming; running jobs get the grace period to finish, or none when ``hard``.
        Call on the pgq_nb loop."""
        self._stopping.set()
        if hard:
            self._hard_stop.set()
        self._wake.set()
        self._slot_free.set()

    async def _stop(
        self, claiming: asyncio.Task[Any], background: dict[str, asyncio.Task[Any]]
    ) -> None:
        """Stop everything (``background``: the worker's tasks by name). Shielded by run(): a
        second cancellation of run() makes it hard but does not cut it short."""
        self._stopping.set()
        claiming.cancel()
        await asyncio.gather(claiming, return_exceptions=True)
        await self._wait_running(self.grace_period)
        for _, future in list(self._running.values()):
            future.cancel()  # async handlers stop; def handlers finish their thread first
        await self._wait_running(1.0, hard_too=True)
        heartbeat = background.pop("heartbeat")
        for task in background.values():
            task.cancel()
        await asyncio.gather(*background.values(), return_exceptions=True)
        threads = [job.id for job, _ in self._running.values()]
        if threads and self.process_exits and self._hard_stop.is_set():
            threads = []  # no wait: _outlive_threads returns their jobs at once
        if threads:
            logger.warning(
                "waiting for def handlers to return (a thread cannot be interrupted); their "
                "jobs stay with this worker until then",
                extra={"worker_id": self.worker_id, "job_ids": threads},
            )
            # the jobs already interrupted need not wait for those threads
            with contextlib.suppress(Exception):  # else at the end (_finish_stop)
                async with self.store.pool.acquire() as conn:
                    await self._give_back(conn)
                await self._flush()  # the cancelled among them
        if threads and self._hard_stop.is_set() and not self.process_exits:
            # in a notebook after the Stop button: nobody waits for the threads but us (a
            # process that exits, made hard during the give-back above, returns them inline)
            later = asyncio.ensure_future(self._outlive_threads(heartbeat))
            _KEEP.add(later)
            later.add_done_callback(_KEEP.discard)
            return
        await self._outlive_threads(heartbeat)

    async def _wait_running(self, seconds: float, *, hard_too: bool = False) -> None:
        """Wait until nothing runs, at most ``seconds`` (or until a hard stop, unless
        ``hard_too``)."""
        deadline = asyncio.get_running_loop().time() + seconds
        while self._running and (hard_too or not self._hard_stop.is_set()):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            self._slot_free.clear()
            await _wait(self._slot_free, remaining)

    async def _outlive_threads(self, heartbeat: asyncio.Task[Any]) -> None:
        """Wait for the def handlers still running, recording each as it ends (in a process
        that exits, a hard stop returns the rest instead); then finish the stop."""
        while self._running:
            if self.process_exits and self._hard_stop.is_set():
                self._interrupted.extend(self._running)
                break
            self._slot_free.clear()
            await _wait(self._slot_free, 10.0)
            if self._finished:
                with contextlib.suppress(Exception):
                    await self._flush()  # tried again at the end if it fails now
        heartbeat.cancel()
        await asyncio.gather(heartbeat, return_exceptions=True)
        await self._finish_stop()

    async def _finish_stop(self) -> None:
        """Record what finished, return what was interrupted, deregister, close."""
        # a process about to exit with def handlers still in their threads: give their jobs
        # back last and close nothing (slow clean-ups would let the delay run out first)
        abandoning = self.process_exits and self._hard_stop.is_set() and bool(self._running)
        try:
            await self._flush()
            async with self.store.pool.acquire() as conn:
                await self._give_back(conn)
                if self._finished:  # the cancelled among them
                    await self._flush()
                # a claim cut short by the stop may have committed: give its jobs back too
                orphans = await self._orphans(conn, self._known_ids())
                if orphans:
                    await self._return_orphans(conn, orphans)
                await conn.execute(self._q["deregister_worker"], self.worker_id)
        except Exception as exc:  # best effort: the heartbeat timeout is the safety net
            logger.warning(
                "could not flush at shutdown; unfinished jobs will be reclaimed after the "
                "heartbeat timeout",
                extra={"error": str(exc)},
            )
        if self._pool is not None:  # its processes end (none runs a job by now)
            await self._pool.close()
        if abandoning:
            logger.info("worker stopped at once", extra={"worker_id": self.worker_id})
            return
        await self.store.resources.close()
        if self._listener is not None:
            await self._listener.close(timeout=2)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        logger.info("worker stopped", extra={"worker_id": self.worker_id})

    async def _give_back(self, conn: Any) -> None:
        """Return the interrupted jobs to the queue, counting those it finds still held here
        (a job whose handler ended meanwhile was recorded instead); due a few seconds later
        when their threads still run (they end with the process)."""
        if not self._interrupted:
            return
        taken = len(self._interrupted)  # (more may come while the statements run)
        ids = list(dict.fromkeys(self._interrupted))
        delay = EXIT_RETURN_DELAY_S if any(i in self._running for i in ids) else 0.0
        async with conn.transaction():
            held = await conn.fetch(self._q["lock_returning"], self.worker_id, ids)
            back = [r["id"] for r in held if not r["cancel_requested"]]
            rows = await conn.fetch(
                self._q["return_jobs"], self.worker_id, back, _INTERRUPTED, delay
            )
            if rows:
                await conn.execute(self._q["notify_jobs"])
        self.stats.interrupted += len(rows)
        # cancelled before this worker heard of it: recorded as cancelled by the next flush
        now = dt.datetime.now(dt.UTC)
        for row in held:
            if row["cancel_requested"]:
                self._finished.append(
                    Finished(row["id"], "cancelled", None, _CANCELLED, None, None, now, 0.0)
                )
                self.stats.cancelled += 1
        del self._interrupted[:taken]

    async def _run_stop(
        self, claiming: asyncio.Task[Any], background: dict[str, asyncio.Task[Any]]
    ) -> None:
        """Run :meth:`_stop` shielded: if the caller is cancelled meanwhile, the stop turns hard
        and goes on in the background while the cancellation goes through."""
        stop = asyncio.ensure_future(self._stop(claiming, background))
        _KEEP.add(stop)
        stop.add_done_callback(_KEEP.discard)
        try:
            await asyncio.shield(stop)
        except asyncio.CancelledError:
            self.request_stop(hard=True)
            raise
