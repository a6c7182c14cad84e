"""pgq_nb alone: fan-in release delay and cron tick lateness.

Each hook looks for its API (``q.workflow``, ``q.schedule``) and, if it is missing, returns a
"not available yet" row. When the API is there, it is driven as DESIGN.md sketches it; any
error becomes a row saying what went wrong (a hook never fails the whole run), so adjust the
calls here if the API changes shape.

fan-in: a map of N no-op steps and one step depending on all of them, one worker
(concurrency 64); the delay is the child's handler start minus the last parent's handler end.
cron: an every-second schedule (six fields, seconds first; every minute, one tick, if seconds
are refused); lateness is each handler's start minus its tick's ``fire_time``, for ticks due
after the worker started (5 in --quick, 20 otherwise).
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from typing import Any

import pgq_nb
from benchmarks.common import Context, Row, fresh_pgq_nb, log

FAN_IN_TIMEOUT = 600.0
CRON_TIMEOUT = 75.0  # an every-minute schedule ticks within 60 s
EVERY_SECOND = "* * * * * *"  # six fields, seconds first


def _skipped(scenario: str, unit: str, target: str, why: str) -> Row:
    return Row(scenario=scenario, unit=unit, higher_is_better=False, target=target, note=why)


def _wait_for(items: list[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not items:
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing after {timeout:g} s")
        time.sleep(0.01)


def fan_in_release_delay(ctx: Context) -> Row:
    """Time from the last of N map steps finishing to the fan-in step starting."""
    n = ctx.sizes.fan_in_steps
    scenario = f"fan-in release, {n:,}-step map (pgq_nb alone)"
    target = "<= 1000 ms"
    with fresh_pgq_nb(ctx.dsn, ctx.schema("fanin", 0)) as q:
        workflow = getattr(q, "workflow", None)
        if workflow is None:
            return _skipped(scenario, "ms", target, "not available yet (no q.workflow)")
        try:
            delay = _run_fan_in(q, workflow, n)
        except Exception as exc:  # a hook reports, never raises
            return _skipped(scenario, "ms", target, f"hook failed: {type(exc).__name__}: {exc}")
    log(f"  fan-in       release {delay:.1f} ms after the last of {n:,} parents")
    return Row(
        scenario=scenario,
        unit="ms",
        higher_is_better=False,
        pgq_nb=[delay],
        target=target,
        note="wall clock: last parent handler's end to the child handler's start",
    )


def _run_fan_in(q: pgq_nb.Queue, workflow: Any, n: int) -> float:

    parents_done: list[float] = []
    child_started: list[float] = []

    @q.entrypoint("bench_map")
    async def mapper(job: pgq_nb.Job) -> None:
        parents_done.append(time.time())

    @q.entrypoint("bench_reduce")
    async def reducer(job: pgq_nb.Job) -> None:
        child_started.append(time.time())

    wf = workflow("bench_fan_in")
    parts = wf.map("bench_map", [{"i": i} for i in range(n)])
    wf.step("bench_reduce", depends_on=parts)
    wf.submit()
    handle = q.start_worker(concurrency=64)
    try:
        _wait_for(child_started, FAN_IN_TIMEOUT)
    finally:
        handle.stop(timeout=60)
    if len(parents_done) != n:
        raise RuntimeError(f"{len(parents_done)} parents ran, expected {n}")
    return (child_started[0] - max(parents_done)) * 1000


def cron_tick_lateness(ctx: Context) -> Row:
    """Time from a cron tick's due time to its handler starting, over a few ticks."""
    scenario = "cron tick lateness (pgq_nb alone)"
    target = ""
    ticks = 5 if ctx.sizes.quick else 20
    with fresh_pgq_nb(ctx.dsn, ctx.schema("cron", 0)) as q:
        schedule = getattr(q, "schedule", None)
        if schedule is None:
            return _skipped(scenario, "ms", target, "not available yet (no q.schedule)")
        try:
            lateness, how = _run_cron(q, schedule, ticks, allow_minutes=not ctx.sizes.quick)
        except Exception as exc:  # a hook reports, never raises
            return _skipped(scenario, "ms", target, f"hook failed: {type(exc).__name__}: {exc}")
    median = statistics.median(lateness)
    log(f"  cron         {len(lateness)} ticks: median {median:.1f} ms, max {max(lateness):.1f} ms")
    return Row(
        scenario=scenario,
        unit="ms",
        higher_is_better=False,
        pgq_nb=[median],
        target=target,
        note=f"{how}: median of {len(lateness)} ticks (max {max(lateness):.1f} ms), handler "
        "start minus the tick's fire time",
    )


def _run_cron(
    q: pgq_nb.Queue, schedule: Any, ticks: int, *, allow_minutes: bool
) -> tuple[list[float], str]:
    fired: list[tuple[float, Any]] = []

    async def tick(arg: Any) -> None:
        fired.append((time.time(), arg))

    try:
        schedule("bench_tick", EVERY_SECOND)(tick)
        how, wanted, timeout = "every second", ticks, ticks * 3 + 10.0
    except Exception:  # no seconds field: one every-minute tick, full runs only
        if not allow_minutes:
            raise
        schedule("bench_tick", "* * * * *")(tick)
        how, wanted, timeout = "every minute", 1, CRON_TIMEOUT
    began = time.time()
    handle = q.start_worker()
    try:
        deadline = time.monotonic() + timeout
        while len(_on_time(fired, began)) < wanted and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        handle.stop(timeout=60)
    lateness = _on_time(fired, began)
    if not lateness:
        raise TimeoutError(f"no tick due after the worker started fired within {timeout:g} s")
    return lateness, how


def _on_time(fired: list[tuple[float, Any]], began: float) -> list[float]:
    """Lateness in ms of the ticks due after ``began`` (catch-up ticks left out)."""
    out = []
    for started, arg in fired:
        due = getattr(arg, "fire_time", None)
        if isinstance(due, dt.datetime) and due.timestamp() >= began:
            out.append((started - due.timestamp()) * 1000)
    return out


def run(ctx: Context) -> list[Row]:
    return [fan_in_release_delay(ctx), cron_tick_lateness(ctx)]
