"""What the pages read, through the queue (``q.aio``: counts, workers, limits, job look-ups,
schedules, workflow runs) and named queries (``dashboard.sql``, ``web.sql``). Every read is
bounded: counters, the live table, indexed ranges with a LIMIT; none counts over history, so a
page costs the same with a million finished jobs (``python -m benchmarks --only web``).

The queries run on the pgq_nb loop, which owns the pool (:func:`pgq_nb.runtime.run_here`);
the web server's own loop only awaits them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from pgq_nb import runtime
from pgq_nb.schedule.cron import CronSpec, next_fire
from pgq_nb.workflow_timeline import Timeline
from pgq_nb.workflow_timeline import build as build_timeline

if TYPE_CHECKING:
    from pgq_nb.queue import AsyncQueue

T = TypeVar("T")
#: The chart's window and the most finished jobs it looks at (a range of history_finished_idx).
THROUGHPUT_MINUTES = 15
THROUGHPUT_CAP = 20_000
#: Characters of an error and of a traceback the failures page shows (the job's page has all).
FAILURE_TEXT = 4000
SCHEDULES_SHOWN = 200
STEPS_SHOWN = 500
#: The run page's timeline reads at most this many steps of a run (it says when there are more)
TIMELINE_STEPS = 10_000
NEXT_TICKS = 3
#: The longest a page's read may take (its pool slot, its statement): a lock held on the jobs
#: table or a stuck server gives a "database not answering" page, not a hung one.
READ_TIMEOUT_S = 5.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Overview:
    now: dt.datetime
    #: {entrypoint: {status: jobs}}, statuses with no jobs left out
    counts: dict[str, dict[str, int]]
    workers: list[dict[str, Any]]
    limits: list[dict[str, Any]]
    #: {minute: {status: jobs}} over the last THROUGHPUT_MINUTES, and whether the cap was hit
    per_minute: dict[dt.datetime, dict[str, int]]
    capped: bool
    #: every entrypoint some queue or worker registered (the ``entrypoints`` table, small)
    known: list[str] = dataclasses.field(default_factory=list)

    def total(self, status: str) -> int:
        return sum(by_status.get(status, 0) for by_status in self.counts.values())

    @property
    def paused(self) -> set[str]:
        return {f["entrypoint"] for f in self.limits if f["paused"]}

    @property
    def entrypoints(self) -> list[str]:
        return sorted(set(self.counts) | {f["entrypoint"] for f in self.limits} | set(self.known))


async def _here(coro: Coroutine[Any, Any, T]) -> T:
    return await runtime.run_here(coro)


async def overview(aio: AsyncQueue) -> Overview:
    counts: dict[str, dict[str, int]] = {}
    for entrypoint, status, n in await aio.counts():
        if n:
            counts.setdefault(entrypoint, {})[status] = int(n)

    rows = await fetch(aio, "dashboard_throughput", None, THROUGHPUT_MINUTES * 60.0, THROUGHPUT_CAP)
    per_minute: dict[dt.datetime, dict[str, int]] = {}
    for r in rows:
        if r["minute"] is not None:
            per_minute.setdefault(r["minute"], {})[r["status"]] = int(r["n"])
    return Overview(
        now=rows[0]["now"],
        counts=counts,
        workers=await aio.worker_list(),
        limits=await aio.flow(),
        per_minute=per_minute,
        capped=rows[0]["seen"] >= THROUGHPUT_CAP,
        known=[r["name"] for r in await fetch(aio, "known_entrypoints")],
    )


async def fetch(aio: AsyncQueue, name: str, *args: Any) -> list[dict[str, Any]]:
    """Rows of the named query ``name`` as dicts, read within READ_TIMEOUT_S: a pool slot
    waited for at most that long, the query under that ``statement_timeout`` (a lock or a
    stuck server cannot keep the page, or the pool slot, forever)."""

    async def run() -> list[dict[str, Any]]:
        async with aio.pool.acquire(timeout=READ_TIMEOUT_S) as conn, conn.transaction():
            await conn.execute(f"SET LOCAL statement_timeout = {int(READ_TIMEOUT_S * 1000)}")
            rows = await conn.fetch(aio.queries[name], *args, timeout=READ_TIMEOUT_S + 1)
        return [dict(r) for r in rows]

    return await _here(run())


async def entrypoints(aio: AsyncQueue) -> set[str]:
    """Every entrypoint the ``entrypoints`` table knows (registered, paused or limited) or that
    has jobs: those the overview lists, the only ones its forms may pause or resume."""
    known = {r["name"] for r in await fetch(aio, "known_entrypoints")}
    return known | {ep for ep, _, n in await aio.counts() if n}


async def failures(aio: AsyncQueue, entrypoint: str | None, limit: int) -> list[dict[str, Any]]:
    return await fetch(aio, "web_failures", limit, entrypoint, FAILURE_TEXT)


async def failed_by_entrypoint(aio: AsyncQueue) -> dict[str, int]:
    """Jobs that failed for good per entrypoint, from the counters."""
    return {ep: n for ep, status, n in await aio.counts() if status == "failed" and n}


async def schedules(aio: AsyncQueue) -> tuple[list[dict[str, Any]], int, dt.datetime]:
    """Schedules by name (at most SCHEDULES_SHOWN), each with its next ticks; how many there
    are; the server's clock."""
    rows = await fetch(aio, "dashboard_schedules", SCHEDULES_SHOWN)
    totals = await fetch(aio, "dashboard_totals")
    now = (await fetch(aio, "server_now"))[0]["now"]
    for row in rows:
        row["next_ticks"] = next_ticks(row["expression"], row["tz"], row["next_run"])
    return rows, int(totals[0]["schedules"]), now


def next_ticks(
    expression: str, tz: str, first: dt.datetime, n: int = NEXT_TICKS
) -> list[dt.datetime]:
    """``first`` and the ticks after it (none if the stored expression no longer parses)."""
    ticks = [first]
    try:
        spec = CronSpec(expression=expression, tz=tz)
        while len(ticks) < n:
            ticks.append(next_fire(spec, ticks[-1]))
    except (ValueError, StopIteration):
        return ticks[:1]
    return ticks


async def workflow_runs(aio: AsyncQueue, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` runs with their steps per status (only those runs' rows read)."""
    runs = await fetch(aio, "dashboard_workflows", limit)
    if runs:
        counted: dict[int, dict[str, int]] = {r["id"]: {} for r in runs}
        ids = list(counted)
        for r in await fetch(aio, "dashboard_workflow_counts", ids):
            by_status = counted[r["workflow_id"]]
            by_status[r["status"]] = by_status.get(r["status"], 0) + int(r["n"])
        for run in runs:
            run["counts"] = counted[run["id"]]
    return runs


async def workflow_run(aio: AsyncQueue, run_id: int) -> dict[str, Any] | None:
    """One run with its counts and its first STEPS_SHOWN steps; None if there is none."""
    found = await fetch(aio, "web_workflow_run", run_id)
    if not found:
        return None
    run = found[0]
    run["counts"] = {}
    for r in await fetch(aio, "dashboard_workflow_counts", [run_id]):
        run["counts"][r["status"]] = run["counts"].get(r["status"], 0) + int(r["n"])
    run["step_rows"] = await fetch(aio, "web_workflow_steps", run_id, STEPS_SHOWN)
    return run


async def workflow_timeline(aio: AsyncQueue, run_id: int) -> Timeline | None:
    """The run's timeline from its first TIMELINE_STEPS steps; None if there is no such run."""
    found = await fetch(aio, "workflow_timeline_run", run_id)
    if not found:
        return None
    steps = await fetch(aio, "workflow_timeline_steps", run_id, TIMELINE_STEPS + 1)
    run = found[0]
    capped = len(steps) > TIMELINE_STEPS
    return build_timeline(run, steps[:TIMELINE_STEPS], run["now"], capped=capped)
