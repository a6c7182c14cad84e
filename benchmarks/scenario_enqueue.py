"""enqueue: N jobs with a small JSON payload each, in bulk, into an empty queue.

pgq_nb: ``q.enqueue_df(entrypoint, DataFrame)`` in one call (COPY).
PgQueuer: ``queries.enqueue`` per 1,000, with the payloads JSON-encoded to bytes (its API takes
bytes), which is the encoding pgq_nb does inside its own enqueue.

The payload dicts exist before the clock starts (they stand for the user's data); everything
the queue library needs to do with them is timed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import pandas as pd

import pgq_nb
from benchmarks import pgqueuer_env
from benchmarks.common import (
    PGQ_NB,
    Context,
    Row,
    fresh_pgq_nb,
    log,
    noop,
    sides,
)

ENTRYPOINT = "bench_enqueue"


def pgq_nb_enqueuer(q: pgq_nb.Queue, payloads: list[dict[str, int]]) -> Callable[[], object]:
    """``q.enqueue_df`` of the payloads, ready to call; the DataFrame is built here, untimed."""
    frame = pd.DataFrame(payloads)
    return lambda: q.enqueue_df(ENTRYPOINT, frame, progress=False)


def _timed(enqueue: Callable[[], object]) -> float:
    began = time.perf_counter()
    enqueue()
    return time.perf_counter() - began


def _pgq_nb_once(ctx: Context, repeat: int, payloads: list[dict[str, int]]) -> float:
    with fresh_pgq_nb(ctx.dsn, ctx.schema("enqueue", repeat)) as q:
        q.entrypoint(ENTRYPOINT)(noop)
        elapsed = _timed(pgq_nb_enqueuer(q, payloads))
        live = sum(n for ep, status, n in q.counts() if ep == ENTRYPOINT and status == "queued")
        if live != len(payloads):
            raise RuntimeError(f"pgq_nb enqueue: {live} jobs queued, expected {len(payloads)}")
    return len(payloads) / elapsed


async def _pgqueuer_once(ctx: Context, repeat: int, payloads: list[dict[str, int]]) -> float:
    batch = ctx.sizes.enqueue_batch_pgqueuer
    async with pgqueuer_env.fresh_database(
        ctx.pgqueuer, ctx.admin_dsn or ctx.dsn, ctx.database("enqueue", repeat)
    ) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            queries: Any = pgqueuer_env.queries_on(ctx.pgqueuer, conn)
            began = time.perf_counter()
            for start in range(0, len(payloads), batch):
                part = payloads[start : start + batch]
                await queries.enqueue(
                    [ENTRYPOINT] * len(part),
                    [json.dumps(p, separators=(",", ":")).encode() for p in part],
                    [0] * len(part),
                )
            elapsed = time.perf_counter() - began
            queued = await conn.fetchval("SELECT count(*) FROM pgqueuer")
        finally:
            await conn.close()
    if queued != len(payloads):
        raise RuntimeError(f"PgQueuer enqueue: {queued} jobs queued, expected {len(payloads)}")
    return len(payloads) / elapsed


def run(ctx: Context) -> list[Row]:
    n = ctx.sizes.enqueue_jobs
    payloads = [{"i": i} for i in range(n)]
    row = Row(
        scenario=f"enqueue {n:,} jobs",
        unit="jobs/s",
        higher_is_better=True,
        target=">= 2x",
    )
    for repeat in range(ctx.sizes.repeats):
        for side in sides(repeat):
            if side == PGQ_NB:
                rate = _pgq_nb_once(ctx, repeat, payloads)
                row.pgq_nb.append(rate)
            else:
                rate = asyncio.run(_pgqueuer_once(ctx, repeat, payloads))
                row.pgqueuer.append(rate)
            log(f"  enqueue  repeat {repeat + 1}  {side:8s} {rate:12,.0f} jobs/s")
    batch = ctx.sizes.enqueue_batch_pgqueuer
    row.note = f"pgq_nb: enqueue_df, one call; PgQueuer: queries.enqueue per {batch:,}"
    row.settings = {
        "pgq_nb": "q.enqueue_df(entrypoint, DataFrame), one call (COPY)",
        "PgQueuer": f"queries.enqueue per {batch:,}, payloads JSON-encoded to bytes",
    }
    return [row]
