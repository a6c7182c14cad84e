"""drain: N no-op jobs already queued; one worker empties the queue.

Each system's jobs are queued through its own bulk enqueue (so the table is in the state a user
leaves it in: pgq_nb runs ANALYZE after a bulk enqueue, PgQueuer does not), then the clock
starts, the worker starts, and the clock stops when the live table is seen empty (polled every
20 ms on another connection): both systems delete a job from their queue table in the same
statement that records it finished. The finished counts are checked afterwards. A run slower
than the cap (``Sizes.drain_cap``) stops there and reports the rate so far, with a note.

Two variants, the headline first. Tuned against tuned: each system at its best documented
settings for this machine: pgq_nb's ``concurrency``/``batch_size`` and PgQueuer's
``run(batch_size=...)`` (its ``max_concurrent_tasks`` left unlimited, its default; a cap must
be at least twice the batch) are each the winner of a sweep (``PGQ_NB_TUNINGS``,
``PGQUEUER_BATCHES``, the best of ``Sizes.sweep_rounds`` drains each;
``--tuned-pgq-nb``/``--tuned-pgqueuer`` fix them instead), and
PgQueuer's table is ANALYZEd after its bulk enqueue (it does not do so itself; with a stale
plan its claim was measured 4x slower at 50,000). Then both at their defaults (pgq_nb
``Worker(q.aio)``: concurrency 32, batch 32; PgQueuer ``run()``: batch_size 10, no ANALYZE,
as a user gets it; ``--analyze-pgqueuer`` adds the ANALYZE there too).
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
    noop,
    on_pgq_nb_loop,
    pgq_nb_enqueue_noops,
    pgq_nb_live_empty,
    pgq_nb_succeeded,
    sides,
    start_pgq_nb_worker,
    stop_pgq_nb_worker,
    sweep_order,
    wait_until,
)

ENTRYPOINT = "bench_drain"
# what the tuned drain tries when no --tuned-* setting is given (Sizes.sweep_rounds each)
# (concurrency, batch_size); twice the batch: the next claim goes out while a batch runs
PGQ_NB_TUNINGS = (
    (32, 32),
    (64, 64),
    (128, 128),
    (256, 256),
    (256, 128),
    (512, 256),
    (512, 512),
    (1024, 1024),
)
PGQUEUER_BATCHES = (10, 50, 100, 200, 500, 1000)  # run(batch_size=...), its documented knob


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


def _pgq_nb_once(ctx: Context, name: str, repeat: int, tuning: tuple[int, int] | None) -> Outcome:
    n = ctx.sizes.drain_jobs
    concurrency, batch = tuning if tuning is not None else (None, None)
    with fresh_pgq_nb(ctx.dsn, ctx.schema(name, repeat)) as q:
        q.entrypoint(ENTRYPOINT)(noop)
        pgq_nb_enqueue_noops(q, ENTRYPOINT, n)
        cap = ctx.sizes.drain_cap
        return on_pgq_nb_loop(_pgq_nb_drain(q.aio, n, cap, concurrency, batch))


async def _pgqueuer_once(
    ctx: Context, name: str, repeat: int, settings: pgqueuer_env.Settings, analyze: bool
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
            if analyze:
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


def best(rates: dict[str, float]) -> str:
    """The candidate with the highest rate (the first of equals).

    >>> best({"10": 5.0, "100": 9.0, "500": 9.0})
    '100'
    """
    return max(rates, key=lambda k: rates[k])


def _sweep(ctx: Context) -> tuple[tuple[int, int], pgqueuer_env.Settings, dict[str, Any]]:
    """The tuned settings of both: the --tuned-* ones, or the best single drain of a sweep.

    The two sweeps take turns candidate by candidate, so a slow spell of the machine falls on
    both rather than on one system's sweep; each candidate runs ``Sizes.sweep_rounds`` times
    (forwards, then backwards), and its best run counts.
    """
    ours: dict[str, float] = {}
    theirs: dict[str, float] = {}
    ours_todo = [f"{c}/{b}" for c, b in PGQ_NB_TUNINGS] if ctx.sweep_pgq_nb else []
    theirs_todo = [str(b) for b in PGQUEUER_BATCHES] if ctx.tuned_pgqueuer is None else []
    longest = max(len(ours_todo), len(theirs_todo))
    for i in sweep_order(longest, ctx.sizes.sweep_rounds):  # the best of its rounds counts
        if i < len(ours_todo):
            c, b = (int(x) for x in ours_todo[i].split("/"))
            rate, _ = _pgq_nb_once(ctx, "drain_sweep", i, (c, b))
            ours[ours_todo[i]] = max(ours.get(ours_todo[i], 0), round(rate))
            log(f"  sweep        pgq_nb concurrency={c} batch_size={b}  {rate:10,.0f} jobs/s")
        if i < len(theirs_todo):
            settings = pgqueuer_env.Settings(batch_size=int(theirs_todo[i]))
            rate, _ = asyncio.run(_pgqueuer_once(ctx, "drain_sweep", i, settings, analyze=True))
            theirs[theirs_todo[i]] = max(theirs.get(theirs_todo[i], 0), round(rate))
            log(f"  sweep        PgQueuer batch_size={theirs_todo[i]}  {rate:10,.0f} jobs/s")
    if ours:
        c, b = (int(x) for x in best(ours).split("/"))
        tuning = (c, b)
    else:
        tuning = ctx.tuned_pgq_nb
    if theirs:
        settings = pgqueuer_env.Settings(batch_size=int(best(theirs)))
    else:
        assert ctx.tuned_pgqueuer is not None
        batch, tasks = ctx.tuned_pgqueuer
        settings = pgqueuer_env.Settings(batch_size=batch, max_concurrent_tasks=tasks)
    sweeps: dict[str, Any] = {}
    if ours:
        sweeps["pgq_nb concurrency/batch_size"] = ours
    if theirs:
        sweeps["PgQueuer batch_size"] = theirs
    return tuning, settings, sweeps


def _variant(ctx: Context, tuned: bool) -> Row:
    name = "drain_tuned" if tuned else "drain"
    sweeps: dict[str, Any] = {}
    tuning: tuple[int, int] | None = None
    if tuned:
        tuning, settings, sweeps = _sweep(ctx)
        # later scenarios on this transport (peers) run with what the sweeps found
        ctx.tuned_pgq_nb, ctx.sweep_pgq_nb = tuning, False
        ctx.tuned_pgqueuer = (settings.batch_size or 10, settings.max_concurrent_tasks)
        analyze = True
        ours = f"concurrency={tuning[0]}, batch_size={tuning[1]}"
    else:
        settings, analyze = pgqueuer_env.Settings(), ctx.analyze_pgqueuer
        ours = "defaults (concurrency=32, batch_size=32)"
    stats = "ANALYZEd after its bulk enqueue" if analyze else "no ANALYZE (as a user gets it)"
    theirs = f"{settings.describe()}, {stats}"
    row = Row(
        scenario=f"drain {ctx.sizes.drain_jobs:,}, {'tuned vs tuned' if tuned else 'defaults'}",
        unit="jobs/s",
        higher_is_better=True,
        target=">= 1.5x" if tuned else ">= 2x",
        note=f"pgq_nb: {ours}; PgQueuer: {theirs}",
        settings={"pgq_nb": ours, "PgQueuer": theirs},
        headline=tuned,
    )
    if sweeps:
        rounds = ctx.sizes.sweep_rounds
        row.settings[f"sweep (jobs/s, best of {rounds} drain(s) each)"] = sweeps
        row.note += f"; the best of a sweep, {rounds} drain(s) each: " + "; ".join(
            f"{k} " + ", ".join(f"{c}: {r:,.0f}" for c, r in v.items()) for k, v in sweeps.items()
        )
    capped: list[str] = []
    for repeat in range(ctx.sizes.repeats):
        for side in sides(repeat):
            if side == PGQ_NB:
                rate, cap_note = _pgq_nb_once(ctx, name, repeat, tuning)
                row.pgq_nb.append(rate)
            else:
                rate, cap_note = asyncio.run(_pgqueuer_once(ctx, name, repeat, settings, analyze))
                row.pgqueuer.append(rate)
            if cap_note:
                capped.append(f"{side} repeat {repeat + 1} {cap_note}")
            log(f"  {name:12s} repeat {repeat + 1}  {side:8s} {rate:12,.0f} jobs/s  {cap_note}")
    if capped:
        row.note += "; " + "; ".join(capped)
    return row


def run(ctx: Context) -> list[Row]:
    """Tuned against tuned first (the headline), then both at their defaults."""
    return [_variant(ctx, tuned=True), _variant(ctx, tuned=False)]
