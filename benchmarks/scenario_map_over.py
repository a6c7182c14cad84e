"""pgq_nb alone: a workflow of one extract step that returns N items, ``wf.map_over`` into an
N-step map made at run time, and a fan-in step (issue #21, item 1).

N is ``Sizes.fan_in_steps`` (10,000; 1,000 in --quick). Timed: the expansion (the flush that
records extract's success and makes the N steps, one transaction, timed around
``completion.record`` by wrapping it), and the run from submit to idle with
``q.run_until_idle(concurrency=64)``, to set beside the ``workflow`` scenario's static map of
the same size. Each repeat in a fresh schema; medians.
"""

from __future__ import annotations

import time
from typing import Any

import pgq_nb
from benchmarks.common import Context, Row, fresh_pgq_nb, log
from pgq_nb import workflow_maps


def _once(q: pgq_nb.Queue, n: int, concurrency: int) -> tuple[float, float]:
    """(expansion ms, submit-to-idle ms) of one run."""
    expansions: list[float] = []
    expand = workflow_maps.expand

    async def timed(
        conn: Any, queries: dict[str, str], batch: Any, done: Any, sources: Any = None
    ) -> None:
        began = time.perf_counter()
        await expand(conn, queries, batch, done, sources)
        if any(r["id"] == 1 for r in done):  # the extract step (the schema is fresh)
            expansions.append((time.perf_counter() - began) * 1000)

    @q.entrypoint("bench_extract")
    async def extract(job: pgq_nb.Job) -> list[int]:
        return list(range(n))

    @q.entrypoint("bench_map")
    async def transform(job: pgq_nb.Job) -> int:
        return int(job.data) * 2

    @q.entrypoint("bench_fan_in")
    async def total(job: pgq_nb.Job) -> int:
        return sum(job.parent_results()["bench_map"])

    wf = q.workflow("bench_map_over")
    parts = wf.map_over(wf.step("bench_extract"), "bench_map")
    wf.step("bench_fan_in", depends_on=parts)
    began = time.perf_counter()
    run = wf.submit()
    workflow_maps.expand = timed
    try:
        q.run_until_idle(concurrency=concurrency, wait_for_scheduled=0)
    finally:
        workflow_maps.expand = expand
    finished = time.perf_counter()
    if run.state() != "succeeded" or run.results()["bench_fan_in"] != 2 * sum(range(n)):
        raise RuntimeError(f"workflow {run.state()}: the fan-in did not sum all {n} items")
    if len(expansions) != 1:
        raise RuntimeError(f"the extract step expanded {len(expansions)} times")
    return expansions[0], (finished - began) * 1000


def run(ctx: Context) -> list[Row]:
    n, concurrency = ctx.sizes.fan_in_steps, ctx.sizes.workflow_concurrency
    expand = Row(
        scenario=f"map_over expansion of {n:,} items (pgq_nb alone)",
        unit="ms",
        higher_is_better=False,
        note="expand_maps: the N steps, their edges and the fan-in's count, one statement",
    )
    finish = Row(
        scenario=f"workflow run to the end, {n:,}-step map_over (pgq_nb alone)",
        unit="ms",
        higher_is_better=False,
        note=f"q.run_until_idle(concurrency={concurrency}) from submit to idle",
    )
    for repeat in range(ctx.sizes.repeats):
        with fresh_pgq_nb(ctx.dsn, ctx.schema("map_over", repeat)) as q:
            times = _once(q, n, concurrency)
        for row, value in zip((expand, finish), times, strict=True):
            row.pgq_nb.append(value)
        log(
            f"  map_over     repeat {repeat + 1}  expansion {times[0]:8.1f} ms  "
            f"run {times[1]:8.1f} ms"
        )
    return [expand, finish]
