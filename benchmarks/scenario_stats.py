"""pgq_nb alone: the queue overview (``q.stats()``) over a long history.

History rows are inserted straight into a fresh schema's ``history`` table (INSERT ... SELECT
generate_series: 8 entrypoints, 1 % failed, spread over the last days), with matching
``finished_counts`` rows (the counters the finishing statement keeps) and 1,000 queued jobs,
then ANALYZE. ``q.stats()`` is timed through the blocking API a notebook calls; median of the
runs after two warm-up calls.
"""

from __future__ import annotations

import statistics
import time

import pgq_nb
from benchmarks.common import Context, Row, fresh_pgq_nb, log, on_pgq_nb_loop

LIVE_JOBS = 1_000
WARMUP = 2


async def _fill(q: pgq_nb.AsyncQueue, n: int) -> None:
    s = q.schema
    async with q.pool.acquire() as conn:
        await conn.execute(
            f"""
            INSERT INTO "{s}".history (id, entrypoint, priority, status, attempts, error,
                worker_id, created, execute_after, started, finished)
            SELECT g, 'bench_ep_' || (g % 8), 0,
                CASE WHEN g % 100 = 0 THEN 'failed' ELSE 'succeeded' END,
                CASE WHEN g % 100 = 0 THEN 3 ELSE 1 END,
                CASE WHEN g % 100 = 0 THEN 'RuntimeError: benchmark' END,
                g % 16,
                t - interval '2 seconds', t - interval '2 seconds', t - interval '1 second', t
            FROM generate_series(1, $1) AS g,
                LATERAL (SELECT now() - make_interval(secs => ($1 - g) * 0.2) AS t) AS x
            """,
            n,
        )
        await conn.execute(
            f"""
            INSERT INTO "{s}".finished_counts (entrypoint, status, shard, n)
            SELECT entrypoint, status, (worker_id % 16)::smallint, count(*)
            FROM "{s}".history GROUP BY 1, 2, 3
            """
        )
        await conn.execute(
            f'INSERT INTO "{s}".jobs (entrypoint, payload) '
            "SELECT 'bench_ep_' || (g % 8), NULL FROM generate_series(1, $1) AS g",
            LIVE_JOBS,
        )
        for table in ("history", "finished_counts", "jobs"):
            await conn.execute(f'ANALYZE "{s}".{table}')


def run(ctx: Context) -> list[Row]:
    n = ctx.sizes.history_rows
    with fresh_pgq_nb(ctx.dsn, ctx.schema("stats", 0)) as q:
        began = time.perf_counter()
        on_pgq_nb_loop(_fill(q.aio, n))
        log(f"  stats        {n:,} history rows inserted in {time.perf_counter() - began:.1f} s")
        times: list[float] = []
        for i in range(WARMUP + ctx.sizes.stats_runs):
            began = time.perf_counter()
            q.stats()
            if i >= WARMUP:
                times.append((time.perf_counter() - began) * 1000)
    median = statistics.median(times)
    log(f"  stats        q.stats(): median {median:.2f} ms, max {max(times):.2f} ms")
    return [
        Row(
            scenario=f"stats, {n:,} history rows (pgq_nb alone)",
            unit="ms",
            higher_is_better=False,
            pgq_nb=[median],
            target="<= 200 ms",
            note=f"q.stats(), median of {ctx.sizes.stats_runs}",
        )
    ]
