"""latency: jobs enqueued one at a time, 10 ms apart, to an idle worker (defaults).

The producer and the worker share one event loop and one clock (``time.perf_counter``): the
producer notes the time just before it calls enqueue, the handler notes the time it starts,
keyed by the job's number in its payload. Figures are p50 and p99 of the difference, in ms.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

import pgq_nb
from benchmarks import pgqueuer_env
from benchmarks.common import (
    PGQ_NB,
    Context,
    Row,
    fresh_pgq_nb,
    log,
    on_pgq_nb_loop,
    percentile,
    sides,
    start_pgq_nb_worker,
    stop_pgq_nb_worker,
    wait_until,
)

ENTRYPOINT = "bench_latency"
SETTLE = 0.5  # seconds the worker idles before the first job


async def _send(
    ctx: Context, enqueue: Callable[[int], Awaitable[object]], started: dict[int, float]
) -> list[float]:
    """Enqueue the jobs on schedule; returns each one's latency in ms."""
    n, gap = ctx.sizes.latency_jobs, ctx.sizes.latency_gap
    sent: dict[int, float] = {}
    await asyncio.sleep(SETTLE)
    next_at = time.perf_counter()
    for i in range(n):
        sent[i] = time.perf_counter()
        await enqueue(i)
        next_at += gap
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    async def all_started() -> bool:
        return len(started) >= n

    await wait_until(all_started, timeout=30)
    return [(started[i] - sent[i]) * 1000 for i in range(n)]


async def _pgq_nb_latency(ctx: Context, q: pgq_nb.AsyncQueue, started: dict[int, float]) -> Any:
    worker, task = start_pgq_nb_worker(q)
    try:
        return await _send(ctx, lambda i: q.enqueue(ENTRYPOINT, {"i": i}), started)
    finally:
        await stop_pgq_nb_worker(worker, task)


def _pgq_nb_once(ctx: Context, repeat: int) -> list[float]:
    started: dict[int, float] = {}

    async def handler(job: pgq_nb.Job) -> None:
        started[job.data["i"]] = time.perf_counter()

    with fresh_pgq_nb(ctx.dsn, ctx.schema("latency", repeat)) as q:
        q.entrypoint(ENTRYPOINT)(handler)
        result: list[float] = on_pgq_nb_loop(_pgq_nb_latency(ctx, q.aio, started))
        return result


async def _pgqueuer_once(ctx: Context, repeat: int) -> list[float]:
    started: dict[int, float] = {}

    async def handler(job: Any) -> None:
        started[int(job.payload)] = time.perf_counter()

    async with pgqueuer_env.fresh_database(
        ctx.pgqueuer, ctx.admin_dsn or ctx.dsn, ctx.database("latency", repeat)
    ) as dsn:
        producer_conn = await asyncpg.connect(dsn)
        worker = pgqueuer_env.Worker(ctx.pgqueuer, dsn)
        try:
            queries = pgqueuer_env.queries_on(ctx.pgqueuer, producer_conn)
            await worker.open({ENTRYPOINT: handler})
            worker.start()
            try:
                return await _send(
                    ctx, lambda i: queries.enqueue(ENTRYPOINT, str(i).encode(), 0), started
                )
            finally:
                await worker.stop()
        finally:
            await producer_conn.close()


def run(ctx: Context) -> list[Row]:
    n = ctx.sizes.latency_jobs
    p50 = Row(
        scenario=f"latency p50 ({n} jobs, 10 ms apart)",
        unit="ms",
        higher_is_better=False,
        target="pgq_nb <= 5 ms",
    )
    p99 = Row(scenario="latency p99", unit="ms", higher_is_better=False, target="pgq_nb <= 50 ms")
    for repeat in range(ctx.sizes.repeats):
        for side in sides(repeat):
            if side == PGQ_NB:
                ms = _pgq_nb_once(ctx, repeat)
                p50.pgq_nb.append(percentile(ms, 50))
                p99.pgq_nb.append(percentile(ms, 99))
            else:
                ms = asyncio.run(_pgqueuer_once(ctx, repeat))
                p50.pgqueuer.append(percentile(ms, 50))
                p99.pgqueuer.append(percentile(ms, 99))
            log(
                f"  latency      repeat {repeat + 1}  {side:8s} p50 {percentile(ms, 50):7.2f} ms"
                f"  p99 {percentile(ms, 99):7.2f} ms  max {max(ms):7.2f} ms"
            )
    p50.note = "from just before the enqueue call to the handler's first line"
    p50.settings = {
        "pgq_nb": "Worker(q.aio) defaults (concurrency=32, batch_size=32); q.enqueue per job",
        "PgQueuer": "run() defaults (batch_size=10); queries.enqueue per job",
    }
    return [p50, p99]
