"""Prometheus metrics of a queue, read from the database when they are scraped.

:func:`render` is what ``/metrics`` answers, on ``pgq-nb web`` and on ``pgq-nb worker
--metrics-port`` (which adds its own process's observations, :mod:`pgq_nb.metrics_worker`).
Each scrape runs the named queries of ``sql/queries/metrics.sql`` in one read-only
transaction, under a time limit: nothing polls in the background, and a scrape never reads
history (finished jobs come from the ``finished_counts`` counters). When the database does not
answer in time the scrape still answers at once, with ``pgq_nb_up 0``.

Needs ``prometheus_client`` (``pip install 'pgq_nb[metrics]'``); the core never imports this
module, so ``import pgq_nb`` and a worker without ``--metrics-port`` do not load it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import asyncpg

from pgq_nb import runtime
from pgq_nb.errors import ConfigurationError, PgqError
from pgq_nb.models import FINAL_STATUSES, LIVE_STATUSES

try:
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
    from prometheus_client.registry import Collector, CollectorRegistry
except ImportError:  # pragma: no cover - depends on what is installed
    raise ConfigurationError(
        "metrics need the prometheus_client package, which is not installed; install it with "
        "`pip install 'pgq_nb[metrics]'` (or `pip install prometheus_client`)"
    ) from None

if TYPE_CHECKING:
    from pgq_nb.store import Store

logger = logging.getLogger("pgq_nb.metrics")

#: Seconds one scrape may spend in the database before it answers ``pgq_nb_up 0``: below
#: Prometheus's default scrape timeout (10 s), so that the scrape itself never times out.
SCRAPE_TIMEOUT_S = 5.0

#: The environment variable that sets :data:`MAX_ENTRYPOINTS` (read when this module loads).
MAX_ENTRYPOINTS_ENV = "PGQ_NB_METRICS_MAX_ENTRYPOINTS"
#: The label that stands for every entrypoint beyond :data:`MAX_ENTRYPOINTS`.
OTHER = "_other"
DEFAULT_MAX_ENTRYPOINTS = 1000


def max_entrypoints_from_env() -> int:
    """:data:`MAX_ENTRYPOINTS` from ``PGQ_NB_METRICS_MAX_ENTRYPOINTS`` (default 1,000)."""
    raw = os.environ.get(MAX_ENTRYPOINTS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_ENTRYPOINTS
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise ConfigurationError(
            f"{MAX_ENTRYPOINTS_ENV}={raw!r} is not a number of entrypoints; give a whole number "
            f"of at least 1 (the default is {DEFAULT_MAX_ENTRYPOINTS:,}), or unset it"
        )
    return int(raw)


#: Entrypoints that get series of their own: the entrypoint label is user data, and 10,000
#: entrypoints would make a scrape of hundreds of thousands of series. Beyond it, the most
#: active ones keep theirs and the rest are summed into ``entrypoint="_other"``.
MAX_ENTRYPOINTS: int = max_entrypoints_from_env()

#: The content type of :func:`render`'s body (Prometheus' text format).
CONTENT_TYPE: str = CONTENT_TYPE_LATEST

#: What a scrape can fail on and still answer: the server down, slow or restarting, the
#: connection lost, the schema missing.
_READ_ERRORS: tuple[type[BaseException], ...] = (
    TimeoutError,
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    PgqError,
)


async def render(store: Store, *, timeout: float = SCRAPE_TIMEOUT_S) -> tuple[bytes, str]:
    """The queue's metrics in Prometheus' text format, and its content type: for an HTTP
    handler of ``GET /metrics``. Reads the database now (at most ``timeout`` seconds); never
    raises for a database that cannot be read (``pgq_nb_up 0`` says so). May be awaited on
    any event loop (a web server's): it runs on pgq_nb's, where the store's pool lives."""
    return await runtime.run_here(_render(store, timeout))


async def _render(store: Store, timeout: float) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    collector = QueueCollector(store, timeout=timeout)
    registry.register(collector)
    await collector.read()
    # formatted off the loop: a big exposition does not stall what else runs on it
    return await asyncio.to_thread(generate_latest, registry), CONTENT_TYPE


class QueueCollector(Collector):
    """The queue-wide metrics, from the database. ``await read()`` queries it (at scrape time);
    ``collect()``, which prometheus_client calls, yields what the last read found."""

    def __init__(
        self,
        store: Store,
        *,
        timeout: float = SCRAPE_TIMEOUT_S,
        max_entrypoints: int | None = None,
    ) -> None:
        self.store = store
        self.timeout = timeout
        self.max_entrypoints = MAX_ENTRYPOINTS if max_entrypoints is None else max_entrypoints
        self._families: list[Metric] = []

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)

    async def read(self) -> None:
        """Query the database and keep the metric families of what it said."""
        began = time.perf_counter()
        # The queries run in a task of their own: when the time is up the scrape answers at
        # once, and the task, cancelled, closes its connection (a ROLLBACK to a server that
        # hangs would hang too) and ends in the background.
        query = asyncio.ensure_future(self._query())
        try:
            done, _ = await asyncio.wait({query}, timeout=self.timeout)
        except asyncio.CancelledError:  # the scraper left
            _abandon(query)
            raise
        try:
            if not done:
                _abandon(query)
                raise TimeoutError(f"no answer within {self.timeout:g} s")
            rows = query.result()
        except _READ_ERRORS as exc:
            logger.warning(
                "metrics: the database could not be read; pgq_nb_up is 0",
                extra={"error": f"{type(exc).__name__}: {exc}"},
            )
            rows = None
        families = []
        if rows is not None:  # built off the loop: thousands of entrypoints take a while
            families = await asyncio.to_thread(
                queue_families, **rows, max_entrypoints=self.max_entrypoints
            )
        up = GaugeMetricFamily(
            "pgq_nb_up", "1 if the last scrape read the queue's database, else 0"
        )
        up.add_metric([], 0 if rows is None else 1)
        took = GaugeMetricFamily(
            "pgq_nb_scrape_duration_seconds", "Seconds the last scrape spent in the database"
        )
        took.add_metric([], time.perf_counter() - began)
        self._families = [up, took, *families]

    async def _query(self) -> dict[str, list[Any]]:
        # A cancelled query closes its connection at once, whether it waits on BEGIN or on a
        # query: asyncpg would otherwise send a ROLLBACK, or wait for its cancel request, to a
        # server that may not answer. The pool opens a new connection when one is needed.
        async with self.store.pool.acquire() as conn:
            try:
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    try:
                        return await self._read(conn)
                    except asyncio.CancelledError:
                        conn.terminate()
                        raise
            except asyncio.CancelledError:
                conn.terminate()
                raise

    async def _read(self, conn: Any) -> dict[str, list[Any]]:
        q = self.store.queries
        # the server stops a query that outlives the scrape, too
        await conn.execute(f"SET LOCAL statement_timeout = {max(1, int(self.timeout * 1000))}")
        return {
            "live": await conn.fetch(q["metrics_live_jobs"]),
            "finished": await conn.fetch(q["history_counts"]),
            "workers": await conn.fetch(
                q["metrics_workers"], self.store.settings.heartbeat_timeout
            ),
            "entrypoints": await conn.fetch(q["metrics_entrypoints"]),
            "schedules": await conn.fetch(q["metrics_schedules"]),
        }


#: Scrapes that timed out, until their cancelled queries have ended.
_pending: set[asyncio.Future[Any]] = set()


def _abandon(task: asyncio.Future[Any]) -> None:
    """Cancel a scrape's queries and let them end in the background."""
    task.cancel()
    _pending.add(task)
    task.add_done_callback(_forget)


def _forget(task: asyncio.Future[Any]) -> None:
    _pending.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: no "never retrieved" warning


def queue_families(
    *,
    live: list[Any],
    finished: list[Any],
    workers: list[Any],
    entrypoints: list[Any],
    schedules: list[Any],
    max_entrypoints: int = DEFAULT_MAX_ENTRYPOINTS,
) -> list[Metric]:
    """The metric families of what the scrape queries returned (rows as mappings). Every known
    entrypoint gets every status, zeros included, so that a series never vanishes when its
    count falls to nothing (an alert on it would go quiet instead of resolving). Beyond
    ``max_entrypoints`` entrypoints, the most active ones (most jobs live and finished) keep
    series of their own and the rest are summed into ``entrypoint="_other"`` (the oldest age is
    their oldest, paused the number of them paused)."""
    activity: dict[str, int] = {r["name"]: 0 for r in entrypoints}
    for r in (*live, *finished):
        activity[r["entrypoint"]] = activity.get(r["entrypoint"], 0) + r["n"]
    label = _labeller(activity, max_entrypoints)
    names = sorted({label(name) for name in activity})
    n: dict[tuple[str, str], int] = {}
    awaiting: dict[str, int] = {}
    age: dict[str, float] = {}
    for r in live:
        name = label(r["entrypoint"])
        n[name, r["status"]] = n.get((name, r["status"]), 0) + r["n"]
        awaiting[name] = awaiting.get(name, 0) + (r["awaiting_retry"] or 0)
        age[name] = max(age.get(name, 0.0), r["oldest_due_s"] or 0.0)
    jobs = GaugeMetricFamily(
        "pgq_nb_jobs",
        "Live jobs by entrypoint and status (queued, blocked, picked), as q.stats() counts them",
        labels=["entrypoint", "status"],
    )
    retrying = GaugeMetricFamily(
        "pgq_nb_jobs_awaiting_retry",
        "Queued jobs waiting to run again after a failed attempt, by entrypoint",
        labels=["entrypoint"],
    )
    oldest = GaugeMetricFamily(
        "pgq_nb_oldest_queued_job_age_seconds",
        "Seconds since the longest-waiting queued job became due, by entrypoint (0: none due)",
        labels=["entrypoint"],
    )
    for name in names:
        for status in LIVE_STATUSES:
            jobs.add_metric([name, status], n.get((name, status), 0))
        retrying.add_metric([name], awaiting.get(name, 0))
        oldest.add_metric([name], max(0.0, age.get(name, 0.0)))
    done = GaugeMetricFamily(
        "pgq_nb_finished_jobs",
        "Finished jobs in history by entrypoint and outcome, from the counters the queue keeps "
        "(as q.stats() shows them). A gauge: it falls when q.purge_history() deletes rows or "
        "failed jobs are requeued; for rates use pgq_nb_worker_attempts_total",
        labels=["entrypoint", "outcome"],
    )
    totals: dict[tuple[str, str], int] = {}
    for r in finished:
        key = (label(r["entrypoint"]), r["status"])
        totals[key] = totals.get(key, 0) + r["n"]
    for name in names:
        for status in FINAL_STATUSES:
            done.add_metric([name, status], totals.get((name, status), 0))
    paused = GaugeMetricFamily(
        "pgq_nb_entrypoint_paused",
        "1 while the entrypoint is paused (no worker claims its jobs), else 0 (for "
        'entrypoint="_other": how many of the entrypoints it sums are paused)',
        labels=["entrypoint"],
    )
    pauses: dict[str, int] = {}
    for row in entrypoints:
        name = label(row["name"])
        pauses[name] = pauses.get(name, 0) + (1 if row["paused"] else 0)
    for name, count in sorted(pauses.items()):
        paused.add_metric([name], count)
    alive = GaugeMetricFamily(
        "pgq_nb_workers_alive", "Worker processes with a heartbeat younger than the timeout"
    )
    slots = GaugeMetricFamily(
        "pgq_nb_worker_slots", "Jobs the live workers may run at once (their concurrency, summed)"
    )
    for row in workers:
        alive.add_metric([], row["alive"])
        slots.add_metric([], row["slots"])
    return [jobs, retrying, oldest, done, paused, alive, slots, *schedule_families(schedules)]


def _labeller(activity: dict[str, int], limit: int) -> Callable[[str], str]:
    """The label of each entrypoint: its name for the ``limit`` most active (ties by name), and
    ``_other`` for the rest."""
    if len(activity) <= limit:
        return lambda name: name
    keep = set(sorted(activity, key=lambda name: (-activity[name], name))[:limit])
    return lambda name: name if name in keep else OTHER


def schedule_families(schedules: list[Any]) -> list[Metric]:
    """Per schedule: how late its next tick is, whether it is enabled, its next and last tick."""
    late = GaugeMetricFamily(
        "pgq_nb_schedule_lateness_seconds",
        "Seconds since the schedule's next tick came due without firing (0: not due yet, or the "
        "schedule is paused)",
        labels=["schedule"],
    )
    enabled = GaugeMetricFamily(
        "pgq_nb_schedule_enabled", "1 if the schedule fires, 0 while paused", labels=["schedule"]
    )
    next_run = GaugeMetricFamily(
        "pgq_nb_schedule_next_run_timestamp_seconds",
        "When the schedule's next tick is due (Unix time)",
        labels=["schedule"],
    )
    last_run = GaugeMetricFamily(
        "pgq_nb_schedule_last_run_timestamp_seconds",
        "The fire time of the schedule's newest tick (Unix time; absent until it first fires)",
        labels=["schedule"],
    )
    for row in schedules:
        name = [row["name"]]
        late.add_metric(name, max(0.0, row["late_s"]) if row["enabled"] else 0.0)
        enabled.add_metric(name, 1 if row["enabled"] else 0)
        next_run.add_metric(name, row["next_run"])
        if row["last_run"] is not None:
            last_run.add_metric(name, row["last_run"])
    return [late, enabled, next_run, last_run]
