"""The pages, as functions of their data and the request's :class:`~pgq_nb.web.html.Context`."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from typing import Any

from pgq_nb.models import STATUSES, JobInfo
from pgq_nb.web.data import THROUGHPUT_MINUTES, Overview
from pgq_nb.web.html import (
    STATUS_TITLES,
    Context,
    action,
    csrf_field,
    error_html,
    esc,
    layout,
    muted,
    table,
    throughput_svg,
    traceback_html,
    when,
)
from pgq_nb.web.timeline import timeline_html
from pgq_nb.workflow_timeline import Timeline

#: The job page shows at most this much of a payload or result.
SHOWN_BYTES = 100_000
ALWAYS_SHOWN = ("queued", "picked", "succeeded", "failed")


def job_link(job_id: int) -> str:
    return f'<a href="/jobs/{int(job_id)}">{int(job_id)}</a>'


def status_line(ov: Overview) -> str:
    n = len(ov.workers)
    return (
        f'<p><b data-total="queued">{ov.total("queued"):,}</b> queued · '
        f'<b data-total="picked">{ov.total("picked"):,}</b> running · '
        f'<b data-total="succeeded">{ov.total("succeeded"):,}</b> succeeded · '
        f'<b data-total="failed">{ov.total("failed"):,}</b> failed · '
        f'<b data-total="workers">{n}</b> worker{"s" if n != 1 else ""}</p>'
    )


def overview(ctx: Context, ov: Overview) -> str:
    shown = [s for s in STATUSES if s in ALWAYS_SHOWN or ov.total(s)]
    paused = ov.paused
    rows = []
    for ep in ov.entrypoints:
        by_status = ov.counts.get(ep, {})
        cells = [
            f'<span data-entrypoint="{esc(ep)}" data-status="{s}">{by_status.get(s, 0):,}</span>'
            for s in shown
        ]
        verb = "resume" if ep in paused else "pause"
        state = '<b data-paused="' + esc(ep) + '">paused</b> ' if ep in paused else ""
        button = action(
            ctx, f"/entrypoints/{verb}", verb.capitalize(), {"entrypoint": ep}, name=f"{verb}:{ep}"
        )
        rows.append([esc(ep), *cells, state + button])
    counts = (
        table(["entrypoint", *(STATUS_TITLES.get(s, s) for s in shown), ""], rows, name="counts")
        if rows
        else muted("no jobs yet")
    )
    chart = throughput_svg(ov.per_minute, ov.now, THROUGHPUT_MINUTES)
    if ov.capped:
        chart += muted(" (the newest jobs only)")
    workers = (
        table(
            ["id", "host", "pid", "concurrency", "entrypoints", "started", "last heartbeat"],
            [
                [
                    esc(w["id"]),
                    esc(w["host"]),
                    esc(w["pid"]),
                    esc(w["concurrency"]),
                    esc(", ".join(w["entrypoints"] or []) or "all"),
                    when(w["started"], ov.now),
                    when(w["heartbeat"], ov.now),
                ]
                for w in ov.workers
            ],
            name="workers",
        )
        if ov.workers
        else muted("no worker alive: queued jobs wait until one starts (pgq-nb worker module:q)")
    )
    limits = (
        table(
            ["entrypoint", "max running", "rate limit", "paused", "running", "waiting"],
            [
                [
                    esc(f["entrypoint"]),
                    esc(f["max_running"] if f["max_running"] is not None else ""),
                    esc(f"{f['rate_per_s']:g}/s" if f["rate_per_s"] is not None else ""),
                    "paused" if f["paused"] else "",
                    f"{f['running']:,}",
                    f"{f['waiting']:,}",
                ]
                for f in ov.limits
            ],
            name="limits",
        )
        if ov.limits
        else muted("no limits and nothing paused")
    )
    body = (
        f'<div data-live="overview"><h2>Jobs</h2>{counts}'
        f"<h2>Finished per minute (last {THROUGHPUT_MINUTES} min)</h2>{chart}"
        f"<h2>Workers</h2>{workers}<h2>Limits and pauses</h2>{limits}</div>"
    )
    return layout(ctx, "Overview", body, status_line=status_line(ov))


def failures(
    ctx: Context,
    rows: list[dict[str, Any]],
    by_entrypoint: dict[str, int],
    entrypoint: str | None,
    limit: int,
    now: dt.datetime,
) -> str:
    total = sum(by_entrypoint.values())
    summary = [f'<p><b data-failed-total="{total}">{total:,}</b> jobs failed for good']
    if entrypoint is not None:
        summary.append(f" ({by_entrypoint.get(entrypoint, 0):,} of {esc(entrypoint)})")
    summary.append(f"; the newest {len(rows)} are listed.</p>")
    per_ep = []
    for ep, n in sorted(by_entrypoint.items()):
        link = f'<a href="/failures?entrypoint={esc(_q(ep))}">{esc(ep)}</a>'
        button = action(
            ctx,
            "/failures/requeue",
            f"Requeue all {n:,}",
            {"entrypoint": ep},
            name=f"requeue-all:{ep}",
        )
        per_ep.append([link, f"{n:,}", button])
    by_ep = (
        table(["entrypoint", "failed", ""], per_ep, name="failed-by-entrypoint") if per_ep else ""
    )
    items = []
    for r in rows:
        check = (
            ""
            if ctx.read_only
            else f'<input type="checkbox" name="ids" value="{int(r["id"])}" form="requeue-selected"'
            f' aria-label="select job {int(r["id"])}"> '
        )
        one = action(
            ctx, "/failures/requeue", "Requeue", {"ids": r["id"]}, name=f"requeue:{r['id']}"
        )
        details = (
            f"<details><summary>{error_html(ctx, r['error'])}</summary>"
            + error_html(ctx, r["error"], whole=True)
            + traceback_html(ctx, r["traceback"])
            + "</details>"
        )
        items.append(
            [
                check + f'<span data-failed-job="{int(r["id"])}">{job_link(r["id"])}</span>',
                esc(r["entrypoint"]),
                f"{r['attempts']}",
                when(r["finished"], now),
                details,
                one,
            ]
        )
    listing = (
        table(["job", "entrypoint", "attempts", "finished", "error", ""], items, name="failures")
        if items
        else muted("no failed jobs")
    )
    selected = (
        ""
        if ctx.read_only or not items
        else f'<form id="requeue-selected" method="post" action="/failures/requeue">'
        f'{csrf_field(ctx)}<button data-action="requeue-selected">Requeue selected</button></form>'
    )
    filters = (
        f'<form method="get" action="/failures">entrypoint <input name="entrypoint" '
        f'value="{esc(entrypoint or "")}"> show <input name="limit" size="4" value="{limit}"> '
        "<button>Filter</button></form>"
    )
    body = f'{filters}<div data-live="failures">{"".join(summary)}{by_ep}{listing}</div>{selected}'
    return layout(ctx, "Failures", body)


def _q(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def schedules(ctx: Context, rows: list[dict[str, Any]], total: int, now: dt.datetime) -> str:
    items = []
    for s in rows:
        name = s["name"]
        if s["enabled"]:
            ticks = "<br>".join(when(t, now) for t in s["next_ticks"])
            toggle = action(
                ctx, "/schedules/pause", "Pause", {"name": name}, name=f"pause-schedule:{name}"
            )
        else:
            ticks = muted("paused")
            toggle = action(
                ctx, "/schedules/resume", "Resume", {"name": name}, name=f"resume-schedule:{name}"
            )
        run = action(ctx, "/schedules/run", "Run now", {"name": name}, name=f"run-schedule:{name}")
        last = (
            f"{esc(s['last_status'] or '—')} {job_link(s['last_job_id'])}"
            if s["last_job_id"] is not None
            else muted("never")
        )
        error = f"<br>{error_html(ctx, s['last_error'])}" if s["last_error"] else ""
        items.append(
            [
                f'<span data-schedule="{esc(name)}">{esc(name)}</span>',
                f"<code>{esc(s['expression'])}</code> {muted(s['tz'])}",
                "active" if s["enabled"] else "<b>paused</b>",
                ticks,
                when(s["last_run"], now) + "<br>" + last + error,
                toggle + " " + run,
            ]
        )
    listing = (
        table(["schedule", "cron", "state", "next ticks", "last run", ""], items, name="schedules")
        if items
        else muted('no schedules: @q.schedule("name", "0 * * * *") adds one')
    )
    more = muted(f" (the first {len(rows)} by name)") if total > len(rows) else ""
    body = f'<div data-live="schedules"><p>{total:,} schedules{more}</p>{listing}</div>'
    return layout(ctx, "Schedules", body)


def _step_counts(counts: dict[str, int]) -> str:
    return " · ".join(
        f"{esc(STATUS_TITLES.get(s, s))} {n:,}" for s in STATUSES if (n := counts.get(s, 0))
    )


def workflows(ctx: Context, runs: list[dict[str, Any]], now: dt.datetime) -> str:
    items = [
        [
            f'<a href="/workflows/{int(r["id"])}">{esc(r["name"])} #{int(r["id"])}</a>',
            f'<span data-workflow-status="{int(r["id"])}">{esc(r["status"])}</span>',
            f"{r['steps']:,}",
            _step_counts(r["counts"]),
            when(r["created"], now),
        ]
        for r in runs
    ]
    listing = (
        table(["run", "status", "steps", "steps by status", "started"], items, name="workflows")
        if items
        else muted("no workflow runs yet: q.workflow(name) builds one")
    )
    return layout(ctx, "Workflows", f'<div data-live="workflows">{listing}</div>')


def step_place(step: dict[str, Any]) -> str:
    """A map step's place after its name: ``[3]``, or ``[2.0.1]`` for a step a map_over over a
    map made (its source's place, then its item's); nothing for a single step."""
    path = step.get("step_path")
    if path:
        return "[" + ".".join(str(int(i)) for i in path) + "]"
    return "" if step["step_index"] is None else f"[{int(step['step_index'])}]"


def workflow_run(
    ctx: Context, run: dict[str, Any], now: dt.datetime, *, timeline: Timeline | None = None
) -> str:
    steps = run["step_rows"]
    items = [
        [
            job_link(s["id"]),
            esc(s["step_name"]) + step_place(s),
            esc(s["entrypoint"]),
            f'<span data-step-status="{int(s["id"])}">'
            f"{esc(STATUS_TITLES.get(s['status'], s['status']))}</span>",
            f"{s['attempts']}",
            when(s["started"], now),
            when(s["finished"], now),
            error_html(ctx, s["error"]) if s["error"] else "",
        ]
        for s in steps
    ]
    more = (
        muted(f" (the first {len(steps):,} of {run['steps']:,} steps)")
        if run["steps"] > len(steps)
        else ""
    )
    actions = ""
    if run["finished"] is None:
        actions = action(
            ctx, f"/workflows/{int(run['id'])}/cancel", "Cancel run", name="cancel-run"
        )
    elif run["status"] != "succeeded":
        actions = action(
            ctx, f"/workflows/{int(run['id'])}/retry", "Retry failed steps", name="retry-run"
        )
    body = (
        f'<div data-live="run"><p>status <b data-run-status="{int(run["id"])}">'
        f"{esc(run['status'])}</b>"
        f" · {run['steps']:,} steps: {_step_counts(run['counts'])} · started "
        f"{when(run['created'], now)}</p>{actions}"
        + (timeline_html(timeline) if timeline is not None else "")
        + table(
            ["job", "step", "entrypoint", "status", "attempts", "started", "finished", "error"],
            items,
            name="steps",
        )
        + f"{more}</div>"
    )
    return layout(ctx, f"Workflow run {run['name']} #{int(run['id'])}", body)


def _shown(data: bytes | None, hidden: bool, what: str) -> str:
    if hidden:
        return muted(f"{what} hidden (pgq-nb web --hide-payloads)")
    if data is None:
        return muted("none")
    cut = data[:SHOWN_BYTES]
    text = cut.decode("utf-8", "replace")
    with contextlib.suppress(ValueError):
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    more = (
        muted(f"the first {SHOWN_BYTES:,} of {len(data):,} bytes")
        if len(data) > SHOWN_BYTES
        else ""
    )
    return f'<pre data-field="{what}">{esc(text)}</pre>{more}'


def job(ctx: Context, info: JobInfo, now: dt.datetime) -> str:
    status = info.status.value
    facts = [
        ["status", f'<b data-job-status="{info.id}">{esc(STATUS_TITLES.get(status, status))}</b>'],
        ["entrypoint", esc(info.entrypoint)],
        ["attempts", esc(info.attempts)],
        ["priority", esc(info.priority)],
        ["created", when(info.created, now)],
        ["due", when(info.execute_after, now)],
        ["started", when(info.started, now)],
        ["finished", when(info.finished, now)],
        ["worker", esc(info.worker_id)],
        ["dedupe key", esc(info.dedupe_key)],
    ]
    if info.workflow_id is not None:
        facts.append(
            [
                "workflow",
                f'<a href="/workflows/{info.workflow_id}">run {info.workflow_id}</a> '
                f"step {esc(info.step_name)}",
            ]
        )
    if info.schedule_name is not None:
        facts.append(["schedule", f"{esc(info.schedule_name)} tick {when(info.fire_time, now)}"])
    actions = ""
    if status == "failed":
        actions = action(ctx, "/failures/requeue", "Requeue", {"ids": info.id}, name="requeue")
    elif not info.status.is_final:
        actions = action(ctx, f"/jobs/{info.id}/cancel", "Cancel", name="cancel")
    result = None if info.result is None else json.dumps(info.result, ensure_ascii=False).encode()
    attempts = [
        [esc(e.get("attempt")), esc(e.get("at")), error_html(ctx, e.get("error"), whole=True)]
        for e in (info.errors or [])
    ]
    errors = (
        table(["attempt", "at", "error"], attempts, name="attempts")
        if attempts
        else muted("no failed attempts")
    )
    final = f"<h2>Error</h2>{error_html(ctx, info.error, whole=True)}" if info.error else ""
    trace = f"<h2>Traceback</h2>{traceback_html(ctx, info.traceback)}" if info.traceback else ""
    body = (
        f'<div data-live="job">{table(["", ""], facts, name="job")}{actions}</div>'
        f"<h2>Payload</h2>{_shown(info.payload, ctx.hide_payloads, 'payload')}"
        f"<h2>Result</h2>{_shown(result, ctx.hide_payloads, 'result')}"
        f"{final}{trace}<h2>Every attempt's error</h2>{errors}"
    )
    return layout(ctx, f"Job {info.id}", body)
