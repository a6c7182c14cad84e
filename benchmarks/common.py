"""Shared pieces of the benchmark harness: sizes, result rows, timing and pgq_nb helpers.

pgq_nb code runs on pgq_nb's own event-loop thread (``on_pgq_nb_loop``), the way a notebook
uses it; PgQueuer code runs in a fresh ``asyncio.run`` loop in the main thread (see
``benchmarks.pgqueuer_env``). Only one of the two is busy at any time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import statistics
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pgq_nb
from pgq_nb import runtime

T = TypeVar("T")

STOP_TIMEOUT = 30.0  # seconds a stopping worker gets before it is cancelled
PGQ_NB = "pgq_nb"
PGQUEUER = "PgQueuer"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sizes:
    """How much work each scenario does: ``quick_run()`` for a few minutes, ``full()`` else."""

    quick: bool
    repeats: int
    enqueue_jobs: int
    enqueue_batch_pgqueuer: int = 1_000
    drain_jobs: int
    drain_cap: float  # seconds; a slower drain stops there and reports what it finished
    sustained_seconds: float
    sustained_warmup: float = 1.0
    sustained_batch: int = 100
    latency_jobs: int
    latency_gap: float = 0.010
    claim_small: int = 10_000
    claim_big: int
    claim_batch: int = 32
    claim_runs: int = 200
    history_rows: int
    stats_runs: int = 20
    fan_in_steps: int  # the workflow scenario's map
    workflow_concurrency: int = 64
    cron_ticks: int
    flow_jobs: int
    flow_concurrency: int = 64
    core_jobs: int
    core_chunk: int = 10_000
    core_concurrency: int = 32
    peer_jobs: int = 10_000  # the peers scenario's drain and enqueue (the peers are slow)
    sweep_rounds: int = 2  # drains per sweep candidate (the best counts), each round reversed
    scale_queued: int = 10_000_000  # the scale scenario's claim backlog (against claim_small)
    scale_history: int = 10_000_000  # ... its q.stats() history rows
    scale_frame: int = 1_000_000  # ... its enqueue_df and results() rows

    @classmethod
    def full(cls) -> Sizes:
        return cls(
            quick=False,
            repeats=3,
            enqueue_jobs=100_000,
            drain_jobs=50_000,
            drain_cap=90.0,
            sustained_seconds=20.0,
            latency_jobs=500,
            claim_big=1_000_000,
            history_rows=1_000_000,
            fan_in_steps=10_000,
            cron_ticks=20,
            flow_jobs=30_000,
            core_jobs=50_000,
        )

    @classmethod
    def quick_run(cls) -> Sizes:
        return cls(
            quick=True,
            repeats=2,
            enqueue_jobs=20_000,
            drain_jobs=10_000,
            drain_cap=30.0,
            sustained_seconds=8.0,
            latency_jobs=150,
            claim_big=200_000,
            history_rows=200_000,
            fan_in_steps=1_000,
            cron_ticks=5,
            flow_jobs=10_000,
            core_jobs=10_000,
            peer_jobs=2_000,
            sweep_rounds=1,
            scale_queued=1_000_000,
            scale_history=1_000_000,
            scale_frame=100_000,
        )


@dataclasses.dataclass(kw_only=True)
class Row:
    """One line of the result table: per-repeat figures of each system, and their medians.

    ``ratio`` is pgq_nb's advantage: pgq_nb / PgQueuer for rates, PgQueuer / pgq_nb for
    times, so above 1 always means pgq_nb did better. Rows measuring pgq_nb alone may set
    ``ratio`` themselves (for example claim time at 1,000,000 queued over 10,000 queued).
    """

    scenario: str
    unit: str  # "jobs/s" or "ms"
    higher_is_better: bool
    pgq_nb: list[float] = dataclasses.field(default_factory=list)
    pgqueuer: list[float] = dataclasses.field(default_factory=list)
    target: str = ""
    note: str = ""
    ratio: float | None = None
    transport: str = ""  # "tcp" or "socket" for rows measured over one; "" otherwise
    others: dict[str, list[float]] = dataclasses.field(default_factory=dict)  # peers' figures
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)  # each system's settings
    checks: dict[str, str] = dataclasses.field(default_factory=dict)  # finished-job checks
    headline: bool = False  # shown first: tuned against tuned

    @property
    def pgq_nb_median(self) -> float | None:
        return statistics.median(self.pgq_nb) if self.pgq_nb else None

    @property
    def pgqueuer_median(self) -> float | None:
        return statistics.median(self.pgqueuer) if self.pgqueuer else None

    def others_median(self, name: str) -> float | None:
        values = self.others.get(name)
        return statistics.median(values) if values else None

    @property
    def advantage(self) -> float | None:
        if self.ratio is not None:
            return self.ratio
        ours, theirs = self.pgq_nb_median, self.pgqueuer_median
        if ours is None or theirs is None or ours <= 0 or theirs <= 0:
            return None
        return ours / theirs if self.higher_is_better else theirs / ours

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "pgq_nb": self.pgq_nb,
            "pgqueuer": self.pgqueuer,
            "pgq_nb_median": self.pgq_nb_median,
            "pgqueuer_median": self.pgqueuer_median,
            "ratio": self.advantage,
            "target": self.target,
            "note": self.note,
            "transport": self.transport,
            "others": self.others,
            "others_median": {k: statistics.median(v) for k, v in self.others.items() if v},
            "settings": self.settings,
            "checks": self.checks,
            "headline": self.headline,
        }


@dataclasses.dataclass(kw_only=True)
class Context:
    """What every scenario gets: the server, the sizes, and PgQueuer (None when absent)."""

    dsn: str
    sizes: Sizes
    pgqueuer: Any  # the pgqueuer module, imported lazily; None if not installed
    tuned_pgq_nb: tuple[int, int] = (128, 128)  # concurrency, batch_size
    # batch_size, max_concurrent_tasks; None: the tuned drain sweeps PGQUEUER_BATCHES first
    tuned_pgqueuer: tuple[int, int | None] | None = (100, None)
    analyze_pgqueuer: bool = False  # ANALYZE PgQueuer's table after the drain's bulk enqueue
    run_id: str = "0"
    admin_dsn: str = ""  # a role that may CREATE DATABASE (PgQueuer's side); default: dsn
    transport: str = ""  # how dsn reaches the server: "tcp" or "socket"
    sweep_pgq_nb: bool = False  # the tuned drain sweeps PGQ_NB_TUNINGS for pgq_nb first
    peers: tuple[str, ...] = ()  # the other queues the peers scenarios run (benchmarks.peers)
    sweep_peers: bool = True  # the peers scenario sweeps each peer's concurrency first

    def schema(self, scenario: str, repeat: int) -> str:
        """A fresh pgq_nb schema name for one run of a scenario."""
        return f"bench_{scenario}_{self.run_id}_{repeat}"[:50]

    def database(self, scenario: str, repeat: int) -> str:
        """A fresh database name for one PgQueuer run of a scenario."""
        return f"bench_pgqueuer_{scenario}_{self.run_id}_{repeat}"[:60]


async def noop(job: Any) -> None:
    """The handler every scenario runs, on either system: it does nothing."""
    return None


def log(message: str) -> None:
    """Progress output, on stderr so that stdout carries only the table."""
    print(message, file=sys.stderr, flush=True)


def sides(repeat: int) -> tuple[str, str]:
    """Which system runs first in this repeat: they take turns, so neither always goes first."""
    return (PGQ_NB, PGQUEUER) if repeat % 2 == 0 else (PGQUEUER, PGQ_NB)


def sweep_order(candidates: int, rounds: int) -> list[int]:
    """The order a sweep tries its candidates in: forwards, then backwards, and so on, so a
    slow spell of a shared machine does not always fall on the same candidate.

    >>> sweep_order(3, 2)
    [0, 1, 2, 2, 1, 0]
    """
    forwards = list(range(candidates))
    return [i for r in range(rounds) for i in (forwards if r % 2 == 0 else forwards[::-1])]


def percentile(values: list[float], pct: float) -> float:
    """The ``pct`` percentile (0-100) of ``values``, linear between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def with_database(dsn: str, database: str) -> str:
    """``dsn`` (a postgresql:// URL) pointing at another database on the same server."""
    parts = urllib.parse.urlsplit(dsn)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError("--dsn must be a postgresql://user@host:port/database URL")
    return urllib.parse.urlunsplit(parts._replace(path="/" + database))


def on_pgq_nb_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on pgq_nb's event-loop thread (where its pool lives) and wait for it."""
    return runtime.run_sync(coro, "a benchmark step")


@contextlib.contextmanager
def fresh_pgq_nb(dsn: str, schema: str) -> Iterator[pgq_nb.Queue]:
    """A pgq_nb queue in a schema of its own, installed fresh and dropped afterwards."""
    q = pgq_nb.connect(dsn, schema=schema)
    q.uninstall()  # a leftover from an interrupted run
    q.install()
    try:
        yield q
    finally:
        q.uninstall()


def pgq_nb_enqueue_noops(q: pgq_nb.Queue, entrypoint: str, n: int, chunk: int = 10_000) -> None:
    """Queue ``n`` jobs with no payload through pgq_nb's own batch enqueue (setup, untimed)."""
    for start in range(0, n, chunk):
        k = min(chunk, n - start)
        q.enqueue([entrypoint] * k, [None] * k, 0)


async def pgq_nb_succeeded(q: pgq_nb.AsyncQueue) -> int:
    """Jobs that reached history as succeeded, from pgq_nb's counters (no count over history)."""
    sql = f'SELECT coalesce(sum(n), 0)::bigint FROM "{q.schema}".finished_counts WHERE status = $1'
    return int(await q.pool.fetchval(sql, "succeeded"))


async def pgq_nb_live_empty(q: pgq_nb.AsyncQueue) -> bool:
    """True once no job is queued or running (finished jobs leave the ``jobs`` table)."""
    sql = f'SELECT NOT EXISTS (SELECT 1 FROM "{q.schema}".jobs)'
    return bool(await q.pool.fetchval(sql))


async def wait_until(
    check: Callable[[], Awaitable[bool]], *, timeout: float, interval: float = 0.02
) -> float:
    """Poll ``check`` until it is true; returns the perf_counter() time it was seen true."""
    deadline = time.perf_counter() + timeout
    while True:
        if await check():
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"not done after {timeout:g} s")
        await asyncio.sleep(interval)


async def stop_pgq_nb_worker(worker: pgq_nb.Worker, task: asyncio.Task[Any]) -> None:
    """Ask a pgq_nb worker to stop and wait for it (running jobs finish first)."""
    worker.request_stop()
    try:
        await asyncio.wait_for(task, timeout=STOP_TIMEOUT)
    except TimeoutError:
        log(f"  (the pgq_nb worker did not stop within {STOP_TIMEOUT:g} s; cancelled it)")


def start_pgq_nb_worker(
    q: pgq_nb.AsyncQueue, *, concurrency: int | None = None, batch_size: int | None = None
) -> tuple[pgq_nb.Worker, asyncio.Task[Any]]:
    """Start a pgq_nb worker as a task on the running (pgq_nb) loop; None = its default."""
    kwargs: dict[str, Any] = {}
    if concurrency is not None:
        kwargs["concurrency"] = concurrency
    if batch_size is not None:
        kwargs["batch_size"] = batch_size
    worker = pgq_nb.Worker(q, **kwargs)
    return worker, asyncio.get_running_loop().create_task(worker.run())
