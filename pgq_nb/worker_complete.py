"""How a worker records what its handlers did: each attempt's outcome (success, retry or
failure, with the retry policy's decision) buffered as it ends, then the buffer written in
batches by the flush loop (one statement, or one transaction with workflow steps and slots).

A base class of :class:`pgq_nb.worker.Worker`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

from pgq_nb import db, workflow_maps
from pgq_nb import worker_decisions as decisions
from pgq_nb.completion import Finished, record
from pgq_nb.handler_runs import ALREADY_RECORDED, Encoded, describe_error
from pgq_nb.snooze import Snooze, after_snooze
from pgq_nb.worker_stop import _wait

if TYPE_CHECKING:
    from pgq_nb.hooks import Dispatch
    from pgq_nb.models import Job
    from pgq_nb.registry import EntrypointSpec
    from pgq_nb.store import Store
    from pgq_nb.worker import WorkerStats
    from pgq_nb.worker_notices import Failures

logger = logging.getLogger("pgq_nb.worker")


class Completing:
    """Recording finished attempts; see the module's docstring."""

    store: Store
    worker_id: int | None
    specs: dict[str, EntrypointSpec]
    batch_size: int
    flush_interval: float
    stop_when_idle: bool
    stats: WorkerStats
    failures: Failures
    _q: dict[str, str]
    _hooks: Dispatch
    _finished: list[Finished]
    _flushing: set[int]
    _steps: set[int]
    _slotted: set[int]
    _sources: set[int]
    _wake: asyncio.Event
    _slot_free: asyncio.Event
    _flush_pending: asyncio.Event
    _flush_now: asyncio.Event
    _claiming: bool
    _claim_over: asyncio.Event

    _backlog: bool
    _ready_slots: Callable[[], int]
    _marked: Callable[[Collection[int] | None], Awaitable[None]]
    _wake_for_retries: Callable[[Sequence[Finished]], None]

    def _record(
        self,
        job: Job,
        started: dt.datetime,
        finished: dt.datetime,
        future: asyncio.Future[Any],
        cache: tuple[str | None, int | None] = (None, None),
    ) -> None:
        """Buffer an attempt's outcome. ``cache``: its cache key and the job a cached result
        came from (see :mod:`pgq_nb.worker_cache`), recorded with a success."""
        exc = future.exception()
        if exc is None:
            value = future.result()
            if value is ALREADY_RECORDED:
                self.stats.succeeded += 1
                self._hooks.ended(job, "succeeded", started, finished, recorded=True)
                return
            if not isinstance(value, Encoded):
                exc = RuntimeError(f"internal: an attempt ended with {type(value).__name__}")
            elif (exc := workflow_maps.result_error(job, value.json, value.series)) is None:
                self._finished.append(
                    Finished(
                        job.id, "succeeded", value.json, None, None, started, finished, 0.0, *cache
                    )
                )
                if job._expands:
                    self._sources.add(job.id)
                self.stats.succeeded += 1
                self._hooks.ended(job, "succeeded", started, finished, result=value.json)
                return
        if isinstance(exc, Snooze):
            self._snoozed(job, exc, started, finished)
            return
        error, trace = describe_error(exc)
        decision = decisions.after_failure(self.specs[job.entrypoint].retry, exc, job.attempts)
        outcome = "retry" if decision.retry else "failed"
        self._finished.append(
            Finished(job.id, outcome, None, error, trace, started, finished, decision.delay)
        )
        if decision.retry:
            self.stats.retried += 1
        else:
            self.stats.failed += 1
            self.failures.add(job.entrypoint, error)
        self._hooks.ended(
            job, "retrying" if decision.retry else "failed", started, finished, error=error
        )
        logger.log(
            logging.INFO if decision.retry else logging.WARNING,
            "job will be retried" if decision.retry else "job failed",
            extra={
                "job_id": job.id,
                "entrypoint": job.entrypoint,
                "attempt": job.attempts,
                "error": error,
                "retry_in_s": round(decision.delay, 3) if decision.retry else None,
            },
        )

    def _snoozed(self, job: Job, exc: Snooze, started: dt.datetime, finished: dt.datetime) -> None:
        """A handler raised Snooze: buffer the snooze (no failure; finish_jobs takes its
        attempt back), or, over the entrypoint's max_snoozes, a failure for good saying so
        (see :mod:`pgq_nb.snooze`)."""
        spec = self.specs[job.entrypoint]
        choice = after_snooze(job.entrypoint, job.snoozes, spec.max_snoozes, exc.delay)
        if choice.snooze:
            self._finished.append(
                Finished(job.id, "snooze", None, None, None, started, finished, choice.delay)
            )
            self.stats.snoozed += 1
            self._hooks.ended(job, "snoozed", started, finished)
            logger.info(
                "job snoozed",
                extra={
                    "job_id": job.id,
                    "entrypoint": job.entrypoint,
                    "snoozes": job.snoozes + 1,
                    "due_in_s": round(choice.delay, 3),
                },
            )
            return
        error = choice.error
        self._finished.append(Finished(job.id, "failed", None, error, None, started, finished, 0.0))
        self.stats.failed += 1
        assert error is not None
        self.failures.add(job.entrypoint, error)
        self._hooks.ended(job, "failed", started, finished, error=error)
        logger.warning(
            "job failed",
            extra={"job_id": job.id, "entrypoint": job.entrypoint, "error": error},
        )

    # -- completing --------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await self._flush_pending.wait()
            if decisions.gather_first(len(self._finished), self.batch_size):
                # gather a batch: a few ms, or until batch_size completions wait (longer
                # while a claim is likely to take them: see decisions.keep_gathering)
                waited = 0.0
                while True:
                    await _wait(self._flush_now, self.flush_interval)
                    waited += self.flush_interval
                    if self._flush_now.is_set() or not self._keep_gathering(waited):
                        break
            self._flush_pending.clear()
            self._flush_now.clear()
            while self._claiming and decisions.ride_next_claim(self._finished, self._steps):
                # a claim is under way: the claim loop's next one records them in its own
                # transaction (one commit for both) while this one runs
                self._claim_over.clear()
                await self._claim_over.wait()
            try:
                await self._flush()
            except db.TRANSIENT_ERRORS as exc:
                logger.warning("completion failed; retrying", extra={"error": str(exc)})
                await asyncio.sleep(0.5)
            if self._finished:
                self._flush_pending.set()
            if self.stop_when_idle:
                self._wake.set()

    def _keep_gathering(self, waited: float) -> bool:
        return decisions.keep_gathering(
            waited,
            self.flush_interval,
            ready=self._ready_slots(),
            backlog=self._backlog,
            finished=self._finished,
            steps=self._steps,
            slotted=self._slotted,
        )

    async def _flush(self) -> None:
        if not self._finished:
            return
        batch, self._finished = self._finished, []
        ids = [done.id for done in batch]
        self._flushing.update(ids)  # known to the orphan sweep from here (pgq_nb.claiming)
        steps, slots = plan = decisions.flush_plan(ids, self._steps, self._slotted)
        try:
            await self._marked(ids)  # their start marks first (only theirs)
            if plan.in_transaction:
                sources = [i for i in ids if i in self._sources]
                async with self.store.pool.acquire() as conn, conn.transaction():
                    await record(
                        conn,
                        self._q,
                        self.worker_id,
                        batch,
                        steps=steps,
                        slots=slots,
                        sources=sources,
                    )
            else:
                await record(self.store.pool, self._q, self.worker_id, batch, steps=False)
        except BaseException:
            self._finished[:0] = batch  # keep them for the next try
            raise
        finally:
            self._flushing.difference_update(ids)
        self._wake_for_retries(batch)
        self._hooks.recorded(ids)
        self._steps.difference_update(ids)
        self._slotted.difference_update(ids)
        self._sources.difference_update(ids)
        self._slot_free.set()  # their slots are free now
        if slots:
            self._wake.set()  # and so are global ones: no need to wait for our own NOTIFY
