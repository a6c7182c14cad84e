"""HTML of the dashboard: tables, times and labels, as pure functions of the data.

Tables carry a small style block and ``data-*`` attributes naming what each number counts,
so tests and browser checks can find them; they render the same in JupyterLab, classic
Notebook, VS Code and exported HTML. ``counts_table`` suits any static render of the counts.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pgq_nb.errors import InvalidInputError
from pgq_nb.models import STATUSES
from pgq_nb.notebook.dashboard_data import FailedJob, ScheduleRow, Snapshot
from pgq_nb.schedule.cron import CronSpec, next_fire

STATUS_TITLES = {"picked": "running", "upstream_failed": "upstream failed"}
#: Columns the counts table always has; the other statuses appear when some job has them.
ALWAYS_SHOWN = ("queued", "picked", "succeeded", "failed")
_STYLE = (
    "<style>.pgq-t{border-collapse:collapse;font-size:12px}"
    ".pgq-t td,.pgq-t th{padding:2px 8px;border-bottom:1px solid #e0e0e0;text-align:right}"
    ".pgq-t .l{text-align:left}</style>"
)
_MUTED = "color:#757575"


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value))


def table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, name: str, left: int = 1
) -> str:
    """An HTML table; cells are given as HTML (escape them first). The first ``left``
    columns are left-aligned, the others (numbers) right-aligned."""

    def cell(tag: str, i: int, content: str) -> str:
        return f'<{tag} class="l">{content}</{tag}>' if i < left else f"<{tag}>{content}</{tag}>"

    head = "".join(cell("th", i, esc(h)) for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in rows
    )
    return f'{_STYLE}<table class="pgq-t pgq-{name}"><tr>{head}</tr>{body}</table>'


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


def counts_table(counts: dict[str, dict[str, int]]) -> str:
    """Jobs per entrypoint (rows) and status (columns) with a total row, as HTML; usable for
    any static render (``{entrypoint: {status: jobs}}``, e.g. from ``q.counts()``)."""

    def total(status: str) -> int:
        return sum(by_status.get(status, 0) for by_status in counts.values())

    shown = [s for s in STATUSES if s in ALWAYS_SHOWN or total(s)]
    headers = ["entrypoint", *(STATUS_TITLES.get(s, s) for s in shown)]

    def number(entrypoint: str, status: str, n: int) -> str:
        text = f"{n:,}" if n else muted("0")
        return f'<span data-entrypoint="{esc(entrypoint)}" data-status="{status}">{text}</span>'

    rows = [
        [esc(ep), *(number(ep, s, by_status.get(s, 0)) for s in shown)]
        for ep, by_status in sorted(counts.items())
        if any(by_status.values())
    ]
    if not rows:
        return muted("no jobs yet: q.enqueue(...) adds some")
    rows.append(["<b>total</b>", *(f"<b>{number('*', s, total(s))}</b>" for s in shown)])
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
            esc(runs_in(w)),
            esc(", ".join(w["entrypoints"] or []) or "all"),
            esc(ago(w["started"], snap.now)),
            f'<span data-worker-heartbeat="{esc(w["id"])}">{esc(ago(w["heartbeat"], snap.now))}'
            "</span>",
        ]
        for w in snap.workers
    ]
    headers = [
        "id",
        "host",
        "pid",
        "concurrency",
        "runs handlers in",
        "entrypoints",
        "started",
        "last heartbeat",
    ]
    return table(headers, rows, name="workers", left=8)


def runs_in(worker: Mapping[str, Any]) -> str:
    """``threads``, ``4 processes``, or ``threads (+2 processes)`` for a worker of threads
    with a pool for executor="process" entrypoints."""
    size = worker.get("processes")
    if worker.get("executor") == "dask":
        return f"Dask at {worker.get('scheduler') or 'unknown'} ({size} threads)"
    if worker.get("executor") == "process":
        return f"{size} process{'es' if size != 1 else ''}"
    return f"threads (+{size} process{'es' if size != 1 else ''})" if size else "threads"


def limits_table(snap: Snapshot) -> str:
    """Entrypoints with a global limit or a pause, and how many of their jobs run and wait."""
    if not snap.limits:
        return muted("no limits and nothing paused")
    rows = [
        [
            esc(f["entrypoint"]),
            esc(f["max_running"] if f["max_running"] is not None else ""),
            esc(f"{f['rate_per_s']:g}/s" if f["rate_per_s"] is not None else ""),
            "<b>paused</b>" if f["paused"] else "",
            f'<span data-limit-running="{esc(f["entrypoint"])}">{f["running"]:,}</span>',
            f'<span data-limit-waiting="{esc(f["entrypoint"])}">{f["waiting"]:,}</span>',
        ]
        for f in snap.limits
    ]
    headers = ["entrypoint", "max running", "rate limit", "paused", "running", "waiting"]
    return table(headers, rows, name="limits", left=1)


def failure_label(job: FailedJob, now: dt.datetime) -> str:
    first_line = (job.error or "").strip().splitlines()[:1]
    error = first_line[0] if first_line else "(no error text)"
    if len(error) > 90:
        error = error[:89] + "…"
    return f"#{job.id}  {job.entrypoint}  ×{job.attempts}  {clock(job.finished, now)}  {error}"


#: How many ticks after the next one the schedules table lists.
FOLLOWING_TICKS = 2


def following_ticks(s: ScheduleRow, now: dt.datetime) -> str:
    """'then 12:00:00, 13:00:00': the ticks after the next run (daylight saving applied), or
    "" if this machine cannot compute them (a time zone it does not know)."""
    try:
        spec = CronSpec(expression=s.expression, tz=s.tz)
        after, ticks = s.next_run, []
        for _ in range(FOLLOWING_TICKS):
            after = next_fire(spec, after)
            ticks.append(clock(after, now))
    except InvalidInputError:
        return ""
    return "then " + ", ".join(ticks)


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
                f"<br>{muted(following_ticks(s, now))}"
                if s.enabled
                else muted("—"),
                f"{esc(clock(s.last_run, now))} {muted(ago(s.last_run, now))}"
                if s.last_run
                else muted("never"),
                status,
            ]
        )
    headers = ["schedule", "cron", "state", "next run", "last run", "last status"]
    return table(headers, rows, name="schedules", left=6)
