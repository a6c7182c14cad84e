"""ceiling: what the worker's own statements cost, with no worker around them (issue #22).

N no-op jobs are queued; then one asyncpg connection runs exactly the statements a pgq_nb
worker runs per batch, in the same order, in a tight loop with nothing else:
``finish_and_claim`` (the previous batch's completions, every job succeeded with no result,
and the next claim: one statement, one round trip), then the ``mark_started`` of the batch
claimed. No handler, no task per job, no result encoding. Its
rate is the most a worker of one connection and that batch size could reach on this server:
the ceiling the worker's drain is measured against, in the same run, with the same batch.

The ratio in the table is drain / ceiling: the share of the statements' own speed the whole
worker keeps (issue #22's target: within 1.5x of the ceiling, a ratio of at least 0.67).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import time
from typing import Any

import pgq_nb
from benchmarks.common import (
    Context,
    Row,
    fresh_pgq_nb,
    log,
    noop,
    on_pgq_nb_loop,
    pgq_nb_enqueue_noops,
    pgq_nb_live_empty,
    pgq_nb_succeeded,
    start_pgq_nb_worker,
    stop_pgq_nb_worker,
    wait_until,
)
from pgq_nb.claiming import mark_started

ENTRYPOINT = "bench_ceiling"
BATCHES = (32, 128)  # besides the tuned batch


async def _statements_only(q: pgq_nb.AsyncQueue, n: int, batch: int) -> float:
    """Drain ``n`` queued jobs with the worker's statements alone; returns jobs/s."""
    queries = q.store.queries
    async with q.pool.acquire() as conn:
        worker_id = await conn.fetchval(
            queries["register_worker"],
            socket.gethostname(),
            os.getpid(),
            [ENTRYPOINT],
            batch,
            "thread",
            None,
        )
        done: list[int] = []
        finished = 0
        began = time.perf_counter()
        while True:
            now = dt.datetime.now(dt.UTC)
            k = len(done)
            none: list[Any] = [None] * k
            rows = await conn.fetch(
                queries["finish_and_claim"],
                worker_id,
                done,
                ["succeeded"] * k,
                none,
                none,
                none,
                [now] * k,
                [now] * k,
                [0.0] * k,
                none,
                none,
                [ENTRYPOINT],
                batch,
            )
            finished += k
            if not rows:
                break
            done = [r["id"] for r in rows]
            await conn.execute(mark_started(queries["mark_started"], worker_id, done))
        elapsed = time.perf_counter() - began
        await conn.execute(queries["deregister_worker"], worker_id)
    if finished != n:
        raise RuntimeError(f"ceiling: {finished} jobs finished, expected {n}")
    return n / elapsed


def _once(ctx: Context, repeat: int, batch: int) -> tuple[float, float]:
    """(statements-only jobs/s, worker drain jobs/s) in one schema each, same n and batch."""
    n = ctx.sizes.drain_jobs
    with fresh_pgq_nb(ctx.dsn, ctx.schema(f"ceiling{batch}", repeat)) as q:
        q.entrypoint(ENTRYPOINT)(noop)  # enqueue checks the name; no worker runs it
        pgq_nb_enqueue_noops(q, ENTRYPOINT, n)
        ceiling = on_pgq_nb_loop(_statements_only(q.aio, n, batch))
        if on_pgq_nb_loop(pgq_nb_succeeded(q.aio)) != n:
            raise RuntimeError("ceiling: the counters disagree with the jobs finished")
    with fresh_pgq_nb(ctx.dsn, ctx.schema(f"ceilingw{batch}", repeat)) as q:
        q.entrypoint(ENTRYPOINT)(noop)
        pgq_nb_enqueue_noops(q, ENTRYPOINT, n)
        drain = on_pgq_nb_loop(_worker(q.aio, n, batch, ctx.sizes.drain_cap))
    return ceiling, drain


async def _worker(q: pgq_nb.AsyncQueue, n: int, batch: int, cap: float) -> float:
    """Drain ``n`` queued jobs with a worker of concurrency = batch_size = ``batch``, timed as
    the drain scenario times it (until the live table is seen empty); returns jobs/s."""
    began = time.perf_counter()
    worker, task = start_pgq_nb_worker(q, concurrency=batch, batch_size=batch)
    try:
        done = await wait_until(lambda: pgq_nb_live_empty(q), timeout=cap)
    finally:
        await stop_pgq_nb_worker(worker, task)
    finished = await pgq_nb_succeeded(q)
    if finished != n:
        raise RuntimeError(f"ceiling: the worker finished {finished} of {n}")
    return n / (done - began)


def run(ctx: Context) -> list[Row]:
    rows = []
    # and the batch that tuned uses (the drain's sweep picks it; --tuned-pgq-nb sets it)
    for batch in sorted({*BATCHES, ctx.tuned_pgq_nb[1]}):
        ceilings: list[float] = []
        row = Row(
            scenario=f"drain {ctx.sizes.drain_jobs:,} vs the statements alone, batch {batch}",
            unit="jobs/s",
            higher_is_better=True,
            target=">= 0.67 of the ceiling",
            note="",
        )
        for repeat in range(ctx.sizes.repeats):
            ceiling, drain = _once(ctx, repeat, batch)
            ceilings.append(ceiling)
            row.pgq_nb.append(drain)
            log(
                f"  ceiling      repeat {repeat + 1}  batch {batch:4d}  statements alone "
                f"{ceiling:10,.0f} jobs/s  worker {drain:10,.0f} jobs/s"
            )
        ceilings.sort()
        median = ceilings[len(ceilings) // 2]
        ours = row.pgq_nb_median or 0.0
        row.ratio = ours / median if median else None
        row.note = (
            f"pgq_nb column: the worker (concurrency=batch_size={batch}); "
            f"the statements alone on one connection: {median:,.0f} jobs/s (median); "
            "ratio: worker / statements"
        )
        rows.append(row)
    return rows
