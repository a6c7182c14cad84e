"""peers: pgq_nb and PgQueuer (both tuned) beside procrastinate, DBOS, Chancy (and oban-py).

Two figures, each system through its own API and worker loop (``benchmarks.peers``):

- drain: ``Sizes.peer_jobs`` no-op jobs queued through the system's own bulk enqueue
  (untimed), then the clock runs from starting its worker until its tables show no job
  queued or running; afterwards every system is checked to have finished every job, counted
  in its own tables (a shortfall fails the run, as in the drain scenario).
- enqueue: the same number of jobs with a small JSON payload each, through its bulk API,
  timed; the queued jobs are counted afterwards.

pgq_nb and PgQueuer run with what the drain's sweeps chose on this transport when the drain
ran before (as in ``--only side_by_side``), else with ``--tuned-pgq-nb`` and
``--tuned-pgqueuer`` (default 128/128 and batch 100); PgQueuer's table is ANALYZEd. Each
peer's concurrency is the best of a sweep of its own first (``--no-sweep``: its module's
default). All systems take turns: the order rotates every repeat, so none always goes first.
A peer that is not installed is skipped with a note.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from benchmarks import peers, pgqueuer_env, scenario_drain, scenario_enqueue
from benchmarks.common import PGQ_NB, PGQUEUER, Context, Row, log, sweep_order

DEFAULT_PGQUEUER_BATCH = 100
SWEEP_JOBS = 2_000  # each candidate concurrency of a peer: one drain of this many jobs


def order(systems: list[str], repeat: int) -> list[str]:
    """``systems`` rotated by ``repeat``: each goes first in turn.

    >>> order(["a", "b", "c"], 1)
    ['b', 'c', 'a']
    """
    k = repeat % len(systems)
    return systems[k:] + systems[:k]


def _sized(ctx: Context) -> Context:
    n = ctx.sizes.peer_jobs
    return dataclasses.replace(
        ctx, sizes=dataclasses.replace(ctx.sizes, drain_jobs=n, enqueue_jobs=n)
    )


def _pgqueuer_settings(ctx: Context) -> pgqueuer_env.Settings:
    batch, tasks = ctx.tuned_pgqueuer or (DEFAULT_PGQUEUER_BATCH, None)
    return pgqueuer_env.Settings(batch_size=batch, max_concurrent_tasks=tasks)


def _peer_run(ctx: Context, name: str, what: str, repeat: int, tag: str = "") -> peers.Outcome:
    """One ``what`` ("drain" or "enqueue") of peer ``name``, in a database made for it."""
    peer = peers.load(name)
    slug = name.lower().replace("-", "_")
    database = f"bench_{slug}_{what}{tag}_{ctx.run_id}_{repeat}"[:60]
    n = ctx.sizes.peer_jobs

    async def once() -> peers.Outcome:
        async with peers.empty_database(ctx.admin_dsn or ctx.dsn, database) as dsn:
            if what == "drain":
                return await peer.drain(dsn, n, ctx.sizes.drain_cap)
            return await peer.enqueue(dsn, n)

    return asyncio.run(once())


def _sweep(ctx: Context, names: list[str]) -> dict[str, dict[str, float]]:
    """Give each peer its best concurrency: one drain of SWEEP_JOBS at each of its candidates.

    The peers take turns candidate by candidate, ``Sizes.sweep_rounds`` rounds (forwards, then
    backwards; the best run of a candidate counts); the rates are kept for the report.
    """
    small = dataclasses.replace(
        ctx, sizes=dataclasses.replace(ctx.sizes, peer_jobs=min(SWEEP_JOBS, ctx.sizes.peer_jobs))
    )
    rates: dict[str, dict[str, float]] = {name: {} for name in names}
    todo = {name: peers.load(name).candidates for name in names}
    longest = max(len(c) for c in todo.values())
    for i in sweep_order(longest, ctx.sizes.sweep_rounds):  # the best of its rounds counts
        for name in names:
            if i >= len(todo[name]):
                continue
            peer = peers.load(name)
            peer.concurrency = todo[name][i]
            out = _peer_run(small, name, "drain", i, tag="_sweep")
            key = str(peer.concurrency)
            rates[name][key] = max(rates[name].get(key, 0), round(out.rate))
            log(f"  sweep        {name} concurrency={peer.concurrency}  {out.rate:10,.0f} jobs/s")
    for name in names:
        peers.load(name).concurrency = int(scenario_drain.best(rates[name]))
    return rates


def _drain(ctx: Context, system: str, repeat: int) -> tuple[float, str]:
    """One drain of ``system``: (jobs/s, its finished-job check)."""
    n = ctx.sizes.peer_jobs
    if system == PGQ_NB:
        rate, capped = scenario_drain._pgq_nb_once(ctx, "peers", repeat, ctx.tuned_pgq_nb)
    elif system == PGQUEUER:
        settings = _pgqueuer_settings(ctx)
        rate, capped = asyncio.run(
            scenario_drain._pgqueuer_once(ctx, "peers", repeat, settings, analyze=True)
        )
    else:
        out = _peer_run(ctx, system, "drain", repeat)
        if not out.note and out.finished != n:
            raise RuntimeError(f"{system} drain: {out.check()}")
        return out.rate, out.note or out.check()
    # pgq_nb's and PgQueuer's drains raise if a job is missing (unless capped)
    return rate, capped or f"{n:,} of {n:,} finished (ok)"


def _enqueue(ctx: Context, system: str, repeat: int) -> tuple[float, str]:
    n = ctx.sizes.peer_jobs
    payloads = [{"i": i} for i in range(n)]
    if system == PGQ_NB:
        return scenario_enqueue._pgq_nb_once(ctx, repeat, payloads), f"{n:,} queued (ok)"
    if system == PGQUEUER:
        rate = asyncio.run(scenario_enqueue._pgqueuer_once(ctx, repeat, payloads))
        return rate, f"{n:,} queued (ok)"
    out = _peer_run(ctx, system, "enqueue", repeat)
    if out.finished != n:
        raise RuntimeError(f"{system} enqueue: {out.finished:,} of {n:,} jobs queued")
    return out.rate, f"{out.finished:,} queued (ok)"


def _settings(ctx: Context, names: list[str]) -> dict[str, Any]:
    c, b = ctx.tuned_pgq_nb
    out: dict[str, Any] = {
        PGQ_NB: f"Worker(concurrency={c}, batch_size={b}); enqueue_df / enqueue",
        PGQUEUER: f"run({_pgqueuer_settings(ctx).describe()}), ANALYZEd after its bulk "
        "enqueue; queries.enqueue per 1,000",
    }
    for name in names:
        out[name] = {"version": peers.version(name), **peers.load(name).settings()}
    return out


def _row(ctx: Context, what: str, names: list[str], skipped: list[str]) -> Row:
    n = ctx.sizes.peer_jobs
    row = Row(
        scenario=f"peers: {what} {n:,} jobs",
        unit="jobs/s",
        higher_is_better=True,
        target="",
        settings=_settings(ctx, names),
    )
    run = _drain if what == "drain" else _enqueue
    if what == "drain" and ctx.sweep_peers:
        rounds = ctx.sizes.sweep_rounds
        row.settings[f"sweep (concurrency: jobs/s, best of {rounds} drain(s))"] = _sweep(ctx, names)
        row.settings.update(_settings(ctx, names))  # with the concurrency each one got
    checks: dict[str, list[str]] = {}
    for repeat in range(ctx.sizes.repeats):
        for system in order([PGQ_NB, PGQUEUER, *names], repeat):
            rate, check = run(ctx, system, repeat)
            if system == PGQ_NB:
                row.pgq_nb.append(rate)
            elif system == PGQUEUER:
                row.pgqueuer.append(rate)
            else:
                row.others.setdefault(system, []).append(rate)
            checks.setdefault(system, []).append(check)
            log(f"  peers {what:8s} repeat {repeat + 1}  {system:14s} {rate:10,.0f} jobs/s {check}")
    row.checks = {system: "; ".join(each) for system, each in checks.items()}
    row.note = "each through its own bulk API and worker loop"
    if skipped and what == "drain":
        row.note += "; " + "; ".join(skipped)
    return row


def run(ctx: Context) -> list[Row]:
    names = [name for name in ctx.peers if peers.missing(name) is None]
    skipped = [why for name in peers.NAMES if (why := peers.missing(name)) is not None]
    for why in skipped:
        log(f"  {why}")
    if not names:
        return [
            Row(
                scenario="peers",
                unit="",
                higher_is_better=True,
                note=f"no peer to run ({'; '.join(skipped)})",
            )
        ]
    sized = _sized(ctx)
    return [_row(sized, "drain", names, skipped), _row(sized, "enqueue", names, skipped)]
