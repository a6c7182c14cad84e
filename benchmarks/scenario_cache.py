"""pgq_nb alone: what a cached entrypoint's look-up costs (issue #21, item 4).

N jobs with small distinct JSON payloads are drained by one worker (defaults: concurrency and
batch 32) three ways, in one schema, the order turned each repeat: a plain entrypoint; a
``cache=True`` one whose keys are all new (every job looks up, misses, runs and records its
key); the same payloads again (every job is a hit: no handler runs). The handlers are no-ops,
so the difference is the look-up (one statement per claimed batch, in the claim's
transaction) and the keys (sha256 of canonical JSON). Each drain is timed from the worker's
start to the live table seen empty; jobs/s per way, and the ratio of the misses to the plain.
"""

from __future__ import annotations

import time

import pgq_nb
from benchmarks.common import (
    Context,
    Row,
    fresh_pgq_nb,
    log,
    noop,
    on_pgq_nb_loop,
    pgq_nb_live_empty,
    start_pgq_nb_worker,
    stop_pgq_nb_worker,
    wait_until,
)

WAYS = ("plain", "cached, all misses", "cached, all hits")


async def _drain(q: pgq_nb.AsyncQueue, cap: float) -> float:
    began = time.perf_counter()
    worker, task = start_pgq_nb_worker(q)
    try:
        done = await wait_until(lambda: pgq_nb_live_empty(q), timeout=cap)
    finally:
        await stop_pgq_nb_worker(worker, task)
    return done - began


def run(ctx: Context) -> list[Row]:
    n = ctx.sizes.drain_jobs
    rates: dict[str, list[float]] = {way: [] for way in WAYS}
    with fresh_pgq_nb(ctx.dsn, ctx.schema("cache", 0)) as q:
        q.entrypoint("bench_plain")(noop)
        q.entrypoint("bench_cached", cache=True, version="1")(noop)
        for repeat in range(ctx.sizes.repeats):
            first = [{"repeat": repeat, "i": i, "way": "plain"} for i in range(n)]
            cached = [{"repeat": repeat, "i": i, "way": "cached"} for i in range(n)]
            jobs = {
                "plain": ("bench_plain", first),
                "cached, all misses": ("bench_cached", cached),
                "cached, all hits": ("bench_cached", cached),
            }
            # hits need their misses first; plain goes first or last by turns
            order = [*WAYS] if repeat % 2 == 0 else [*WAYS[1:], WAYS[0]]
            for way in order:
                entrypoint, payloads = jobs[way]
                for start in range(0, n, 10_000):
                    part = payloads[start : start + 10_000]
                    q.enqueue([entrypoint] * len(part), part)
                took = on_pgq_nb_loop(_drain(q.aio, ctx.sizes.drain_cap * 4))
                rates[way].append(n / took)
                log(f"  cache        {way}: {n / took:,.0f} jobs/s")
    plain = sorted(rates["plain"])[len(rates["plain"]) // 2]
    rows = []
    for way in WAYS:
        median = sorted(rates[way])[len(rates[way]) // 2]
        rows.append(
            Row(
                scenario=f"drain {n:,} no-op jobs, {way} (pgq_nb alone)",
                unit="jobs/s",
                higher_is_better=True,
                pgq_nb=rates[way],
                note=f"x{median / plain:.2f} of plain" if way != "plain" else "",
            )
        )
    return rows
