"""pgq_nb alone: a workflow of one extract step, an N-step map and a fan-in step.

The map has ``Sizes.fan_in_steps`` steps (10,000; 1,000 in --quick), each doubling its row;
the fan-in step sums its parents' results (checked). Timed: ``wf.submit()`` (one transaction),
the run to the end with ``q.run_until_idle(concurrency=64)``, and the fan-in release delay:
the fan-in handler's start minus the end of the last map handler (both wall clock, one
process). Each repeat in a fresh schema; medians.
"""

from __future__ import annotations

import time

import pgq_nb
from benchmarks.common import Context, Row, fresh_pgq_nb, log


def _once(q: pgq_nb.Queue, n: int, concurrency: int) -> tuple[float, float, float]:
    """(submit ms, finish ms, fan-in release ms) of one run."""
    parents_done: list[float] = []
    child_started: list[float] = []

    @q.entrypoint("bench_extract")
    async def extract(job: pgq_nb.Job) -> int:
        return n

    @q.entrypoint("bench_map")
    async def transform(job: pgq_nb.Job) -> int:
        value = int(job.data) * 2
        parents_done.append(time.perf_counter())
        return value

    @q.entrypoint("bench_fan_in")
    async def total(job: pgq_nb.Job) -> int:
        child_started.append(time.perf_counter())
        return sum(job.parent_results()["bench_map"])

    began = time.perf_counter()
    wf = q.workflow("bench_workflow")
    raw = wf.step("bench_extract")
    parts = wf.map("bench_map", range(n), depends_on=raw)
    wf.step("bench_fan_in", depends_on=parts)
    run = wf.submit()
    submitted = time.perf_counter()
    q.run_until_idle(concurrency=concurrency, wait_for_scheduled=0)
    finished = time.perf_counter()
    if run.state() != "succeeded" or len(parents_done) != n or len(child_started) != 1:
        raise RuntimeError(
            f"workflow {run.state()}: {len(parents_done)} of {n} map steps ran, "
            f"the fan-in step {len(child_started)} time(s)"
        )
    if run.results()["bench_fan_in"] != 2 * sum(range(n)):
        raise RuntimeError("the fan-in step summed its parents' results wrong")
    release = (child_started[0] - max(parents_done)) * 1000
    return (submitted - began) * 1000, (finished - submitted) * 1000, release


def run(ctx: Context) -> list[Row]:
    n, concurrency = ctx.sizes.fan_in_steps, ctx.sizes.workflow_concurrency
    submit = Row(
        scenario=f"workflow submit, extract -> {n:,}-step map -> fan-in (pgq_nb alone)",
        unit="ms",
        higher_is_better=False,
        note="wf.submit(): every step and dependency in one transaction",
    )
    finish = Row(
        scenario=f"workflow run to the end, {n:,}-step map (pgq_nb alone)",
        unit="ms",
        higher_is_better=False,
        note=f"q.run_until_idle(concurrency={concurrency}) from submit to idle",
    )
    release = Row(
        scenario=f"fan-in release after the last of {n:,} parents (pgq_nb alone)",
        unit="ms",
        higher_is_better=False,
        target="<= 1000 ms",
        note="wall clock: the last map handler's end to the fan-in handler's start",
    )
    for repeat in range(ctx.sizes.repeats):
        with fresh_pgq_nb(ctx.dsn, ctx.schema("workflow", repeat)) as q:
            times = _once(q, n, concurrency)
        for row, value in zip((submit, finish, release), times, strict=True):
            row.pgq_nb.append(value)
        log(
            f"  workflow     repeat {repeat + 1}  submit {times[0]:8.1f} ms  "
            f"finish {times[1]:8.1f} ms  fan-in release {times[2]:6.1f} ms"
        )
    return [submit, finish, release]
