"""The worker loop: claim in batches, run handlers, complete in batches, heartbeat, reclaim.

One Worker runs on the pgq_nb loop, in a notebook (``q.start_worker()``,
``q.run_until_idle()``) or in a process of its own (``pgq-nb worker``). Its hot path is three
statements, each for a batch of jobs: the claim, the completion (which moves the jobs to
history) and nothing else; the heartbeat is one row per worker every few seconds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime as dt
import functools
import logging
from collections import Counter
from collections.abc import Awaitable
from typing import Any

import asyncpg

from pgq_nb import db, executors, tracing
from pgq_nb import worker_decisions as decisions
from pgq_nb.claiming import Claiming
from pgq_nb.completion import (
    Finished,
    run_transactional,
)
from pgq_nb.errors import InvalidInputError
from pgq_nb.handler_runs import (
    failed_future,
    run_async,
    run_in_thread,
)
from pgq_nb.hooks import Dispatch
from pgq_nb.models import Job
from pgq_nb.registry import EntrypointSpec
from pgq_nb.retention import retention_loop
from pgq_nb.schedule.runner import run_scheduler
from pgq_nb.store import Backend
from pgq_nb.worker_cache import Caching
from pgq_nb.worker_complete import Completing
from pgq_nb.worker_follow import Following
from pgq_nb.worker_notices import Failures
from pgq_nb.worker_stop import Stopping, _wait
from pgq_nb.worker_upkeep import Upkeep

logger = logging.getLogger("pgq_nb.worker")


@dataclasses.dataclass(kw_only=True)
class WorkerStats:
    """What a worker did, by final status."""

    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    cancelled: int = 0
    interrupted: int = 0
    snoozed: int = 0  #: attempts that raised pgq_nb.Snooze (the job went back, not failed)

    @property
    def processed(self) -> int:
        """Attempts that ended here (retried and snoozed ones included)."""
        return self.succeeded + self.failed + self.retried + self.cancelled + self.snoozed


class Worker(Caching, Claiming, Completing, Upkeep, Following, Stopping):
    """Runs the handlers of one queue. Use :meth:`run`; stop with :meth:`request_stop`.

    Without ``entrypoints`` it serves every handler of the queue's registry, those registered
    after it started too (see :mod:`pgq_nb.worker_follow`), and ``waits_for_handlers`` lets
    it start before the first one (it claims nothing until then)."""

    def __init__(
        self,
        queue: Backend,
        *,
        concurrency: int | None = None,
        entrypoints: list[str] | None = None,
        batch_size: int | None = None,
        flush_interval: float = 0.005,
        grace_period: float = 30.0,
        stop_when_idle: bool = False,
        wait_for_scheduled: float = 60.0,
        process_exits: bool = False,
        waits_for_handlers: bool = False,
        processes: int | bool | None = None,
        dask: Any = None,
    ) -> None:
        executors.check_dask(dask, processes)
        self.processes = executors.check_processes(processes)
        self.dask = dask  # a distributed.Client: handlers run on its cluster
        # the Dask client checked (closed, unreachable) before anything else, for its size
        outside = executors.open_dask((), dask, check=False) if dask is not None else None
        if concurrency is None:  # with processes: a job running and one ready, per process
            size = outside.size if outside is not None else self.processes
            concurrency = 2 * size if size else 32
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidInputError("concurrency must be a positive int")
        registry = queue.registry
        self._generation = registry.generation  # read first: a later change is seen
        self._follows = entrypoints is None
        self.specs: dict[str, EntrypointSpec]
        self.specs = registry.worker_specs(entrypoints, may_wait=waits_for_handlers)
        self.store = queue.store
        self.registry = registry
        self.concurrency = concurrency
        self.batch_size = batch_size or concurrency
        self.flush_interval = flush_interval
        self.grace_period = grace_period
        self.stop_when_idle = stop_when_idle
        self.wait_for_scheduled = wait_for_scheduled
        self.process_exits = process_exits  # see pgq_nb.worker_stop
        self.stats = WorkerStats()
        self.failures = Failures()  # told by notebook workers (see pgq_nb.worker_notices)
        self.worker_id: int | None = None
        self._q = self.store.queries
        self._running: dict[int, tuple[Job, asyncio.Future[Any]]] = {}
        self._cancelling: set[int] = set()
        self._steps: set[int] = set()  # workflow steps among running and unflushed jobs
        self._paused: set[str] = set()  # entrypoints nobody may claim now
        self._slotted: set[int] = set()  # running and unflushed jobs holding a global slot
        self._sources: set[int] = set()  # unflushed map_over sources that succeeded
        self._rate_timer: asyncio.TimerHandle | None = None
        self._schedules = [s for n, s in registry.schedule_specs.items() if n in self.specs]
        self._per_entrypoint: Counter[str] = Counter()
        self._finished: list[Finished] = []
        self._flushing: set[int] = set()  # ids of the batch being recorded
        self._interrupted: list[int] = []  # ids to return to the queue at the stop
        self._orphans_possible = False  # a claim failed midway: it may have committed
        self._claiming = False  # a claim is under way (its jobs are not known yet)
        self._claim_over = asyncio.Event()  # set as each claim ends (see _flush_loop)
        self._marks: dict[asyncio.Task[None], frozenset[int]] = {}  # start marks: their jobs
        self._beating_since: float | None = None
        self._suspects: set[int] = set()  # held but not known at the last heartbeat
        self._wake = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._flush_pending = asyncio.Event()
        self._flush_now = asyncio.Event()
        self._stopping = asyncio.Event()
        self._hard_stop = asyncio.Event()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._listener: asyncpg.Connection | None = None
        # handlers that run outside the worker (processes): checked before anything is claimed
        if outside is None:
            self._pool = executors.open_pool(self.specs.values(), self.processes, concurrency)
        else:
            executors.check_handlers(self.specs.values(), outside)
            self._pool = outside
        self._backlog = False  # the last claim filled all it asked for
        self._hooks = Dispatch(registry.hooks)  # @q.on callbacks (see pgq_nb.hooks)
        self._cache_state()  # cached entrypoints (see pgq_nb.worker_cache)

    def _ready_slots(self) -> int:
        """processes= or dask=: the slots with a job ready behind each (see
        decisions.claim_now), while every entrypoint served runs outside this process."""
        if self._pool is None or (self.processes is None and self.dask is None):
            return 0
        size = self._outside_size
        outside = all(executors.runs_outside(s, size) for s in self.specs.values())
        return decisions.ready_slots(self._pool.size, self.concurrency, self.batch_size, outside)

    @property
    def _outside_size(self) -> int | None:
        """What :func:`executors.runs_outside` weighs: the processes, or 1 on Dask."""
        return 1 if self.dask is not None else self.processes

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> WorkerStats:
        """Work until stopped (or idle, with ``stop_when_idle``). Returns what it did.

        An error that is not transient (a bug, a schema mismatch) stops the worker: running
        jobs get the grace period, then the error is raised. Cancelling the task that runs it
        stops it at once (see :mod:`pgq_nb.worker_stop`) and raises CancelledError."""
        await self._register()
        background = {
            "flush": asyncio.create_task(self._flush_loop(), name="pgq_nb-flush"),
            "heartbeat": asyncio.create_task(self._heartbeat_loop(), name="pgq_nb-heartbeat"),
        }
        # every worker fires the schedules of the entrypoints it serves: @q.schedule ones and
        # those added with q.add_schedule, at any time, from anywhere
        background["scheduler"] = asyncio.create_task(
            run_scheduler(self.store, lambda: list(self.specs)), name="pgq_nb-scheduler"
        )
        # every worker applies the retention policies; one at a time does (pgq_nb.retention)
        background["retention"] = asyncio.create_task(
            retention_loop(self.store), name="pgq_nb-retention"
        )
        tasks = [*background.values()]
        claiming = asyncio.create_task(self._claim_loop(), name="pgq_nb-claim")
        cancelled = False
        try:
            await asyncio.wait([claiming, *tasks], return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            cancelled = True
            self.request_stop(hard=True)
        await self._run_stop(claiming, background)
        await self._hooks.close()
        if cancelled:
            raise asyncio.CancelledError
        for task in (claiming, *tasks):
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        return self.stats

    # -- claiming ----------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        poll = self.store.settings.poll_interval
        # While the queue has more than we can take, wait for a few free slots and claim them
        # together, rather than one claim per finished job.
        low_water = decisions.low_water(self.batch_size, self.concurrency)
        while not self._stopping.is_set():
            if self._registry_changed() and not await self._follow_registry():
                await asyncio.sleep(poll)  # the database could not be reached: again later
                continue
            if self._orphans_possible:
                try:
                    async with self.store.pool.acquire() as conn:
                        orphans = await self._orphans(conn, self._known_ids())
                        await self._return_orphans(conn, orphans)
                except db.TRANSIENT_ERRORS as exc:
                    logger.warning(
                        "checking a lost claim failed; retrying", extra={"error": str(exc)}
                    )
                    await asyncio.sleep(poll)
                    continue
                self._orphans_possible = False
            # A finished job holds its slot until it is recorded: if recording falls behind,
            # claiming waits for it instead of piling up picked jobs. Plain completions are
            # recorded in the claim's own transaction (one commit for both).
            done = self._take_plain_finished()
            free = decisions.free_slots(
                self.concurrency, len(self._running), len(self._finished), self.batch_size
            )
            room = self._room(free)  # what the caps here allow too
            if not decisions.claim_now(
                room,
                backlog=self._backlog,
                low_water=low_water,
                most_room=self._most_room(),
                ready=self._ready_slots(),
            ):
                self._finished[:0] = done
                if done:  # no claim takes them now: the flush records them (and frees slots)
                    self._flush_pending.set()
                if self._running or self._finished:  # wait for a slot (or a resume)
                    self._slot_free.clear()
                    await _wait(self._slot_free, poll)
                else:  # all paused: wait for a resume (or a new handler, or the stop)
                    self._wake.clear()
                    await _wait(self._wake, poll)
                continue
            self._wake.clear()
            self._claiming = True
            try:
                claimed = await self._claim(
                    room, done, [d.id for d in done if d.id in self._slotted]
                )
            except db.TRANSIENT_ERRORS as exc:
                self._finished[:0] = done  # record them later: the next claim, or the flush
                self._flush_pending.set()
                self._orphans_possible = True
                logger.warning("claim failed; retrying", extra={"error": str(exc)})
                await asyncio.sleep(poll)
                continue
            except BaseException:
                self._finished[:0] = done
                self._orphans_possible = True
                raise
            finally:
                self._claiming = False
                self._claim_over.set()
            self._slotted.difference_update(d.id for d in done)
            self._hooks.recorded(d.id for d in done)  # committed with the claim
            for job in claimed:
                self._start(job)
            # (with per-key limits no batching of claims: a key's next job is due the moment
            # its last one is recorded, and waiting for more free slots would hold it back)
            self._backlog = len(claimed) == room and not self._serves_keys()
            if claimed:
                continue
            busy = bool(self._running or self._finished)
            if self.stop_when_idle and not busy and await self._idle():
                return
            await self._look_ahead()  # wake when the next job is due, not at the next poll
            await _wait(self._wake, poll)

    def _serves_keys(self) -> bool:
        """Serves an entrypoint with a per-key limit (see :mod:`pgq_nb.keys`)."""
        return any(spec.max_per_key is not None for spec in self.specs.values())

    def _known_ids(self) -> list[int]:
        """The jobs this worker runs, or ran and has not recorded yet, or stopped and will
        return (not orphans: the stop gives them back with their note and delay)."""
        known = set(self._running) | self._flushing | set(self._interrupted)
        known.update(f.id for f in self._finished)
        return sorted(known)

    def _take_plain_finished(self) -> list[Finished]:
        """Take the finished attempts that need no more than finish_jobs and release_slots (no
        workflow step) out of the buffer."""
        if not self._finished:
            return []
        plain, self._finished = decisions.split_plain(self._finished, self._steps)
        return plain

    async def _idle(self) -> bool:
        names = list(self.specs)
        count = await self.store.pool.fetchval(
            self._q["count_runnable"], names, self.wait_for_scheduled
        )
        return bool(count == 0)

    # -- running -----------------------------------------------------------------------------

    def _start(self, job: Job) -> None:
        spec = self.specs[job.entrypoint]
        started = dt.datetime.now(dt.UTC)
        job.resources = self.store.resources
        call: Awaitable[Any]
        cached = self._cached_call(job)  # a cache hit runs no handler
        if cached is not None:
            call = cached
        elif spec.transactional:
            call = run_transactional(
                self.store,
                self.registry,
                spec,
                job,
                self.worker_id,
                started,
                self._executor,
                slotted=spec.max_running is not None,
                cancel_requested=lambda: job.id in self._cancelling,
                marked=functools.partial(self._marked, [job.id]),
            )
            if spec.is_async:
                call = run_async(call, spec.timeout)
        elif self._pool is not None and executors.runs_outside(spec, self._outside_size):
            call = self._pool.run(spec, job, timeout=spec.timeout)
        elif spec.is_async:
            call = run_async(spec.handler(job), spec.timeout)
        else:
            call = run_in_thread(
                self._executor,
                spec.handler,
                job,
                timeout=spec.timeout,
                cancel_requested=lambda: job.id in self._cancelling,
            )
        future: asyncio.Future[Any] = asyncio.ensure_future(tracing.traced(job, call))
        self._running[job.id] = (job, future)
        if job.workflow_id is not None:
            self._steps.add(job.id)
        if spec.max_running is not None or spec.max_per_key is not None:
            # (a key's room frees as a slot does: once recorded, the claim loop is woken)
            self._slotted.add(job.id)
        self._per_entrypoint[job.entrypoint] += 1
        future.add_done_callback(lambda f: self._done(job, started, f))
        self._hooks.started(job)

    def _done(self, job: Job, started: dt.datetime, future: asyncio.Future[Any]) -> None:
        self._running.pop(job.id, None)
        cache = self._cache_fields(job.id)
        self._per_entrypoint[job.entrypoint] -= 1
        self._slot_free.set()
        finished = dt.datetime.now(dt.UTC)
        if future.cancelled() and job.id not in self._cancelling:
            if self._stopping.is_set():
                self._interrupted.append(job.id)  # the stop returns it to the queue
                return
            # nobody cancelled it: the handler let a CancelledError of its own escape
            future = failed_future(asyncio.CancelledError("the handler raised CancelledError"))
        if future.cancelled():
            self._cancelling.discard(job.id)
            error = "cancelled while running"
            self._finished.append(
                Finished(job.id, "cancelled", None, error, None, started, finished, 0.0)
            )
            self.stats.cancelled += 1
        else:
            self._record(job, started, finished, future, cache)
        self._flush_pending.set()
        if decisions.flush_at_once(len(self._finished), self.batch_size, len(self._running)):
            self._flush_now.set()  # a full batch, or nothing left to wait for
        if job.concurrency_key is not None:  # its key frees once recorded: claim now, with it
            self._wake.set()  # (a claim that found every key full sleeps until woken or polled)

    # -- heartbeat ---------------------------------------------------------------------------
