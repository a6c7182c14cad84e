"""What the dashboard shows, read in one pass on the pgq_nb loop: :class:`Snapshot`.

Every read is cheap enough to repeat every second or two: counts come from the live table
(small) and the finished_counts counters, the throughput from a capped range of
history_finished_idx, failures, schedules and workflows from indexed look-ups with a LIMIT
(see ``sql/queries/dashboard.sql``). What a title counts is counted over every row, never
over a capped list (``dashboard_totals``). Step counts of a workflow run that has finished are
cached for a minute, so a big finished run is not counted again on every refresh.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import TYPE_CHECKING, Any

from pgq_nb.models import FINAL_STATUSES
from pgq_nb.notebook.charts import Throughput, fetch_throughput

if TYPE_CHECKING:
    from pgq_nb.queue import AsyncQueue

#: How long the step counts of a finished workflow run are reused before they are read again.
SETTLED_TTL_S = 60.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class FailedJob:
    """A job that failed for good, as the Failures tab lists it."""

    id: int
    entrypoint: str
    attempts: int
    finished: dt.datetime
    error: str | None
    #: the job's tags (q.enqueue(tags=...)), None when it has none
    tags: list[str] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScheduleRow:
    """A cron schedule and the status of the job its last tick enqueued."""

    name: str
    expression: str
    tz: str
    enabled: bool
    next_run: dt.datetime
    last_run: dt.datetime | None
    last_job_id: int | None
    last_status: str | None
    last_finished: dt.datetime | None
    last_error: str | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkflowRow:
    """A workflow run with its steps per status."""

    id: int
    name: str
    status: str
    steps: int
    created: dt.datetime
    finished: dt.datetime | None
    counts: dict[str, int]

    @property
    def done(self) -> int:
        """Steps that have finished, however they ended."""
        return sum(self.counts.get(s, 0) for s in FINAL_STATUSES)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Snapshot:
    """One refresh's worth of data, by the server's clock ``now``."""

    now: dt.datetime
    #: {entrypoint: {status: jobs}}, statuses with no jobs left out
    counts: dict[str, dict[str, int]]
    workers: list[dict[str, Any]]
    throughput: Throughput
    failures: list[FailedJob]
    schedules: list[ScheduleRow]
    workflows: list[WorkflowRow]
    #: entrypoints with a global limit or a pause (``q.flow()``)
    limits: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: every schedule and every running workflow run, counted (the lists above are capped)
    schedules_total: int = 0
    workflows_running: int = 0

    def total(self, status: str) -> int:
        return sum(by_status.get(status, 0) for by_status in self.counts.values())

    def failed_by_entrypoint(self) -> dict[str, int]:
        return {ep: s["failed"] for ep, s in sorted(self.counts.items()) if s.get("failed")}


class SnapshotReader:
    """Reads snapshots of one queue; keeps the step counts of finished workflow runs."""

    def __init__(
        self,
        aio: AsyncQueue,
        *,
        failures: int = 50,
        schedules: int = 50,
        workflows: int = 10,
        throughput_minutes: int = 15,
        throughput_cap: int = 20_000,
    ) -> None:
        self.aio = aio
        self.failures_limit = failures
        self.schedules_limit = schedules
        self.workflows_limit = workflows
        self.throughput_minutes = throughput_minutes
        self.throughput_cap = throughput_cap
        # {run id: ((status, finished), when counted, counts)} of finished runs
        self._settled: dict[int, tuple[tuple[str, dt.datetime | None], float, dict[str, int]]] = {}

    async def read(self) -> Snapshot:
        """Read everything the dashboard shows (one pooled connection at a time)."""
        aio = self.aio
        queries = aio.queries
        counts: dict[str, dict[str, int]] = {}
        for entrypoint, status, n in await aio.counts():
            if n:
                counts.setdefault(entrypoint, {})[status] = int(n)
        workers = await aio.worker_list()
        async with aio.pool.acquire() as conn:
            throughput = await fetch_throughput(
                aio,
                window_s=self.throughput_minutes * 60.0,
                cap=self.throughput_cap,
                connection=conn,
            )
            failed = await conn.fetch(queries["dashboard_failures"], self.failures_limit)
            schedules = await conn.fetch(queries["dashboard_schedules"], self.schedules_limit)
            runs = await conn.fetch(queries["dashboard_workflows"], self.workflows_limit)
            workflows = await self._workflows(conn, runs)
            limits = [dict(r) for r in await conn.fetch(queries["flow_overview"])]
            totals = await conn.fetchrow(queries["dashboard_totals"])
        return Snapshot(
            now=throughput.now,
            counts=counts,
            workers=workers,
            throughput=throughput,
            failures=[FailedJob(**dict(r)) for r in failed],
            schedules=[ScheduleRow(**dict(r)) for r in schedules],
            workflows=workflows,
            limits=limits,
            schedules_total=int(totals["schedules"]),
            workflows_running=int(totals["workflows_running"]),
        )

    async def _workflows(self, conn: Any, runs: list[Any]) -> list[WorkflowRow]:
        def key(run: Any) -> tuple[str, dt.datetime | None]:
            return (run["status"], run["finished"])

        now = time.monotonic()

        def stale(run: Any) -> bool:
            cached = self._settled.get(run["id"])
            return (
                run["finished"] is None
                or cached is None
                or cached[0] != key(run)
                or now - cached[1] > SETTLED_TTL_S
            )

        fresh = [r["id"] for r in runs if stale(r)]
        counted: dict[int, dict[str, int]] = {i: {} for i in fresh}
        if fresh:
            for r in await conn.fetch(self.aio.queries["dashboard_workflow_counts"], fresh):
                by_status = counted[r["workflow_id"]]
                by_status[r["status"]] = by_status.get(r["status"], 0) + int(r["n"])
        out = []
        settled = {}
        for run in runs:
            if run["id"] in counted:
                run_counts = counted[run["id"]]
                if run["finished"] is not None:
                    settled[run["id"]] = (key(run), now, run_counts)
            else:
                settled[run["id"]] = self._settled[run["id"]]
                run_counts = settled[run["id"]][2]
            out.append(WorkflowRow(**dict(run), counts=run_counts))
        self._settled = settled  # forget runs that dropped off the list
        return out
