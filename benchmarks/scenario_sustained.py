"""sustained: one producer and one worker together, for a fixed time; tuned, then defaults.

The producer enqueues 100 small JSON jobs per call, back to back, on its own connection, in
the same event loop as the worker (as PgQueuer's own benchmark tool does). The figure is jobs
finished per second between the end of a 1 s warm-up and the end of the window, counted in the
database (pgq_nb's finished counters, PgQueuer's log of successful jobs).

Tuned against tuned first (the headline): pgq_nb with ``--tuned-pgq-nb`` and PgQueuer with
``--tuned-pgqueuer`` (or, when the drain ran before on this transport, what its sweeps chose;
otherwise pgq_nb 128/128 and PgQueuer batch 100); then both at their defaults. PgQueuer's table
starts empty and its claim plans as it fills, so it needs no ANALYZE here.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import asyncpg

import pgq_nb
from benchmarks import pgqueuer_env
from benchmarks.common import (
    PGQ_NB,
    Context,
    Row,
    fresh_pgq_nb,
    log,
    noop,
    on_pgq_nb_loop,
    pgq_nb_succeeded,
    sides,
    start_pgq_nb_worker,
    stop_pgq_nb_worker,
)

ENTRYPOINT = "bench_sustained"


async def _window(
    ctx: Context,
    produce: Callable[[list[dict[str, int]]], Awaitable[object]],
    finished: Callable[[], Awaitable[int]],
) -> tuple[float, int]:
    """Run the producer for the window; returns (finished jobs/s after warm-up, produced)."""
    batch = ctx.sizes.sustained_batch
    stop = asyncio.Event()
    produced = 0

    async def producer() -> None:
        nonlocal produced
        while not stop.is_set():
            await produce([{"i": produced + k} for k in range(batch)])
            produced += batch

    task = asyncio.get_running_loop().create_task(producer())
    try:
        await asyncio.sleep(ctx.sizes.sustained_warmup)
        t0 = time.perf_counter()
        n0 = await finished()
        await asyncio.sleep(ctx.sizes.sustained_seconds - ctx.sizes.sustained_warmup)
        t1 = time.perf_counter()
        n1 = await finished()
    finally:
        stop.set()
        await task
    return (n1 - n0) / (t1 - t0), produced


Tuning = tuple[int, int] | None  # pgq_nb (concurrency, batch_size); None: defaults


async def _pgq_nb_sustained(
    ctx: Context, q: pgq_nb.AsyncQueue, tuning: Tuning
) -> tuple[float, int]:
    async def produce(payloads: list[dict[str, int]]) -> object:
        return await q.enqueue([ENTRYPOINT] * len(payloads), payloads, 0)

    c, b = tuning if tuning is not None else (None, None)
    worker, task = start_pgq_nb_worker(q, concurrency=c, batch_size=b)
    try:
        return await _window(ctx, produce, lambda: pgq_nb_succeeded(q))
    finally:
        await stop_pgq_nb_worker(worker, task)


def _pgq_nb_once(ctx: Context, repeat: int, tuning: Tuning) -> tuple[float, int]:
    with fresh_pgq_nb(ctx.dsn, ctx.schema("sustained", repeat)) as q:
        q.entrypoint(ENTRYPOINT)(noop)
        return on_pgq_nb_loop(_pgq_nb_sustained(ctx, q.aio, tuning))


async def _pgqueuer_once(
    ctx: Context, repeat: int, settings: pgqueuer_env.Settings
) -> tuple[float, int]:
    async with pgqueuer_env.fresh_database(
        ctx.pgqueuer, ctx.admin_dsn or ctx.dsn, ctx.database("sustained", repeat)
    ) as dsn:
        producer_conn = await asyncpg.connect(dsn)
        counter_conn = await asyncpg.connect(dsn)
        worker = pgqueuer_env.Worker(ctx.pgqueuer, dsn, settings)
        try:
            queries = pgqueuer_env.queries_on(ctx.pgqueuer, producer_conn)

            async def produce(payloads: list[dict[str, int]]) -> object:
                return await queries.enqueue(
                    [ENTRYPOINT] * len(payloads),
                    [json.dumps(p, separators=(",", ":")).encode() for p in payloads],
                    [0] * len(payloads),
                )

            await worker.open({ENTRYPOINT: noop})
            worker.start()
            try:
                return await _window(ctx, produce, lambda: pgqueuer_env.succeeded(counter_conn))
            finally:
                await worker.stop()
        finally:
            await producer_conn.close()
            await counter_conn.close()


def _variant(ctx: Context, tuned: bool) -> Row:
    seconds = ctx.sizes.sustained_seconds
    tuning: Tuning = ctx.tuned_pgq_nb if tuned else None
    if tuned:
        batch, tasks = ctx.tuned_pgqueuer or (100, None)
        settings = pgqueuer_env.Settings(batch_size=batch, max_concurrent_tasks=tasks)
        ours = f"concurrency={ctx.tuned_pgq_nb[0]}, batch_size={ctx.tuned_pgq_nb[1]}"
    else:
        settings = pgqueuer_env.Settings()
        ours = "defaults (concurrency=32, batch_size=32)"
    row = Row(
        scenario=f"sustained {seconds:g} s, {'tuned vs tuned' if tuned else 'defaults'}",
        unit="jobs/s",
        higher_is_better=True,
        target=">= 1.5x" if tuned else ">= 2x",
        settings={"pgq_nb": ours, "PgQueuer": settings.describe()},
        headline=tuned,
    )
    name = "sustained_tuned" if tuned else "sustained"
    offered: dict[str, list[float]] = {"pgq_nb": [], "PgQueuer": []}
    for repeat in range(ctx.sizes.repeats):
        for side in sides(repeat):
            if side == PGQ_NB:
                rate, produced = _pgq_nb_once(ctx, repeat, tuning)
                row.pgq_nb.append(rate)
            else:
                rate, produced = asyncio.run(_pgqueuer_once(ctx, repeat, settings))
                row.pgqueuer.append(rate)
            offered[side].append(produced / seconds)
            log(
                f"  {name:15s} repeat {repeat + 1}  {side:8s} {rate:12,.0f} jobs/s done "
                f"({produced / seconds:,.0f}/s enqueued)"
            )
    row.note = f"pgq_nb: {ours}; PgQueuer: {settings.describe()}; "
    row.note += "enqueued/s (producer, same loop): " + ", ".join(
        f"{side} {sum(v) / len(v):,.0f}" for side, v in offered.items() if v
    )
    return row


def run(ctx: Context) -> list[Row]:
    """Tuned against tuned first (the headline), then both at their defaults."""
    return [_variant(ctx, tuned=True), _variant(ctx, tuned=False)]
