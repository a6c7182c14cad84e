"""pgq_nb alone: ``q.history(tag=...)`` over a long history (issue #20, item 2).

History rows are inserted straight into a fresh schema's ``history`` table (INSERT ... SELECT
generate_series; full run: 1,000,000 rows), every one tagged: the tag ``all``, one of 100
``exp-N`` tags, and a ``run-N`` tag shared by 100 rows; meta ``{"run": N}`` likewise. Then
ANALYZE, and the filtered views are timed through the blocking API a notebook calls: a rare
tag (100 rows), a common one (1 % of history, its newest 1,000: with the default cap of
10,000 rows the time goes to building the frame, as for an unfiltered q.history()) and a meta
containment (100 rows). Median of the runs after two warm-up calls; the target is 100 ms.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import pgq_nb
from benchmarks.common import Context, Row, fresh_pgq_nb, log, on_pgq_nb_loop

WARMUP = 2


async def _fill(q: pgq_nb.AsyncQueue, n: int) -> None:
    s = q.schema
    async with q.pool.acquire() as conn:
        await conn.execute(
            f"""
            INSERT INTO "{s}".history (id, entrypoint, priority, status, attempts, worker_id,
                created, execute_after, started, finished, tags, meta)
            SELECT g, 'bench_ep_' || (g % 8), 0, 'succeeded', 1, g % 16,
                t - interval '2 seconds', t - interval '2 seconds', t - interval '1 second', t,
                ARRAY['all', 'exp-' || (g % 100), 'run-' || (g / 100)],
                jsonb_build_object('run', g / 100)
            FROM generate_series(1, $1) AS g,
                LATERAL (SELECT now() - make_interval(secs => ($1 - g) * 0.2) AS t) AS x
            """,
            n,
        )
        await conn.execute(f'ANALYZE "{s}".history')


def _timed(call: Callable[[], Any], runs: int) -> tuple[float, int]:
    times: list[float] = []
    rows = 0
    for i in range(WARMUP + runs):
        began = time.perf_counter()
        rows = len(call())
        if i >= WARMUP:
            times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), rows


def run(ctx: Context) -> list[Row]:
    n = ctx.sizes.history_rows
    runs = ctx.sizes.stats_runs
    rare = f"run-{n // 200}"
    with fresh_pgq_nb(ctx.dsn, ctx.schema("tags", 0)) as q:
        began = time.perf_counter()
        on_pgq_nb_loop(_fill(q.aio, n))
        took = time.perf_counter() - began
        log(f"  tags         {n:,} tagged history rows inserted in {took:.1f} s")
        cases = {
            f"q.history(tag={rare!r}), 100 rows": lambda: q.history(tag=rare, limit=None),
            "q.history(tag='exp-7', limit=1000), 1 % of history": lambda: q.history(
                tag="exp-7", limit=1000
            ),
            "q.history(meta={'run': N}), 100 rows": lambda: q.history(
                meta={"run": n // 300}, limit=None
            ),
        }
        results = {what: _timed(call, runs) for what, call in cases.items()}
    rows = []
    for what, (median, found) in results.items():
        log(f"  tags         {what}: median {median:.2f} ms ({found} rows)")
        rows.append(
            Row(
                scenario=f"{what}, {n:,} history rows (pgq_nb alone)",
                unit="ms",
                higher_is_better=False,
                pgq_nb=[median],
                target="< 100 ms",
                note=f"median of {runs}",
            )
        )
    return rows
