"""The dashboard as one piece of static HTML, for where widgets are not rendered.

Displaying a dashboard gives the frontend two views of it in one bundle: the live widget
(``application/vnd.jupyter.widget-view+json``), which JupyterLab, Notebook and VS Code show
while a kernel runs, and this snapshot as ``text/html``, which the others show instead:
GitHub's notebook view, and nbconvert or nbviewer when the notebook was saved without widget
state. It holds the tables as they were when the dashboard was displayed (all four tabs, one
under the other), so a saved notebook shows them as they were.
"""

from __future__ import annotations

from pgq_nb.models import STATUSES
from pgq_nb.nbjobs.output import output_hint
from pgq_nb.notebook.dashboard_data import Snapshot
from pgq_nb.notebook.dashboard_html import (
    STATUS_TITLES,
    ago,
    clock,
    counts_table,
    esc,
    limits_table,
    muted,
    schedules_table,
    table,
    workers_table,
)
from pgq_nb.notebook.dashboard_tabs import throughput_html

#: Failed jobs listed in the snapshot (the newest; the total is given too)
FAILURE_ROWS = 10


def totals(snap: Snapshot) -> list[str]:
    """'1 queued', '0 running', '4 failed', '1 worker': the header's numbers."""
    workers = len(snap.workers)
    return [
        f"{snap.total('queued'):,} queued",
        f"{snap.total('picked'):,} running",
        f"{snap.total('failed'):,} failed",
        f"{workers} worker{'s' if workers != 1 else ''}",
    ]


def snapshot_html(schema: str, snap: Snapshot | None, *, error: str | None = None) -> str:
    """The whole dashboard of ``snap`` as static HTML; ``snap`` None: nothing read yet."""
    header = [f"<b>pgq_nb</b> {muted('schema')} {esc(schema)}"]
    if snap is not None:
        header += [*totals(snap), muted(f"snapshot of {clock(snap.now, snap.now)}")]
    parts = ['<div class="pgq-header">' + " · ".join(header) + "</div>"]
    if error is not None:
        parts.append(f'<div style="color:#c62828">⚠ refresh failed: {esc(error)}</div>')
    if snap is None:
        parts.append(muted("loading… (no data had been read yet when this was displayed)"))
    else:
        for title, body in (
            ("Jobs", counts_table(snap.counts)),
            ("Finished per minute", throughput_html(snap)),
            ("Workers", workers_table(snap)),
            ("Limits and pauses", limits_table(snap)),
            ("Failures", failures_html(snap)),
            ("Schedules", schedules_table(snap.schedules, snap.now)),
            ("Workflows", workflows_html(snap)),
        ):
            parts.append(f'<div style="margin-top:8px"><b>{title}</b></div>{body}')
    parts.append(
        muted("a snapshot taken when the dashboard was displayed; run the cell for the live one")
    )
    return '<div class="pgq-snapshot">' + "".join(parts) + "</div>"


def failures_html(snap: Snapshot) -> str:
    total = sum(snap.failed_by_entrypoint().values())
    if not total:
        return muted("no failed jobs")
    shown = snap.failures[:FAILURE_ROWS]
    listed = f" (after their retries), the newest {len(shown)} listed" if shown else ""
    rows = []
    for job in shown:
        lines = (job.error or "").strip().splitlines()
        error = lines[0] if lines else "(no error text)"
        rows.append(
            [
                f'<span data-failed-job="{job.id}">{job.id}</span>',
                esc(job.entrypoint),
                esc(job.attempts),
                esc(clock(job.finished, snap.now)),
                esc(error if len(error) <= 120 else error[:119] + "…")
                + output_hint(job.entrypoint, job.id),
            ]
        )
    summary = f'<b data-failed-total="{total}">{total:,} failed</b>{muted(listed)}'
    headers = ["job", "entrypoint", "attempts", "finished", "error"]
    return summary + (table(headers, rows, name="failures", left=5) if rows else "")


def workflows_html(snap: Snapshot) -> str:
    if not snap.workflows:
        return muted("no workflow runs yet: q.workflow(name) builds one")
    rows = [
        [
            f'<span data-workflow="{run.id}"><b>{esc(run.name)}</b> #{run.id}</span>',
            esc(run.status),
            f"{run.done}/{run.steps}",
            " · ".join(
                f'<span data-workflow-status="{run.id}:{s}">{esc(STATUS_TITLES.get(s, s))} {n}'
                "</span>"
                for s in STATUSES
                if (n := run.counts.get(s, 0))
            ),
            esc(ago(run.created, snap.now)),
        ]
        for run in snap.workflows
    ]
    headers = ["workflow run", "status", "done", "steps by status", "started"]
    return table(headers, rows, name="workflows", left=5)
