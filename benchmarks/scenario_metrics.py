"""pgq_nb alone: one Prometheus scrape (``pgq_nb.metrics.render``) over a long history.

The same data as the ``stats`` scenario (``scenario_stats._fill``: history rows straight into
``history`` with matching ``finished_counts``, 1,000 queued jobs, ANALYZE), plus 20 schedules
and 50 live workers' rows. A scrape reads the counters, the live set and the small tables,
never history, so its time should not grow with history; it reads the live set in full (as
q.stats() does), so it is timed again with a backlog of 100,000 queued jobs. Median of the
runs after two warm-up scrapes.
"""

from __future__ import annotations

import statistics
import time

import pgq_nb
from benchmarks.common import Context, Row, fresh_pgq_nb, log, on_pgq_nb_loop
from benchmarks.scenario_stats import LIVE_JOBS, WARMUP, _fill

#: queued jobs for the second measurement: a backlog
BACKLOG = 100_000


async def _extras(q: pgq_nb.AsyncQueue) -> None:
    s = q.schema
    async with q.pool.acquire() as conn:
        await conn.execute(
            f'INSERT INTO "{s}".schedules '
            "(name, entrypoint, expression, tz, catch_up, next_run) "
            "SELECT 'bench_schedule_' || g, 'bench_ep_' || (g % 8), '0 * * * *', 'UTC', "
            "'latest', now() "
            "FROM generate_series(1, 20) AS g"
        )
        await conn.execute(
            f'INSERT INTO "{s}".workers (host, pid, concurrency) '
            "SELECT 'bench', g, 32 FROM generate_series(1, 50) AS g"
        )


async def _backlog(q: pgq_nb.AsyncQueue, n: int) -> None:
    async with q.pool.acquire() as conn:
        await conn.execute(
            f'INSERT INTO "{q.schema}".jobs (entrypoint, payload) '
            "SELECT 'bench_ep_' || (g % 8), NULL FROM generate_series(1, $1) AS g",
            n,
        )
        await conn.execute(f'ANALYZE "{q.schema}".jobs')


def _scrapes(q: pgq_nb.Queue, runs: int) -> list[float]:
    from pgq_nb import metrics  # the metrics extra (prometheus_client)

    times: list[float] = []
    for i in range(WARMUP + runs):
        began = time.perf_counter()
        body, _ = on_pgq_nb_loop(metrics.render(q.aio.store))
        if i >= WARMUP:
            times.append((time.perf_counter() - began) * 1000)
    if b"pgq_nb_up 1.0" not in body:
        raise RuntimeError(f"the scrape could not read the database: {body[:500]!r}")
    return times


def run(ctx: Context) -> list[Row]:
    n = ctx.sizes.history_rows
    runs = ctx.sizes.stats_runs
    with fresh_pgq_nb(ctx.dsn, ctx.schema("metrics", 0)) as q:
        began = time.perf_counter()
        on_pgq_nb_loop(_fill(q.aio, n))
        on_pgq_nb_loop(_extras(q.aio))
        log(f"  metrics      {n:,} history rows inserted in {time.perf_counter() - began:.1f} s")
        times = _scrapes(q, runs)
        # the live set is read in full (as q.stats() reads it): its cost grows with a backlog
        on_pgq_nb_loop(_backlog(q.aio, BACKLOG - LIVE_JOBS))
        backlog = _scrapes(q, runs)
    median, with_backlog = statistics.median(times), statistics.median(backlog)
    log(f"  metrics      one scrape: median {median:.2f} ms, max {max(times):.2f} ms")
    log(f"  metrics      with {BACKLOG:,} queued: median {with_backlog:.2f} ms")
    note = f"pgq_nb.metrics.render(), median of {runs}"
    return [
        Row(
            scenario=f"metrics scrape, {n:,} history rows, {LIVE_JOBS:,} queued (pgq_nb alone)",
            unit="ms",
            higher_is_better=False,
            pgq_nb=[median],
            target="<= 50 ms",
            note=note,
        ),
        Row(
            scenario=f"metrics scrape, {n:,} history rows, {BACKLOG:,} queued (pgq_nb alone)",
            unit="ms",
            higher_is_better=False,
            pgq_nb=[with_backlog],
            target="<= 200 ms",
            note=note,
        ),
    ]
