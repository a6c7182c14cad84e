"""drain: N no-op jobs already queued; one worker empties the queue.

Each system's jobs are queued through its own bulk enqueue (so the table is in the state a user
leaves it in: pgq_nb runs ANALYZE after a bulk enqueue, PgQueuer does not), then the clock
starts, the worker starts, and the clock stops when the live table is seen empty (polled every
20 ms on another connection): both systems delete a job from their queue table in the same
statement that records it finished. The finished counts are checked afterwards. A run slower
than the cap (``Sizes.drain_cap``) stops there and reports the rate so far, with a note.
``--analyze-pgqueuer`` gives PgQueuer an ANALYZE after its bulk enqueue (the conservative
comparison; without it PgQueuer's claim uses a stale plan, measured 4x slower at 50,000).

Two variants: both at their defaults (pgq_nb ``Worker(q.aio)``: concurrency 32, batch 32;
PgQueuer ``run()``: batch_size 10), and both tuned for a 2-core machine (``--tuned-*``).
"""

from __future__ import annotations

import asyncio
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
    pgq_nb_enqueue_noops,
    pgq_nb_live_empty,
    pgq_nb_succeeded,
    sides,
    start_pgq_nb_worker,
    stop_pgq_nb_worker,
    wait_until,
)

ENTRYPOINT = "bench_drain"


Outcome = tuple[float, str]  # jobs/s, and a note when the run hit the time cap


async def _timed_drain(
    n: int,
    cap: float,
    empty: Callable[[], Awaitable[bool]],
    finished: Callable[[], Awaitable[int]],
    began: float,
) -> Outcome:
    """Wait for the queue to empty; past ``cap`` seconds, report the rate so far instead."""
    try:
        done = await wait_until(empty, timeout=cap)
    except TimeoutError:
        so_far, elapsed = await finished(), time.perf_counter() - began
        return so_far / elapsed, f"capped at {cap:g} s with {so_far:,} of {n:,} done"
    return n / (done - began), ""


async def _pgq_nb_drain(
    q: pgq_nb.AsyncQueue, n: int, cap: float, concurrency: int | None, batch: int | None
) -> Outcome:
    began = time.perf_counter()
    worker, task = start_pgq_nb_worker(q, concurrency=concurrency, batch_size=batch)
    try:
        rate, capped = await _timed_drain(
            n, cap, lambda: pgq_nb_live_empty(q), lambda: pgq_nb_succeeded(q), began
        )
    finally:
        await stop_pgq_nb_worker(worker, task)
    finished = await pgq_nb_succeeded(q)
    if not capped and finished != n:
        raise RuntimeError(f"pgq_nb drain: {finished} jobs succeeded, expected {n}")
    return rate, capped


def _pgq_nb_once(ctx: Context, name: str, repeat: int, tuned: bool) -> Outcome:
    n = ctx.sizes.drain_jobs
    concurrency, batch = ctx.tuned_pgq_nb if tuned else (None, None)
    with fresh_pgq_nb(ctx.dsn, ctx.schema(name, repeat)) as q:
        q.entrypoint(ENTRYPOINT)(noop)
        pgq_nb_enqueue_noops(q, ENTRYPOINT, n)
        cap = ctx.sizes.drain_cap
        return on_pgq_nb_loop(_pgq_nb_drain(q.aio, n, cap, concurrency, batch))


async def _pgqueuer_once(
    ctx: Context, name: str, repeat: int, settings: pgqueuer_env.Settings
) -> Outcome:
    n = ctx.sizes.drain_jobs
    async with pgqueuer_env.fresh_database(
        ctx.pgqueuer, ctx.admin_dsn or ctx.dsn, ctx.database(name, repeat)
    ) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await pgqueuer_env.enqueue_noops(
                pgqueuer_env.queries_on(ctx.pgqueuer, conn), ENTRYPOINT, n
            )
            if ctx.analyze_pgqueuer:
                await conn.execute("ANALYZE pgqueuer")
            worker = pgqueuer_env.Worker(ctx.pgqueuer, dsn, settings)
            await worker.open({ENTRYPOINT: noop})
            began = time.perf_counter()
            worker.start()
            try:
                rate, capped = await _timed_drain(
                    n,
                    ctx.sizes.drain_cap,
                    lambda: pgqueuer_env.queue_empty(conn),
                    lambda: pgqueuer_env.succeeded(conn),
                    began,
                )
            finally:
                await worker.stop()
            finished = await pgqueuer_env.succeeded(conn)
        finally:
            await conn.close()
    if not capped and finished != n:
        raise RuntimeError(f"PgQueuer drain: {finished} jobs logged successful, expected {n}")
    return rate, capped


def _variant(ctx: Context, tuned: bool) -> Row:
    name = "drain_tuned" if tuned else "drain"
    settings = (
        pgqueuer_env.Settings(
            batch_size=ctx.tuned_pgqueuer[0], max_concurrent_tasks=ctx.tuned_pgqueuer[1]
        )
        if tuned
        else pgqueuer_env.Settings()
    )
    if tuned:
        c, b = ctx.tuned_pgq_nb
        ours = f"concurrency={c}, batch_size={b}"
    else:
        ours = "defaults (concurrency=32, batch_size=32)"
    stats = "ANALYZEd after its bulk enqueue" if ctx.analyze_pgqueuer else "no ANALYZE"
    row = Row(
        scenario=f"drain {ctx.sizes.drain_jobs:,}, {'tuned' if tuned else 'defaults'}",
        unit="jobs/s",
        higher_is_better=True,
        target=">= 1.5x" if tuned else ">= 2x",
        note=f"pgq_nb: {ours}; PgQueuer: {settings.describe()}, {stats}",
    )
    capped: list[str] = []
    for repeat in range(ctx.sizes.repeats):
        for side in sides(repeat):
            if side == PGQ_NB:
                rate, cap_note = _pgq_nb_once(ctx, name, repeat, tuned)
                row.pgq_nb.append(rate)
            else:
                rate, cap_note = asyncio.run(_pgqueuer_once(ctx, name, repeat, settings))
                row.pgqueuer.append(rate)
            if cap_note:
                capped.append(f"{side} repeat {repeat + 1} {cap_note}")
            log(f"  {name:12s} repeat {repeat + 1}  {side:8s} {rate:12,.0f} jobs/s  {cap_note}")
    if capped:
        row.note += "; " + "; ".join(capped)
    return row


def run(ctx: Context) -> list[Row]:
    return [_variant(ctx, tuned=False), _variant(ctx, tuned=True)]
