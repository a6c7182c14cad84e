"""pgq_nb alone: enqueue and drain rates of no-op jobs, the core's own figures.

``Sizes.core_jobs`` jobs with no payload (50,000; 10,000 in --quick) queued with
``q.enqueue([...])`` per 10,000 (timed), then drained with
``q.run_until_idle(concurrency=32)`` (timed; every job checked to have succeeded). What the
notebook API costs end to end, with no PgQueuer beside it: the figure to compare old code with
new on one server. Each repeat in a fresh schema; medians.
"""

from __future__ import annotations

import time

from benchmarks.common import Context, Row, fresh_pgq_nb, log, noop

ENTRYPOINT = "bench_core"


def _once(ctx: Context, repeat: int) -> tuple[float, float]:
    """(enqueue jobs/s, drain jobs/s) of one run."""
    n, chunk = ctx.sizes.core_jobs, ctx.sizes.core_chunk
    with fresh_pgq_nb(ctx.dsn, ctx.schema("core", repeat)) as q:
        q.entrypoint(ENTRYPOINT)(noop)
        began = time.perf_counter()
        for start in range(0, n, chunk):
            k = min(chunk, n - start)
            q.enqueue([ENTRYPOINT] * k, [None] * k, [0] * k)
        enqueued = time.perf_counter() - began
        began = time.perf_counter()
        stats = q.run_until_idle(concurrency=ctx.sizes.core_concurrency, wait_for_scheduled=0)
        drained = time.perf_counter() - began
    if stats.succeeded != n:
        raise RuntimeError(f"core drain: {stats.succeeded} jobs succeeded, expected {n}")
    return n / enqueued, n / drained


def run(ctx: Context) -> list[Row]:
    n, chunk = ctx.sizes.core_jobs, ctx.sizes.core_chunk
    enqueue = Row(
        scenario=f"core enqueue {n:,} no-op jobs (pgq_nb alone)",
        unit="jobs/s",
        higher_is_better=True,
        note=f"q.enqueue([...]) per {chunk:,}",
    )
    drain = Row(
        scenario=f"core drain {n:,} no-op jobs (pgq_nb alone)",
        unit="jobs/s",
        higher_is_better=True,
        note=f"q.run_until_idle(concurrency={ctx.sizes.core_concurrency})",
    )
    for repeat in range(ctx.sizes.repeats):
        enqueued, drained = _once(ctx, repeat)
        enqueue.pgq_nb.append(enqueued)
        drain.pgq_nb.append(drained)
        log(
            f"  core         repeat {repeat + 1}  enqueue {enqueued:10,.0f} jobs/s  "
            f"drain {drained:10,.0f} jobs/s"
        )
    return [enqueue, drain]
