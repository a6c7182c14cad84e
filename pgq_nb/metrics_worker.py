"""What a ``pgq-nb worker --metrics-port`` process measures itself, and its health.

The database keeps when each job was due, started and finished, but reading that back for a
histogram would mean reading history at every scrape. So the attempt-duration and queue-wait
histograms are this process's own observations of the jobs it ran, since it started (as
Prometheus expects of a process's histograms: ``rate()`` and ``histogram_quantile()`` sum them
over every worker that is scraped, and a restart is a counter reset). They are measured on the
worker's clock against the database's ``created``/``execute_after`` (keep the machines' clocks
in sync). The queue-wide metrics (:mod:`pgq_nb.metrics`) come with them on the same page.

:class:`MeteredWorker` is the :class:`pgq_nb.worker.Worker` that makes these observations: it
reads the outcome of each attempt off the worker's own ``stats`` (what ``_done`` counted) and
notes the time of each heartbeat that went through, which ``/healthz`` answers from.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.registry import CollectorRegistry

from pgq_nb.metrics import MAX_ENTRYPOINTS, OTHER
from pgq_nb.models import Job
from pgq_nb.worker import Worker

#: Seconds: from a fraction of a millisecond (no-op jobs) to an hour (a notebook pipeline).
DURATION_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600)
WAIT_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 21600)

#: The WorkerStats fields that count an attempt's end, and the outcome label each stands for.
_OUTCOMES = ("succeeded", "failed", "retried", "cancelled", "snoozed")


@dataclasses.dataclass(frozen=True)
class _Series:
    """One entrypoint's children of the labelled metrics (a labels() look-up costs a lock and
    a dict look-up per call; these are looked up once)."""

    attempts: dict[str, Any]
    duration: Any
    wait: Any


class WorkerMetrics:
    """This process's own metrics, in ``registry``. The first ``max_entrypoints`` entrypoints
    it runs get series of their own; the ones after them share ``entrypoint="_other"``."""

    def __init__(self, registry: CollectorRegistry, *, max_entrypoints: int | None = None) -> None:
        self.registry = registry
        self.max_entrypoints = MAX_ENTRYPOINTS if max_entrypoints is None else max_entrypoints
        self.attempts = Counter(
            "pgq_nb_worker_attempts",
            "Attempts this worker process ran to their end, by entrypoint and outcome "
            "(succeeded, failed for good, retried, cancelled, snoozed), since the process started",
            ["entrypoint", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "pgq_nb_worker_attempt_duration_seconds",
            "Run time of the attempts this worker process ran, by entrypoint (its own "
            "observations since it started)",
            ["entrypoint"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.wait = Histogram(
            "pgq_nb_worker_queue_wait_seconds",
            "Seconds from a job being due (enqueued, or its retry delay over) to this worker "
            "process starting it, by entrypoint (its own observations since it started)",
            ["entrypoint"],
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.running = Gauge(
            "pgq_nb_worker_running_jobs",
            "Jobs this worker process runs now",
            registry=registry,
        )
        self._series: dict[str, _Series] = {}
        self.heartbeat_age = Gauge(
            "pgq_nb_worker_heartbeat_age_seconds",
            "Seconds since this worker process's last heartbeat went through (-1: none yet)",
            registry=registry,
        )

    def of(self, entrypoint: str) -> _Series:
        """The series of ``entrypoint`` (``_other``'s beyond the limit)."""
        series = self._series.get(entrypoint)
        if series is None:
            if len(self._series) - (OTHER in self._series) >= self.max_entrypoints:
                entrypoint = OTHER
                series = self._series.get(OTHER)
                if series is not None:
                    return series
            series = self._series[entrypoint] = _Series(
                attempts={o: self.attempts.labels(entrypoint, o) for o in _OUTCOMES},
                duration=self.duration.labels(entrypoint),
                wait=self.wait.labels(entrypoint),
            )
        return series


class MeteredWorker(Worker):
    """A worker that records its attempts in :class:`WorkerMetrics` and knows its health."""

    def __init__(self, queue: Any, *, metrics: WorkerMetrics, **options: Any) -> None:
        super().__init__(queue, **options)
        self.metrics = metrics
        #: time.monotonic() of the last heartbeat that went through (registration counts as one)
        self.last_beat: float | None = None
        metrics.running.set_function(lambda: len(self._running))
        metrics.heartbeat_age.set_function(self._heartbeat_age)

    def _heartbeat_age(self) -> float:
        if self.last_beat is None:
            return -1.0
        return time.monotonic() - self.last_beat

    async def _register(self) -> None:
        await super()._register()
        self.last_beat = time.monotonic()

    async def _beat(self, conn: Any) -> None:
        await super()._beat(conn)
        self.last_beat = time.monotonic()

    def _start(self, job: Job) -> None:
        due = max(job.created, job.execute_after)
        waited = (dt.datetime.now(dt.UTC) - due).total_seconds()
        self.metrics.of(job.entrypoint).wait.observe(max(0.0, waited))
        super()._start(job)

    def _done(self, job: Job, started: dt.datetime, future: asyncio.Future[Any]) -> None:
        stats = self.stats
        before = (stats.succeeded, stats.failed, stats.retried, stats.cancelled, stats.snoozed)
        super()._done(job, started, future)
        after = (stats.succeeded, stats.failed, stats.retried, stats.cancelled, stats.snoozed)
        for outcome, was, now in zip(_OUTCOMES, before, after, strict=True):
            if now != was:
                series = self.metrics.of(job.entrypoint)
                series.attempts[outcome].inc()
                ran = (dt.datetime.now(dt.UTC) - started).total_seconds()
                series.duration.observe(max(0.0, ran))
                return
        # nothing counted: the stop interrupted it (it goes back to the queue), not an attempt

    def health(self) -> tuple[bool, str]:
        """Whether a load balancer or systemd should think this worker healthy, and why: its
        loop answers (this runs on it), it is registered, not stopping, and its last heartbeat
        went through within the heartbeat timeout (after which other workers take its jobs)."""
        if self._stopping.is_set():
            return False, "stopping"
        if self.last_beat is None:
            return False, "starting: not registered yet"
        age = time.monotonic() - self.last_beat
        limit = self.store.settings.heartbeat_timeout
        if age > limit:
            return False, (
                f"no heartbeat went through for {age:.0f} s (timeout {limit:g} s): the "
                "database may be unreachable"
            )
        return True, f"ok: worker {self.worker_id}, last heartbeat {age:.1f} s ago"
