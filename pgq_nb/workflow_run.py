"""A submitted workflow: its state, results, waiting, retry and cancel."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from pgq_nb import runtime
from pgq_nb.errors import JobNotFoundError
from pgq_nb.models import FINAL_STATUSES, STATUSES
from pgq_nb.operations import cancel_jobs
from pgq_nb.query_errors import guard_public_calls
from pgq_nb.waiting import wait_until
from pgq_nb.workflow_state import group_results

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from pgq_nb.store import Store


@guard_public_calls
class AsyncWorkflowRun:
    """A workflow run, for async code. Get one from ``await wf.submit()`` or
    ``await q.aio.workflow_run(id)``."""

    def __init__(self, store: Store, workflow_id: int, name: str) -> None:
        self.store = store
        self.id = workflow_id
        self.name = name

    async def _row(self) -> Any:
        row = await self.store.pool.fetchrow(self.store.queries["get_workflow"], self.id)
        if row is None:
            raise JobNotFoundError(f"no workflow run with id {self.id}")
        return row

    @runtime.bridged
    async def state(self) -> str:
        """running, succeeded, failed or cancelled."""
        status: str = (await self._row())["status"]
        return status

    @runtime.bridged
    async def counts(self) -> dict[str, int]:
        """Steps per status (every status present, zeros included)."""
        rows = await self.store.pool.fetch(self.store.queries["workflow_counts"], self.id)
        out = dict.fromkeys(STATUSES, 0)
        for r in rows:
            out[r["status"]] += r["n"]
        return out

    @runtime.bridged
    async def steps(self) -> list[dict[str, Any]]:
        """Every step, live or finished, in submission order, as dicts."""
        rows = await self.store.pool.fetch(self.store.queries["workflow_steps"], self.id)
        return [dict(r) for r in rows]

    @runtime.bridged
    async def status(self) -> pd.DataFrame:
        """One row per step: name, index, path (a map_over's step: its source's place, then
        its item's), entrypoint, status, attempts, started, finished, duration_s, error (a
        DataFrame). A map_over's steps appear as they are made."""
        from pgq_nb.notebook import workflows

        frame: pd.DataFrame = workflows.steps_frame(await self.steps())
        return frame

    @runtime.bridged
    async def timeline(self, *, max_rows: int = 50) -> Figure:
        """A Gantt chart of the run (a matplotlib Figure, shown once, statically, in a
        notebook): per step its queue wait and run, coloured by status; a running run's bars
        end at now. More than ``max_rows`` steps are folded into one row per step name."""
        from pgq_nb import workflow_timeline
        from pgq_nb.notebook.timeline import timeline_figure

        q = self.store
        data = await workflow_timeline.read(q.pool, q.queries, self.id, max_rows=max_rows)
        return timeline_figure(data)

    @runtime.bridged
    async def results(self) -> dict[str, Any]:
        """Results of the succeeded steps, by step name (a map step's as a list in row
        order)."""
        rows = await self.store.pool.fetch(self.store.queries["workflow_results"], self.id)
        return group_results(rows)

    @runtime.bridged
    async def wait(self, timeout: float | None = None, progress: bool | None = None) -> str:
        """Wait until the run is over (no step left to run); return its final state.

        ``progress`` shows a bar of finished steps (default: in a notebook)."""
        steps: int = (await self._row())["steps"]
        grown = [steps]  # a map_over adds steps as it runs

        async def poll() -> tuple[str | None, int]:
            row = await self._row()
            grown[0] = row["steps"]
            counts = await self.counts() if progress is not False else {}
            finished = sum(counts.get(s, 0) for s in FINAL_STATUSES)
            return (None if row["finished"] is None else row["status"]), finished

        return await wait_until(
            poll,
            total=steps,
            timeout=timeout,
            progress=progress,
            description=f"workflow {self.name}",
            unit="step",
            grown=lambda: grown[0],
            timed_out=lambda: (
                f"workflow run {self.id} ({self.name!r}) still running after {timeout} s"
            ),
        )

    @runtime.bridged
    async def retry(self) -> int:
        """Requeue the failed, cancelled and upstream_failed steps (fresh attempts); each runs
        once its parents have succeeded. Returns how many steps were requeued."""
        n: int = await self.store.pool.fetchval(self.store.queries["retry_workflow_steps"], self.id)
        return n

    @runtime.bridged
    async def cancel(self) -> int:
        """Cancel every unfinished step: waiting ones at once, running ones are told to stop
        (a ``def`` handler cannot be interrupted: its step ends as it returns). A run that is
        over stays as it ended. Returns how many steps were cancelled or told to stop."""
        q = self.store
        async with q.pool.acquire() as conn, conn.transaction():
            # mark first: that waits for a source's completion holding the run row, and the
            # next statement's snapshot then sees every step it made; one that expands later
            # sees the run cancelled and cancels its new steps itself (expand_maps)
            await conn.execute(q.queries["cancel_workflow"], self.id)
            live = await conn.fetch(q.queries["workflow_live_steps"], self.id)
        outcome = await cancel_jobs(q, [r["id"] for r in live]) if live else {}
        return sum(v in ("cancelled", "cancelling") for v in outcome.values())


class WorkflowRun:
    """A workflow run, for notebooks and scripts. Get one from ``wf.submit()`` or
    ``q.workflow_run(id)`` (after a kernel restart)."""

    def __init__(self, aio: AsyncWorkflowRun) -> None:
        self.aio = aio

    @property
    def id(self) -> int:
        return self.aio.id

    @property
    def name(self) -> str:
        return self.aio.name

    state = runtime.blocking(AsyncWorkflowRun.state)
    counts = runtime.blocking(AsyncWorkflowRun.counts)
    steps = runtime.blocking(AsyncWorkflowRun.steps)
    status = runtime.blocking(AsyncWorkflowRun.status)
    timeline = runtime.blocking(AsyncWorkflowRun.timeline)
    results = runtime.blocking(AsyncWorkflowRun.results)
    wait = runtime.blocking(AsyncWorkflowRun.wait)
    retry = runtime.blocking(AsyncWorkflowRun.retry)
    cancel = runtime.blocking(AsyncWorkflowRun.cancel)

    def _repr_html_(self) -> str:
        counts = self.counts()
        cells = "".join(f"<td>{html.escape(k)}: <b>{v}</b></td>" for k, v in counts.items() if v)
        return (
            f"<b>workflow {html.escape(self.name)}</b> (run {self.id}, {self.state()})"
            f"<table><tr>{cells}</tr></table>"
        )

    def __repr__(self) -> str:
        return f"<WorkflowRun {self.id} {self.name!r}>"
