"""enqueue: N jobs with a small JSON payload each, in bulk, into an empty queue.

pgq_nb: ``q.enqueue_df(entrypoint, DataFrame)`` in one call when the queue has it (COPY),
otherwise ``q.enqueue([entrypoint] * k, payloads)`` per 10,000 (one statement each).
PgQueuer: ``queries.enqueue`` per 1,000, with the payloads JSON-encoded to bytes (its API takes
bytes), which is the encoding pgq_nb does inside its own enqueue.

The payload dicts exist before the clock starts (they stand for the user's data); everything
the queue library needs to do with them is timed.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Callable
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
    noop,
    sides,
)

ENTRYPOINT = "bench_enqueue"


def pgq_nb_enqueuer(
    q: pgq_nb.Queue, payloads: list[dict[str, int]], chunk: int, *, use_df: bool = True
) -> tuple[Callable[[], object], str]:
    """The fastest bulk enqueue this pgq_nb offers, ready to call, and what it is.

    Its input (a DataFrame for ``enqueue_df``) is built here, before the clock starts.
    """
    enqueue_df = getattr(q, "enqueue_df", None) if use_df else None
    if enqueue_df is not None:
        import pandas as pd

        frame = pd.DataFrame(payloads)
        quiet = (
            {"progress": False} if "progress" in inspect.signature(enqueue_df).parameters else {}
        )
        return (lambda: enqueue_df(ENTRYPOINT, frame, **quiet)), "enqueue_df, one call"

    def by_chunks() -> None:
        for start in range(0, len(payloads), chunk):
            part = payloads[start : start + chunk]
            q.enqueue([ENTRYPOINT] * len(part), part, 0)

    return by_chunks, f"enqueue([...]) per {chunk:,}"


def _timed(enqueue: Callable[[], object]) -> float:
    began = time.perf_counter()
    enqueue()
    return time.perf_counter() - began


def _pgq_nb_once(ctx: Context, repeat: int, payloads: list[dict[str, int]]) -> tuple[float, str]:
    chunk = ctx.sizes.enqueue_chunk_pgq_nb
    with fresh_pgq_nb(ctx.dsn, ctx.schema("enqueue", repeat)) as q:
        q.entrypoint(ENTRYPOINT)(noop)
        enqueue, how = pgq_nb_enqueuer(q, payloads, chunk)
        try:
            elapsed = _timed(enqueue)
        except (ImportError, NotImplementedError) as exc:  # enqueue_df exists but cannot run
            log(f"  enqueue_df failed ({exc}); using enqueue([...]) instead")
            enqueue, how = pgq_nb_enqueuer(q, payloads, chunk, use_df=False)
            elapsed = _timed(enqueue)
        live = sum(n for ep, status, n in q.counts() if ep == ENTRYPOINT and status == "queued")
        if live != len(payloads):
            raise RuntimeError(f"pgq_nb enqueue: {live} jobs queued, expected {len(payloads)}")
    return len(payloads) / elapsed, how


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
    how = ""
    for repeat in range(ctx.sizes.repeats):
        for side in sides(repeat):
            if side == PGQ_NB:
                rate, how = _pgq_nb_once(ctx, repeat, payloads)
                row.pgq_nb.append(rate)
            else:
                rate = asyncio.run(_pgqueuer_once(ctx, repeat, payloads))
                row.pgqueuer.append(rate)
            log(f"  enqueue  repeat {repeat + 1}  {side:8s} {rate:12,.0f} jobs/s")
    row.note = f"pgq_nb: {how}; PgQueuer: queries.enqueue per {ctx.sizes.enqueue_batch_pgqueuer:,}"
    return [row]
