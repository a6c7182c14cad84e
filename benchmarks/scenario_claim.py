"""pgq_nb alone: the claim statement's cost with a big backlog against a small one.

Jobs are inserted straight into a fresh schema's ``jobs`` table (INSERT ... SELECT
generate_series; the enqueue API is not what is measured here), then ANALYZE. The claim query
(``q.aio.queries["claim_jobs"]``, as the worker runs it) is timed inside a transaction that is
rolled back, so every run claims from the same backlog; the figure is the median of the runs
after a few warm-up ones. The plan is noted (does it walk the partial claim index?).
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import pgq_nb
from benchmarks.common import Context, Row, fresh_pgq_nb, log, noop, on_pgq_nb_loop
from pgq_nb.claiming import CLAIM_PLAN

ENTRYPOINT = "bench_claim"
WARMUP = 10
WORKER_ID = 1  # claims are rolled back; no worker row is needed


def _nodes(plan: dict[str, Any]) -> list[str]:
    """Node descriptions of a JSON plan, outermost first."""
    label = plan.get("Node Type", "?")
    if "Index Name" in plan:
        label += f" using {plan['Index Name']}"
    out = [label]
    for child in plan.get("Plans", []):
        out.extend(_nodes(child))
    return out


async def _fill_and_time(q: pgq_nb.AsyncQueue, n: int, runs: int, batch: int) -> tuple[float, str]:
    schema = q.schema
    claim = q.queries["claim_jobs"]
    async with q.pool.acquire() as conn:
        await conn.execute(
            f'INSERT INTO "{schema}".jobs (entrypoint, payload) '
            "SELECT $1, NULL FROM generate_series(1, $2)",
            ENTRYPOINT,
            n,
        )
        await conn.execute(f'ANALYZE "{schema}".jobs')
        inside = await conn.fetchval(q.queries["claim_source"], schema)  # claim_batch's own
        await conn.execute(CLAIM_PLAN)  # the settings the function runs it with
        try:
            raw = await conn.fetchval(
                f"EXPLAIN (FORMAT JSON) {inside}", [ENTRYPOINT], batch, WORKER_ID
            )
        finally:
            await conn.execute("ROLLBACK")
        plan = json.loads(raw) if isinstance(raw, str) else raw
        scans = [x for x in _nodes(plan[0]["Plan"]) if "Scan" in x or "Sort" in x]
        times: list[float] = []
        for i in range(WARMUP + runs):
            tr = conn.transaction()
            await tr.start()
            try:
                began = time.perf_counter()
                rows = await conn.fetch(claim, [ENTRYPOINT], batch, WORKER_ID)
                elapsed = time.perf_counter() - began
            finally:
                await tr.rollback()
            if len(rows) != min(batch, n):
                raise RuntimeError(f"claim returned {len(rows)} rows, expected {batch}")
            if i >= WARMUP:
                times.append(elapsed * 1000)
    return statistics.median(times), "; ".join(scans)


def _measure(ctx: Context, n: int) -> tuple[float, str]:
    with fresh_pgq_nb(ctx.dsn, ctx.schema(f"claim{n}", 0)) as q:
        q.entrypoint(ENTRYPOINT)(noop)
        return on_pgq_nb_loop(_fill_and_time(q.aio, n, ctx.sizes.claim_runs, ctx.sizes.claim_batch))


def run(ctx: Context) -> list[Row]:
    small_n, big_n = ctx.sizes.claim_small, ctx.sizes.claim_big
    batch, runs = ctx.sizes.claim_batch, ctx.sizes.claim_runs
    small, small_plan = _measure(ctx, small_n)
    log(f"  claim        {small_n:>9,} queued  {small:7.3f} ms  ({small_plan})")
    big, big_plan = _measure(ctx, big_n)
    log(f"  claim        {big_n:>9,} queued  {big:7.3f} ms  ({big_plan})")
    note = f"claim of {batch} in a rolled-back transaction, median of {runs}"
    return [
        Row(
            scenario=f"claim, {small_n:,} queued (pgq_nb alone)",
            unit="ms",
            higher_is_better=False,
            pgq_nb=[small],
            note=f"{note}; plan: {small_plan}",
        ),
        Row(
            scenario=f"claim, {big_n:,} queued (pgq_nb alone)",
            unit="ms",
            higher_is_better=False,
            pgq_nb=[big],
            ratio=big / small,
            target="ratio <= 1.5 (time vs 10,000 queued)",
            note=f"ratio column = this time / the {small_n:,} time; plan: {big_plan}",
        ),
    ]
