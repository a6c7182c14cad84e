"""pgq_nb alone: claims while retention purges (issue #20, item 1).

N no-op jobs (200,000; 20,000 quick) are inserted straight into a fresh schema's ``jobs``, and
one in-process worker (concurrency 32) drains them. The first half it drains with no retention
policy; then ``q.retention(succeeded="0s")`` makes the workers' retention task (every 0.5 s,
``PGQ_NB_RETENTION_INTERVAL``) delete every finished job as it goes, in batches of 1,000, while
the worker drains the second half. Meanwhile a separate connection times the worker's claim
statement (``claim_jobs``, one job, in a transaction rolled back) every 10 ms: the p99 before
(draining, no purge) and during (draining and purging) are the figures. Afterwards the
counters must equal a full count of history.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time

import pgq_nb
from benchmarks.common import Context, Row, fresh_pgq_nb, log, noop, on_pgq_nb_loop
from pgq_nb import retention

ENTRYPOINT = "bench_retention"
PROBE_GAP_S = 0.010
CLAIMER_ID = 1  # the probe's claims are rolled back; no worker row is needed

MISMATCH = """
SELECT count(*) FROM (SELECT entrypoint, status, sum(n) AS n FROM {s}.finished_counts
    GROUP BY 1, 2) AS c
FULL JOIN (SELECT entrypoint, status, count(*) AS n FROM {s}.history GROUP BY 1, 2) AS h
    USING (entrypoint, status)
WHERE coalesce(c.n, 0) <> coalesce(h.n, 0)
"""


async def _probe_until(q: pgq_nb.AsyncQueue, left_below: int) -> list[float]:
    """Claim times (ms) every PROBE_GAP_S until fewer than ``left_below`` jobs are left."""
    claim, times = q.queries["claim_jobs"], []
    count = f'SELECT count(*) FROM "{q.schema}".jobs'
    async with q.pool.acquire() as conn:
        while True:
            tr = conn.transaction()
            await tr.start()
            try:
                began = time.perf_counter()
                await conn.fetch(claim, [ENTRYPOINT], 1, CLAIMER_ID)
                times.append((time.perf_counter() - began) * 1000)
            finally:
                await tr.rollback()
            if len(times) % 50 == 0 and await conn.fetchval(count) < left_below:
                return times
            await asyncio.sleep(PROBE_GAP_S)


def _left(q: pgq_nb.Queue) -> int:
    """Jobs left in history (from a full count)."""
    n: int = on_pgq_nb_loop(q.aio.pool.fetchval(f'SELECT count(*) FROM "{q.aio.schema}".history'))
    return n


def _p99(times: list[float]) -> float:
    return statistics.quantiles(times, n=100)[98] if len(times) >= 2 else float("nan")


def run(ctx: Context) -> list[Row]:
    n = 20_000 if ctx.sizes.quick else 200_000
    previous = os.environ.get(retention.INTERVAL_ENV)
    os.environ[retention.INTERVAL_ENV] = "0.5"
    try:
        with fresh_pgq_nb(ctx.dsn, ctx.schema("retention", 0)) as q:
            q.entrypoint(ENTRYPOINT)(noop)
            schema = q.aio.schema
            on_pgq_nb_loop(
                q.aio.pool.execute(
                    f'INSERT INTO "{schema}".jobs (entrypoint, payload) '
                    "SELECT $1, NULL FROM generate_series(1, $2)",
                    ENTRYPOINT,
                    n,
                )
            )
            on_pgq_nb_loop(q.aio.pool.execute(f'ANALYZE "{schema}".jobs'))
            worker = q.start_worker(concurrency=32)
            try:
                before = on_pgq_nb_loop(_probe_until(q.aio, n // 2))
                q.retention(succeeded="0s")
                during = on_pgq_nb_loop(_probe_until(q.aio, 1))
                deadline = time.monotonic() + 120
                while _left(q) > 0 and time.monotonic() < deadline:
                    time.sleep(0.5)  # the last turn's purge
            finally:
                worker.stop()
            left = _left(q)
            mismatched: int = on_pgq_nb_loop(q.aio.pool.fetchval(MISMATCH.format(s=f'"{schema}"')))
    finally:
        if previous is None:
            os.environ.pop(retention.INTERVAL_ENV, None)
        else:
            os.environ[retention.INTERVAL_ENV] = previous
    p99_before, p99_during = _p99(before), _p99(during)
    log(
        f"  retention    {n:>9,} jobs  claim p99 {p99_before:7.3f} ms before, "
        f"{p99_during:7.3f} ms during; {left:,} left in history, counters off in {mismatched}"
    )
    note = (
        f"{n:,} no-op jobs drained by one worker; claim_jobs timed every 10 ms from another "
        f"connection ({len(before):,} / {len(during):,} probes); counters equal a full count "
        f"afterwards: {'yes' if mismatched == 0 else 'NO'}; left in history: {left:,}"
    )
    return [
        Row(
            scenario="claim p99 while draining, no retention (pgq_nb alone)",
            unit="ms",
            higher_is_better=False,
            pgq_nb=[p99_before],
            note=note,
        ),
        Row(
            scenario="claim p99 while draining and retention purges (pgq_nb alone)",
            unit="ms",
            higher_is_better=False,
            pgq_nb=[p99_during],
            ratio=p99_during / p99_before if p99_before > 0 else None,
            target="ratio <= 1.5 (during / before)",
            note="ratio column = p99 during / p99 before",
        ),
    ]
