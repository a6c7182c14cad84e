"""The dashboard's four tabs. Each holds its widgets, built once, and ``update(snapshot)``
sets their values; a refresh creates no new widgets (no comm churn, nothing to leak).

Tables are HTML with inline styles (they render the same in JupyterLab, classic Notebook, VS
Code and exported HTML); every number cell carries ``data-*`` attributes naming what it
counts, so tests and browser checks can find it.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Sequence
from typing import Any

import ipywidgets as widgets

from pgq_nb.notebook.charts import throughput_svg
from pgq_nb.notebook.dashboard_data import (
    FINAL_STATUSES,
    STATUSES,
    FailedJob,
    ScheduleRow,
    Snapshot,
    WorkflowRow,
)

#: Column titles of the counts table (``picked`` is what analysts call running).
STATUS_TITLES = {"picked": "running", "upstream_failed": "upstream failed"}
#: Columns the counts table always has; the other statuses appear when some job has them.
ALWAYS_SHOWN = ("queued", "picked", "succeeded", "failed")
_TABLE = "border-collapse:collapse;font-size:12px;font-family:var(--jp-ui-font-family,sans-serif)"
_CELL = "padding:2px 8px;border-bottom:1px solid #e0e0e0"
_MUTED = "color:#757575"


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value))


def table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, name: str, numeric_from: int = 1
) -> str:
    """An HTML table; cells are given as HTML (escape them first). Columns from
    ``numeric_from`` on are right-aligned."""

    def cell(tag: str, i: int, content: str) -> str:
        align = "right" if i >= numeric_from else "left"
        return f'<{tag} style="{_CELL};text-align:{align}">{content}</{tag}>'

    head = "".join(cell("th", i, esc(h)) for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in rows
    )
    return f'<table class="pgq-{name}" style="{_TABLE}"><tr>{head}</tr>{body}</table>'


def muted(text: str) -> str:
    return f'<span style="{_MUTED}">{esc(text)}</span>'


def clock(value: dt.datetime | None, now: dt.datetime) -> str:
    """A time in the kernel's local zone: HH:MM:SS today, else with its date."""
    if value is None:
        return "—"
    local = value.astimezone()
    if local.date() == now.astimezone().date():
        return f"{local:%H:%M:%S}"
    return f"{local:%Y-%m-%d %H:%M}"


def ago(value: dt.datetime | None, now: dt.datetime) -> str:
    """'12 s ago', '5 min ago', 'in 3 h' relative to the server's ``now``."""
    if value is None:
        return "—"
    seconds = (now - value).total_seconds()
    future, seconds = seconds < 0, abs(seconds)
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            amount = f"{int(seconds // size)} {unit}"
            break
    else:
        amount = f"{int(seconds)} s"
    return f"in {amount}" if future else f"{amount} ago"


def hide(widget: Any, hidden: bool) -> None:
    widget.layout.display = "none" if hidden else None


class OverviewTab:
    """Jobs per entrypoint and status, throughput of the last minutes, live workers."""

    def __init__(self) -> None:
        self.counts = widgets.HTML()
        self.chart = widgets.HTML()
        self.workers = widgets.HTML()
        self.widget = widgets.VBox(
            [
                widgets.HBox(
                    [
                        widgets.VBox([widgets.HTML("<b>Jobs</b>"), self.counts]),
                        widgets.VBox([widgets.HTML("<b>Finished per minute</b>"), self.chart]),
                    ],
                    layout=widgets.Layout(grid_gap="32px", flex_flow="row wrap"),
                ),
                widgets.HTML("<b>Workers</b>"),
                self.workers,
            ]
        )

    def update(self, snap: Snapshot) -> None:
        self.counts.value = counts_table(snap)
        totals = snap.throughput.totals()
        note = ", ".join(f"{totals[s]} {s}" for s in FINAL_STATUSES if totals.get(s))
        capped = " (newest jobs only)" if snap.throughput.capped else ""
        minutes = snap.throughput.minutes(last=15)
        self.chart.value = (
            throughput_svg(snap.throughput, minutes=15)
            + "<br>"
            + muted(f"last {len(minutes)} min{capped}: {note or 'nothing finished'}")
        )
        self.workers.value = workers_table(snap)


def counts_table(snap: Snapshot) -> str:
    shown = [s for s in STATUSES if s in ALWAYS_SHOWN or snap.total(s)]
    headers = ["entrypoint", *(STATUS_TITLES.get(s, s) for s in shown)]

    def number(entrypoint: str, status: str, n: int) -> str:
        text = f"{n:,}" if n else muted("0")
        return f'<span data-entrypoint="{esc(entrypoint)}" data-status="{status}">{text}</span>'

    rows = [
        [esc(ep), *(number(ep, s, by_status.get(s, 0)) for s in shown)]
        for ep, by_status in sorted(snap.counts.items())
    ]
    if not rows:
        return muted("no jobs yet: q.enqueue(...) adds some")
    rows.append(["<b>total</b>", *(f"<b>{number('*', s, snap.total(s))}</b>" for s in shown)])
    return table(headers, rows, name="counts")


def workers_table(snap: Snapshot) -> str:
    if not snap.workers:
        return muted(
            "no worker alive: queued jobs wait until one starts "
            "(q.start_worker() here, or `pgq-nb worker module:q` elsewhere)"
        )
    rows = [
        [
            esc(w["id"]),
            esc(w["host"]),
            esc(w["pid"]),
            esc(w["concurrency"]),
            esc(", ".join(w["entrypoints"] or []) or "all"),
            esc(ago(w["started"], snap.now)),
            f'<span data-worker-heartbeat="{esc(w["id"])}">{esc(ago(w["heartbeat"], snap.now))}'
            "</span>",
        ]
        for w in snap.workers
    ]
    headers = ["id", "host", "pid", "concurrency", "entrypoints", "started", "last heartbeat"]
    return table(headers, rows, name="workers", numeric_from=7)


class FailuresTab:
    """The newest failed jobs: select some and requeue them, or requeue all of one
    entrypoint."""

    def __init__(self) -> None:
        self.summary = widgets.HTML()
        self.select = widgets.SelectMultiple(
            options=[], rows=8, layout=widgets.Layout(width="98%", font_family="monospace")
        )
        self.requeue_selected = widgets.Button(
            description="Requeue selected", icon="redo", disabled=True, button_style="warning"
        )
        self.select_all = widgets.Button(description="Select all", disabled=True)
        self.entrypoint = widgets.Dropdown(options=[], layout=widgets.Layout(width="260px"))
        self.requeue_all = widgets.Button(
            description="Requeue all of it", icon="redo", disabled=True, button_style="warning"
        )
        self.detail = widgets.HTML()
        self.busy = False
        self.jobs: dict[int, FailedJob] = {}
        self._now = dt.datetime.now(dt.UTC)
        self.select.observe(lambda _: self._selection_changed(), names="value")
        self.entrypoint.observe(lambda _: self.sync_buttons(), names="value")
        self.select_all.on_click(lambda _: self._select_all())
        self.widget = widgets.VBox(
            [
                self.summary,
                self.select,
                widgets.HBox([self.requeue_selected, self.select_all]),
                self.detail,
                widgets.HBox([self.entrypoint, self.requeue_all]),
            ]
        )

    def selected_ids(self) -> list[int]:
        return [int(i) for i in self.select.value]

    def update(self, snap: Snapshot) -> None:
        self._now = snap.now
        self.jobs = {job.id: job for job in snap.failures}
        by_entrypoint = snap.failed_by_entrypoint()
        total = sum(by_entrypoint.values())
        if not total:
            self.summary.value = muted("no failed jobs")
        else:
            listed = f"the newest {len(snap.failures)} listed" if total > len(snap.failures) else ""
            self.summary.value = f'<b data-failed-total="{total}">{total:,} failed</b> ' + muted(
                f"(after their retries) {listed}"
            )
        options = tuple((failure_label(job, snap.now), job.id) for job in snap.failures)
        with self.select.hold_sync():
            if tuple(self.select.options) != options:
                kept = tuple(i for i in self.select.value if i in self.jobs)
                self.select.options = options
                self.select.value = kept
        choices = tuple((f"{ep} ({n:,} failed)", ep) for ep, n in by_entrypoint.items())
        if tuple(self.entrypoint.options) != choices:
            previous = self.entrypoint.value
            self.entrypoint.options = choices
            if previous in by_entrypoint:
                self.entrypoint.value = previous
        self._selection_changed()

    def _select_all(self) -> None:
        self.select.value = tuple(value for _, value in self.select.options)

    def _selection_changed(self) -> None:
        chosen = [self.jobs[i] for i in self.selected_ids() if i in self.jobs][:5]
        self.detail.value = "".join(
            f"<div><b>job {job.id}</b> {esc(job.entrypoint)}, attempt {job.attempts}, "
            f"{esc(clock(job.finished, self._now))}<pre style='white-space:pre-wrap;margin:2px 0 "
            f"6px;font-size:11px'>{esc(job.error)}</pre></div>"
            for job in chosen
        )
        self.sync_buttons()

    def sync_buttons(self) -> None:
        self.requeue_selected.disabled = self.busy or not self.select.value
        self.select_all.disabled = self.busy or not self.select.options
        self.requeue_all.disabled = self.busy or self.entrypoint.value is None


def failure_label(job: FailedJob, now: dt.datetime) -> str:
    first_line = (job.error or "").strip().splitlines()[:1]
    error = first_line[0] if first_line else "(no error text)"
    if len(error) > 90:
        error = error[:89] + "…"
    return f"#{job.id}  {job.entrypoint}  ×{job.attempts}  {clock(job.finished, now)}  {error}"


class SchedulesTab:
    """Cron schedules: next and last run, last status; pause, resume and run now."""

    def __init__(self, available: dict[str, bool]) -> None:
        self.available = available
        self.table = widgets.HTML()
        self.pick = widgets.Dropdown(options=[], layout=widgets.Layout(width="260px"))
        self.pause = widgets.Button(description="Pause", icon="pause")
        self.resume = widgets.Button(description="Resume", icon="play")
        self.run_now = widgets.Button(description="Run now", icon="forward")
        self.note = widgets.HTML()
        self.busy = False
        self.rows: dict[str, ScheduleRow] = {}
        self.pick.observe(lambda _: self.sync_buttons(), names="value")
        missing = [name for name, ok in available.items() if not ok]
        if missing:
            self.note.value = muted("not available with this pgq_nb version: " + ", ".join(missing))
        self.sync_buttons()
        self.widget = widgets.VBox(
            [
                self.table,
                widgets.HBox([self.pick, self.pause, self.resume, self.run_now]),
                self.note,
            ]
        )

    def update(self, snap: Snapshot) -> None:
        self.rows = {s.name: s for s in snap.schedules}
        self.table.value = schedules_table(snap.schedules, snap.now)
        choices = tuple(self.rows)
        if tuple(self.pick.options) != choices:
            previous = self.pick.value
            self.pick.options = choices
            if previous in self.rows:
                self.pick.value = previous
        self.sync_buttons()

    def sync_buttons(self) -> None:
        row = self.rows.get(self.pick.value) if self.pick.value is not None else None
        off = self.busy or row is None
        self.pause.disabled = off or not self.available["pause"] or not (row and row.enabled)
        self.resume.disabled = off or not self.available["resume"] or bool(row and row.enabled)
        self.run_now.disabled = off or not self.available["run_now"]


def schedules_table(schedules: list[ScheduleRow], now: dt.datetime) -> str:
    if not schedules:
        return muted('no schedules: @q.schedule("name", "0 * * * *") adds one')
    rows = []
    for s in schedules:
        state = "active" if s.enabled else "<b>paused</b>"
        status = esc(s.last_status or "—")
        if s.last_status == "failed":
            status = f'<span style="color:#c62828" title="{esc(s.last_error)}">{status}</span>'
        rows.append(
            [
                f'<span data-schedule="{esc(s.name)}">{esc(s.name)}</span>',
                f"<code>{esc(s.expression)}</code> {muted(s.tz)}",
                state,
                f"{esc(clock(s.next_run, now))} {muted(ago(s.next_run, now))}"
                if s.enabled
                else muted("—"),
                f"{esc(clock(s.last_run, now))} {muted(ago(s.last_run, now))}"
                if s.last_run
                else muted("never"),
                status,
            ]
        )
    headers = ["schedule", "cron", "state", "next run", "last run", "last status"]
    return table(headers, rows, name="schedules", numeric_from=99)


_BAR_STYLES = {"succeeded": "success", "failed": "danger", "cancelled": "warning"}


class WorkflowsTab:
    """Recent workflow runs: a progress bar each and their steps per status."""

    def __init__(self, slots: int) -> None:
        self.empty = widgets.HTML(muted("no workflow runs yet: q.workflow(name) builds one"))
        self.labels = [widgets.HTML(layout=widgets.Layout(width="300px")) for _ in range(slots)]
        self.bars = [
            widgets.IntProgress(value=0, min=0, max=1, layout=widgets.Layout(width="220px"))
            for _ in range(slots)
        ]
        self.counts = [widgets.HTML() for _ in range(slots)]
        self.rows = [
            widgets.HBox([label, bar, counts], layout=widgets.Layout(display="none"))
            for label, bar, counts in zip(self.labels, self.bars, self.counts, strict=True)
        ]
        self.widget = widgets.VBox([self.empty, *self.rows])

    def update(self, snap: Snapshot) -> None:
        hide(self.empty, bool(snap.workflows))
        for i, row in enumerate(self.rows):
            run = snap.workflows[i] if i < len(snap.workflows) else None
            hide(row, run is None)
            if run is not None:
                self._show(i, run, snap.now)

    def _show(self, i: int, run: WorkflowRow, now: dt.datetime) -> None:
        self.labels[i].value = (
            f'<span data-workflow="{run.id}"><b>{esc(run.name)}</b> #{run.id}</span> '
            f"{esc(run.status)} {muted(ago(run.created, now))}"
        )
        bar = self.bars[i]
        with bar.hold_sync():
            bar.max = max(run.steps, 1)
            bar.value = min(run.done, bar.max)
            bar.bar_style = _BAR_STYLES.get(run.status, "info")
            bar.description = f"{run.done}/{run.steps}"
        self.counts[i].value = " · ".join(
            f'<span data-workflow-status="{run.id}:{s}">{esc(STATUS_TITLES.get(s, s))} {n}</span>'
            for s in STATUSES
            if (n := run.counts.get(s, 0))
        )
