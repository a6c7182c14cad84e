"""The dashboard's four tabs. Each holds its widgets, built once, and ``update(snapshot)``
sets their values; a refresh creates no new widgets (no comm churn, nothing to leak), and a
trait set to the value it has sends nothing. The HTML inside comes from dashboard_html.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import ipywidgets as widgets

from pgq_nb.models import FINAL_STATUSES, STATUSES
from pgq_nb.nbjobs.output import output_hint
from pgq_nb.notebook.charts import throughput_svg
from pgq_nb.notebook.dashboard_data import (
    FailedJob,
    ScheduleRow,
    Snapshot,
    WorkflowRow,
)
from pgq_nb.notebook.dashboard_html import (
    STATUS_TITLES,
    ago,
    clock,
    counts_table,
    esc,
    failure_label,
    limits_table,
    muted,
    schedules_table,
    workers_table,
)


def tag_note(tags: list[str] | None) -> str:
    """The tags of a failed job, for its detail line (q.failed(tag=...) lists its like)."""
    return f", tags {esc(', '.join(tags))}" if tags else ""


_MONOSPACE_SELECT = "<style>.pgq-failures select{font-family:monospace;font-size:12px}</style>"


def hide(widget: Any, hidden: bool) -> None:
    widget.layout.display = "none" if hidden else None


def keep_choice(dropdown: Any, choices: tuple[tuple[str, str], ...]) -> None:
    """Give ``dropdown`` new (label, value) choices, keeping its value if it is still one of
    them, else choosing the first."""
    if tuple(dropdown.options) == choices:
        return
    previous = dropdown.value
    values = [value for _, value in choices]
    with dropdown.hold_sync():
        dropdown.options = choices
        dropdown.value = previous if previous in values else (values[0] if values else None)


def throughput_html(snap: Snapshot) -> str:
    """The chart of jobs finished per minute (last 15) with a line of totals under it."""
    totals = snap.throughput.totals()
    note = ", ".join(f"{totals[s]} {s}" for s in FINAL_STATUSES if totals.get(s))
    capped = " (newest jobs only)" if snap.throughput.capped else ""
    minutes = snap.throughput.minutes(last=15)
    return (
        throughput_svg(snap.throughput, minutes=15)
        + "<br>"
        + muted(f"last {len(minutes)} min{capped}: {note or 'nothing finished'}")
    )


class OverviewTab:
    """Jobs per entrypoint and status, throughput of the last minutes, live workers."""

    def __init__(self) -> None:
        self.counts = widgets.HTML()
        self.chart = widgets.HTML()
        self.workers = widgets.HTML()
        self.limits = widgets.HTML()
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
                widgets.HTML("<b>Limits and pauses</b>"),
                self.limits,
            ]
        )

    def update(self, snap: Snapshot) -> None:
        self.counts.value = counts_table(snap.counts)
        self.chart.value = throughput_html(snap)
        self.workers.value = workers_table(snap)
        self.limits.value = limits_table(snap)


class FailuresTab:
    """The newest failed jobs: select some and requeue them, or requeue all of one
    entrypoint."""

    def __init__(self) -> None:
        self.summary = widgets.HTML()
        self.select = widgets.SelectMultiple(
            options=[], rows=8, layout=widgets.Layout(width="98%")
        ).add_class("pgq-failures")
        auto = widgets.Layout(width="auto")
        self.requeue_selected = widgets.Button(
            description="Requeue selected",
            icon="redo",
            disabled=True,
            button_style="warning",
            layout=auto,
        )
        self.select_all = widgets.Button(description="Select all", disabled=True, layout=auto)
        self.entrypoint = widgets.Dropdown(
            options=[], description="Entrypoint", layout=widgets.Layout(width="320px")
        )
        self.requeue_all = widgets.Button(
            description="Requeue all its failed jobs",
            icon="redo",
            disabled=True,
            button_style="warning",
            layout=auto,
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
                widgets.HBox(
                    [
                        self.requeue_selected,
                        self.select_all,
                        widgets.HTML(
                            muted("select jobs (shift or ctrl click) to see their errors")
                        ),
                    ]
                ),
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
            self.summary.value = _MONOSPACE_SELECT + muted("no failed jobs")
        else:
            listed = f"the newest {len(snap.failures)} listed" if total > len(snap.failures) else ""
            self.summary.value = (
                _MONOSPACE_SELECT
                + f'<b data-failed-total="{total}">{total:,} failed</b> '
                + muted(f"(after their retries) {listed}")
            )
        options = tuple((failure_label(job, snap.now), job.id) for job in snap.failures)
        with self.select.hold_sync():
            if tuple(self.select.options) != options:
                kept = tuple(i for i in self.select.value if i in self.jobs)
                self.select.options = options
                self.select.value = kept
        choices = tuple((f"{ep} ({n:,} failed)", ep) for ep, n in by_entrypoint.items())
        keep_choice(self.entrypoint, choices)
        self._selection_changed()

    def _select_all(self) -> None:
        self.select.value = tuple(value for _, value in self.select.options)

    def _selection_changed(self) -> None:
        chosen = [self.jobs[i] for i in self.selected_ids() if i in self.jobs][:5]
        self.detail.value = "".join(
            f"<div><b>job {job.id}</b> {esc(job.entrypoint)}, attempt {job.attempts}, "
            f"{esc(clock(job.finished, self._now))}{tag_note(job.tags)}"
            f"<pre style='white-space:pre-wrap;margin:2px 0 6px;font-size:11px'>"
            f"{esc(job.error)}</pre>{output_hint(job.entrypoint, job.id)}</div>"
            for job in chosen
        )
        self.sync_buttons()

    def sync_buttons(self) -> None:
        self.requeue_selected.disabled = self.busy or not self.select.value
        self.select_all.disabled = self.busy or not self.select.options
        self.requeue_all.disabled = self.busy or self.entrypoint.value is None


class SchedulesTab:
    """Cron schedules: next and last run, last status; pause, resume and run now."""

    def __init__(self) -> None:
        self.table = widgets.HTML()
        self.pick = widgets.Dropdown(options=[], layout=widgets.Layout(width="260px"))
        self.pause = widgets.Button(description="Pause", icon="pause")
        self.resume = widgets.Button(description="Resume", icon="play")
        self.run_now = widgets.Button(description="Run now", icon="forward")
        self.busy = False
        self.rows: dict[str, ScheduleRow] = {}
        self.pick.observe(lambda _: self.sync_buttons(), names="value")
        self.sync_buttons()
        self.widget = widgets.VBox(
            [self.table, widgets.HBox([self.pick, self.pause, self.resume, self.run_now])]
        )

    def update(self, snap: Snapshot) -> None:
        self.rows = {s.name: s for s in snap.schedules}
        self.table.value = schedules_table(snap.schedules, snap.now)
        keep_choice(self.pick, tuple((name, name) for name in self.rows))
        self.sync_buttons()

    def sync_buttons(self) -> None:
        row = self.rows.get(self.pick.value) if self.pick.value is not None else None
        off = self.busy or row is None
        self.pause.disabled = off or not (row and row.enabled)
        self.resume.disabled = off or bool(row and row.enabled)
        self.run_now.disabled = off


_BAR_STYLES = {"succeeded": "success", "failed": "danger", "cancelled": "warning"}


class WorkflowsTab:
    """Recent workflow runs: a progress bar each and their steps per status."""

    def __init__(self, slots: int) -> None:
        self.empty = widgets.HTML(muted("no workflow runs yet: q.workflow(name) builds one"))
        self.labels = [widgets.HTML(layout=widgets.Layout(width="320px")) for _ in range(slots)]
        self.bars = [
            widgets.IntProgress(value=0, min=0, max=1, layout=widgets.Layout(width="200px"))
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
        colour = {"failed": "#c62828", "succeeded": "#2e7d32"}.get(run.status, "inherit")
        self.labels[i].value = (
            f'<span data-workflow="{run.id}"><b>{esc(run.name)}</b> #{run.id}</span> '
            f'<span style="color:{colour}">{esc(run.status)}</span> '
            f"{muted('started ' + ago(run.created, now))}"
        )
        bar = self.bars[i]
        with bar.hold_sync():
            bar.max = max(run.steps, 1)
            bar.value = min(run.done, bar.max)
            bar.bar_style = _BAR_STYLES.get(run.status, "info")
        self.counts[i].value = f"<b>{run.done}/{run.steps}</b> " + " · ".join(
            f'<span data-workflow-status="{run.id}:{s}">{esc(STATUS_TITLES.get(s, s))} {n}</span>'
            for s in STATUSES
            if (n := run.counts.get(s, 0))
        )
