"""pgq_nb alone, issue #22 item 4 (scale): the four figures, each against its target.

1. claim time with ``scale_queued`` (10,000,000) jobs queued against ``claim_small`` (10,000):
   ``benchmarks.scenario_claim``'s fill (INSERT ... SELECT generate_series, ANALYZE) and timing,
   then timed again after ``VACUUM (ANALYZE)`` (no autovacuum of the backlog beside it); with
   the big backlog still in place, ``q.stats()`` is timed too (a large live table);
2. ``q.stats()`` over ``scale_history`` (10,000,000) history rows: ``benchmarks.scenario_stats``'
   fill, median of ``stats_runs`` calls;
3. ``q.enqueue_df`` of a ``scale_frame`` (1,000,000) row frame (int, float and str columns);
4. ``q.results()`` of those rows (moved to history as succeeded, each with a result).

Memory (3, 4) is measured in a fresh Python process per figure, so that its peak is the call's:
the peak resident set growth (VmHWM after resetting it through /proc/self/clear_refs, else
ru_maxrss, minus the resident set just before the call) in one process, and tracemalloc's peak
(Python and numpy allocations) in another (tracemalloc costs memory of its own). Both are
reported against the frame's own size, ``memory_usage(deep=True).sum()`` (the frame passed
to enqueue_df; the frame results() returns).
"""

from __future__ import annotations

import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pandas as pd

import pgq_nb
from benchmarks import scenario_claim, scenario_stats
from benchmarks.common import Context, Row, fresh_pgq_nb, log, noop, on_pgq_nb_loop

ENTRYPOINT = "bench_scale"
WARM_ENTRYPOINT = "bench_scale_warm"  # a first small enqueue_df, not measured
MEMORY_TARGET = 2.0  # peak over the frame's own size
CHILD_TIMEOUT = 1_800.0  # seconds


def scale_frame(n: int) -> pd.DataFrame:
    """The frame enqueued: an int, a float and a str column (deterministic)."""
    i = np.arange(n, dtype="int64")
    return pd.DataFrame(
        {
            "i": i,
            "x": i * 0.25,
            "s": pd.array([f"item-{v}" for v in range(n)], dtype="str"),
        }
    )


def _rss_now() -> int:
    """This process's resident set now, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> bool:
    """Reset VmHWM (the peak resident set) to the current one; False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss(reset: bool) -> int:
    """The peak resident set since the reset (VmHWM), else since the process started."""
    if reset:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _measured(call: Any, traced: bool) -> tuple[Any, int]:
    """``call()``'s value and its peak memory growth in bytes (tracemalloc's or the RSS's)."""
    gc.collect()
    if traced:
        import tracemalloc

        tracemalloc.start()
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        value = call()
        peak = tracemalloc.get_traced_memory()[1] - before
        tracemalloc.stop()
        return value, peak
    reset = _reset_peak()
    before = _rss_now()
    value = call()
    return value, _peak_rss(reset) - before


def child(mode: str, dsn: str, schema: str, n: int, traced: bool) -> dict[str, Any]:
    """One measurement in this (fresh) process: ``enqueue`` the frame or read the ``results``."""
    q = pgq_nb.connect(dsn, schema=schema)
    q.entrypoint(ENTRYPOINT)(noop)
    q.entrypoint(WARM_ENTRYPOINT)(noop)
    q.stats()  # the pool, the loop thread and the queries are ready before the measurement
    if mode == "enqueue":
        df = scale_frame(n)
        q.enqueue_df(WARM_ENTRYPOINT, df.head(10), progress=False)
        began = time.perf_counter()
        ids, peak = _measured(lambda: q.enqueue_df(ENTRYPOINT, df, progress=False), traced)
        seconds = time.perf_counter() - began
        if int(ids.notna().sum()) != n:
            raise RuntimeError(f"enqueue_df wrote {int(ids.notna().sum())} jobs, expected {n}")
        size = int(df.memory_usage(deep=True).sum())
    else:
        q.results(ENTRYPOINT, ids=[0])  # warm the path (no rows)
        began = time.perf_counter()
        df, peak = _measured(lambda: q.results(ENTRYPOINT), traced)
        seconds = time.perf_counter() - began
        if len(df) != n:
            raise RuntimeError(f"results() returned {len(df)} rows, expected {n}")
        size = int(df.memory_usage(deep=True).sum())
    return {"peak": peak, "size": size, "seconds": seconds}


def _in_child(mode: str, ctx: Context, schema: str, n: int, traced: bool) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.scenario_scale", mode, ctx.dsn, schema, str(n)]
    command.append("traced" if traced else "rss")
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{mode} child failed:\n{done.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


async def _to_history(q: pgq_nb.AsyncQueue) -> None:
    """Every queued job of the scenario's entrypoint finishes as succeeded, with a result."""
    s = q.schema
    async with q.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            f"""
            INSERT INTO "{s}".history (id, entrypoint, payload, priority, status, attempts,
                result, worker_id, created, execute_after, started, finished)
            SELECT id, entrypoint, payload, priority, 'succeeded', 1,
                jsonb_build_object('score', id % 1000, 'ok', id % 2 = 0), 1,
                created, execute_after, now(), now()
            FROM "{s}".jobs WHERE entrypoint = $1 AND status = 'queued'
            """,
            ENTRYPOINT,
        )
        await conn.execute(f'DELETE FROM "{s}".jobs WHERE entrypoint = $1', ENTRYPOINT)
    await q.pool.execute(f'ANALYZE "{s}".history')


async def _clear(q: pgq_nb.AsyncQueue) -> None:
    await q.pool.execute(f'DELETE FROM "{q.schema}".jobs WHERE entrypoint = $1', ENTRYPOINT)


def _memory_rows(ctx: Context) -> list[Row]:
    n = ctx.sizes.scale_frame
    rows: list[Row] = []
    with fresh_pgq_nb(ctx.dsn, ctx.schema("scale_frames", 0)) as q:
        q.entrypoint(ENTRYPOINT)(noop)
        figures: dict[tuple[str, bool], dict[str, Any]] = {}
        for mode in ("enqueue", "results"):
            if mode == "results":
                on_pgq_nb_loop(_to_history(q.aio))
            for traced in (False, True):
                if mode == "enqueue" and traced:
                    on_pgq_nb_loop(_clear(q.aio))  # the rss run's jobs
                got = _in_child(mode, ctx, q.schema, n, traced)
                figures[mode, traced] = got
                how = "tracemalloc" if traced else "RSS growth"
                log(
                    f"  scale        {mode:8} {n:,} rows: {how} peak "
                    f"{got['peak'] / 1e6:8.1f} MB = {got['peak'] / got['size']:.2f}x the frame "
                    f"({got['size'] / 1e6:.1f} MB), {got['seconds']:.1f} s"
                )
        for mode, call in (("enqueue", "q.enqueue_df"), ("results", "q.results()")):
            rss, traced_run = figures[mode, False], figures[mode, True]
            by_rss, by_traced = rss["peak"] / rss["size"], traced_run["peak"] / traced_run["size"]
            worst = max(by_rss, by_traced)
            met = ", ".join(
                f"{how} {'met' if ratio < MEMORY_TARGET else 'MISSED'}"
                for how, ratio in (("tracemalloc", by_traced), ("RSS", by_rss))
            )
            rows.append(
                Row(
                    scenario=f"{call} of {n:,} rows, peak memory, % of the frame (pgq_nb alone)",
                    unit="%",  # the worse of the two measures
                    higher_is_better=False,
                    pgq_nb=[worst * 100],
                    target=f"< {MEMORY_TARGET * 100:g} % ({met})",
                    note=(
                        f"frame {rss['size'] / 1e6:.1f} MB; peak RSS growth "
                        f"{rss['peak'] / 1e6:.1f} MB ({rss['peak'] / rss['size']:.2f}x), "
                        f"tracemalloc peak {traced_run['peak'] / 1e6:.1f} MB "
                        f"({traced_run['peak'] / traced_run['size']:.2f}x); "
                        f"{rss['seconds']:.1f} s"
                    ),
                )
            )
    return rows


def _stats_median(q: pgq_nb.Queue, runs: int) -> float:
    times: list[float] = []
    for i in range(scenario_stats.WARMUP + runs):
        began = time.perf_counter()
        q.stats()
        if i >= scenario_stats.WARMUP:
            times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


async def _vacuumed_claims(q: pgq_nb.AsyncQueue, runs: int, batch: int) -> float:
    """The claim's median time again (as ``scenario_claim`` times it) once the backlog is
    vacuumed: the state autovacuum brings a table to after a bulk insert (hint bits set, the
    visibility map written), so no autovacuum of the 10,000,000 rows runs beside the claims."""
    claim = q.queries["claim_jobs"]
    async with q.pool.acquire() as conn:
        await conn.execute(f'VACUUM (ANALYZE) "{q.schema}".jobs')
        times: list[float] = []
        for i in range(scenario_claim.WARMUP + runs):
            tr = conn.transaction()
            await tr.start()
            try:
                began = time.perf_counter()
                rows = await conn.fetch(claim, [scenario_claim.ENTRYPOINT], batch, 1)
                elapsed = time.perf_counter() - began
            finally:
                await tr.rollback()
            if len(rows) != batch:
                raise RuntimeError(f"claim returned {len(rows)} rows, expected {batch}")
            if i >= scenario_claim.WARMUP:
                times.append(elapsed * 1000)
    return statistics.median(times)


def _claim_rows(ctx: Context) -> list[Row]:
    small_n, big_n = ctx.sizes.claim_small, ctx.sizes.scale_queued
    batch, runs = ctx.sizes.claim_batch, ctx.sizes.claim_runs
    small, small_plan = scenario_claim._measure(ctx, small_n)
    log(f"  scale        claim {small_n:>11,} queued  {small:7.3f} ms  ({small_plan})")
    with fresh_pgq_nb(ctx.dsn, ctx.schema(f"scale_claim{big_n}", 0)) as q:
        q.entrypoint(scenario_claim.ENTRYPOINT)(noop)
        began = time.perf_counter()
        big, big_plan = on_pgq_nb_loop(scenario_claim._fill_and_time(q.aio, big_n, runs, batch))
        log(f"  scale        claim {big_n:>11,} queued  {big:7.3f} ms  ({big_plan})")
        log(f"  scale        (fill and claims took {time.perf_counter() - began:.0f} s)")
        settled = on_pgq_nb_loop(_vacuumed_claims(q.aio, runs, batch))
        log(f"  scale        claim {big_n:>11,} queued  {settled:7.3f} ms  after VACUUM (ANALYZE)")
        live_stats = _stats_median(q, ctx.sizes.stats_runs)
        log(f"  scale        q.stats() with {big_n:,} queued: median {live_stats:.2f} ms")
    note = f"claim of {batch} in a rolled-back transaction, median of {runs}"
    claims = [
        Row(
            scenario=f"scale: claim, {big_n:,} queued{when} (pgq_nb alone)",
            unit="ms",
            higher_is_better=False,
            pgq_nb=[ms],
            ratio=ms / small,
            target=f"ratio <= 1.5 vs {small_n:,} ({'met' if ms / small <= 1.5 else 'MISSED'})",
            note=f"{note}; {small_n:,} queued: {small:.3f} ms; plan: {big_plan}",
        )
        for ms, when in ((big, ", right after the bulk insert"), (settled, ", after VACUUM"))
    ]
    return [
        *claims,
        Row(
            scenario=f"scale: stats, {big_n:,} queued (pgq_nb alone)",
            unit="ms",
            higher_is_better=False,
            pgq_nb=[live_stats],
            target=f"<= 200 ms ({'met' if live_stats <= 200 else 'MISSED'})",
            note=f"q.stats() with the claim backlog in place, median of {ctx.sizes.stats_runs}",
        ),
    ]


def _stats_row(ctx: Context) -> Row:
    n = ctx.sizes.scale_history
    with fresh_pgq_nb(ctx.dsn, ctx.schema("scale_stats", 0)) as q:
        began = time.perf_counter()
        on_pgq_nb_loop(scenario_stats._fill(q.aio, n))
        log(f"  scale        {n:,} history rows inserted in {time.perf_counter() - began:.0f} s")
        median = _stats_median(q, ctx.sizes.stats_runs)
    log(f"  scale        q.stats() over {n:,} history rows: median {median:.2f} ms")
    return Row(
        scenario=f"scale: stats, {n:,} history rows (pgq_nb alone)",
        unit="ms",
        higher_is_better=False,
        pgq_nb=[median],
        target=f"<= 200 ms ({'met' if median <= 200 else 'MISSED'})",
        note=f"q.stats(), median of {ctx.sizes.stats_runs}",
    )


def run(ctx: Context) -> list[Row]:
    return [*_memory_rows(ctx), *_claim_rows(ctx), _stats_row(ctx)]


def main(argv: list[str]) -> None:
    mode, dsn, schema, n, how = argv
    if mode not in ("enqueue", "results") or how not in ("rss", "traced"):
        raise SystemExit("usage: scenario_scale enqueue|results DSN SCHEMA N rss|traced")
    figures = child(mode, dsn, schema, int(n), how == "traced")
    print(json.dumps(figures), flush=True)
    os._exit(0)  # the pgq_nb loop thread and pool need no orderly shutdown here


if __name__ == "__main__":
    main(sys.argv[1:])
