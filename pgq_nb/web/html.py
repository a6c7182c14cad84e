"""The pages' HTML: the layout, tables, times, forms. Plain strings; every value from the
database goes through :func:`esc` (payloads, errors and names are whoever enqueued them), and
attributes are always quoted. Live regions carry ``data-live``: the page's script fetches the
same URL every few seconds and swaps them in (``static/live.js``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import re
from collections.abc import Iterable, Sequence

STATUS_TITLES = {"picked": "running", "upstream_failed": "upstream failed"}
NAV = (
    ("/", "Overview"),
    ("/failures", "Failures"),
    ("/schedules", "Schedules"),
    ("/workflows", "Workflows"),
)
COLOURS = {
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "cancelled": "#757575",
    "upstream_failed": "#ef6c00",
}
_CSS = """
body{font:14px system-ui,sans-serif;margin:0;color:#212121;background:#fafafa}
header{background:#263238;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center;
flex-wrap:wrap}
header a{color:#cfd8dc;text-decoration:none}header a.on{color:#fff;font-weight:bold}
header form{margin-left:auto}main{padding:12px 16px;max-width:1200px}
table{border-collapse:collapse;margin:4px 0 12px}td,th{padding:3px 8px;border-bottom:1px solid
#e0e0e0;text-align:left;vertical-align:top}th{background:#eceff1}td.n{text-align:right}
.muted{color:#757575}.flash{background:#e8f5e9;border:1px solid #a5d6a7;padding:6px 10px}
.problem{background:#ffebee;border:1px solid #ef9a9a;padding:8px 12px}
pre{white-space:pre-wrap;word-break:break-word;background:#f5f5f5;padding:6px;max-height:30em;
overflow:auto}form.inline{display:inline}button{cursor:pointer}h2{margin:16px 0 4px}
"""


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Context:
    """What every page needs besides its data."""

    path: str
    csrf: str
    read_only: bool
    hide_payloads: bool
    login_required: bool
    refresh_ms: int
    flash: str | None = None


def layout(ctx: Context, title: str, body: str, *, status_line: str = "") -> str:
    nav = "".join(
        f'<a href="{href}"{" class=on" if _active(ctx.path, href) else ""}>{esc(text)}</a>'
        for href, text in NAV
    )
    search = (
        '<form action="/search" method="get" role="search"><input name="id" size="10" '
        'placeholder="job id" aria-label="job id"> <button>Find</button></form>'
    )
    logout = (
        f'<form method="post" action="/logout">{csrf_field(ctx)}<button>Log out</button></form>'
        if ctx.login_required
        else ""
    )
    mode = ' <span class="muted">(read-only)</span>' if ctx.read_only else ""
    flash = f'<p class="flash" id="flash">{esc(ctx.flash)}</p>' if ctx.flash else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)} · pgq_nb</title><style>{_CSS}</style>"
        '<script src="/static/live.js" defer></script></head>'
        f'<body data-refresh-ms="{ctx.refresh_ms}"><header><b>pgq_nb</b>{mode}{nav}{search}'
        f"{logout}</header><main><h1>{esc(title)}</h1>{flash}"
        f'<div data-live="status" id="status-line">{status_line}</div>{body}'
        '<p class="muted">Times are UTC.</p></main></body></html>'
    )


def _active(path: str, href: str) -> bool:
    return path == href if href == "/" else path.startswith(href)


def csrf_field(ctx: Context) -> str:
    return f'<input type="hidden" name="csrf" value="{esc(ctx.csrf)}">'


def action(
    ctx: Context,
    path: str,
    label: str,
    fields: dict[str, object] | None = None,
    *,
    name: str = "",
) -> str:
    """A one-button POST form; nothing in read-only mode."""
    if ctx.read_only:
        return ""
    hidden = "".join(
        f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">' for k, v in (fields or {}).items()
    )
    data = f' data-action="{esc(name)}"' if name else ""
    return (
        f'<form class="inline" method="post" action="{esc(path)}">{csrf_field(ctx)}{hidden}'
        f"<button{data}>{esc(label)}</button></form>"
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, name: str) -> str:
    """A table; cells are HTML (escape them first). Cells starting with a digit are numbers."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="n">{c}</td>' if c[:1].isdigit() else f"<td>{c}</td>" for c in row)
        + "</tr>"
        for row in rows
    )
    return f'<table class="pgq-{esc(name)}"><tr>{head}</tr>{body}</table>'


def muted(text: str) -> str:
    return f'<span class="muted">{esc(text)}</span>'


def when(value: dt.datetime | None, now: dt.datetime) -> str:
    """A UTC time and how long ago (or ahead) of the server's ``now`` it is."""
    if value is None:
        return muted("—")
    return (
        f'<time datetime="{value.isoformat()}" title="UTC">'
        f"{value.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}</time> {muted(ago(value, now))}"
    )


def ago(value: dt.datetime, now: dt.datetime) -> str:
    seconds = (now - value).total_seconds()
    future, seconds = seconds < 0, abs(seconds)
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            amount = f"{int(seconds // size)} {unit}"
            break
    else:
        amount = f"{int(seconds)} s"
    return f"in {amount}" if future else f"{amount} ago"


def first_line(text: str | None, limit: int = 160) -> str:
    lines = (text or "").strip().splitlines()
    line = lines[0] if lines else "(no error text)"
    return line if len(line) <= limit else line[: limit - 1] + "…"


#: What an error's first line may start with to be taken for its exception's type.
_ERROR_TYPE = re.compile(r"[A-Za-z_][\w.]{0,99}(?=:|$)")
HIDDEN_TEXT = "(its text is hidden: pgq-nb web --hide-payloads)"


def error_type(text: str | None) -> str:
    """The exception type an error text starts with ("ValueError: ..." gives "ValueError"), or
    "error" when it starts otherwise: never any of the text after it."""
    found = _ERROR_TYPE.match((text or "").strip())
    return found.group(0) if found else "error"


def error_html(ctx: Context, text: str | None, *, whole: bool = False) -> str:
    """An error text (its first line, or ``whole`` in a <pre>), escaped; with --hide-payloads
    only its exception type, as an error's text often quotes the payload."""
    if ctx.hide_payloads:
        return f"{esc(error_type(text))} {muted(HIDDEN_TEXT)}"
    return f"<pre>{esc(text)}</pre>" if whole else esc(first_line(text))


def traceback_html(ctx: Context, text: str | None) -> str:
    """A traceback in a <pre>; "" without one; with --hide-payloads a note (its lines quote
    local values and source)."""
    if not text:
        return ""
    if ctx.hide_payloads:
        return muted("the traceback is hidden (pgq-nb web --hide-payloads)")
    return f"<pre>{esc(text)}</pre>"


def throughput_svg(
    per_minute: dict[dt.datetime, dict[str, int]], now: dt.datetime, minutes: int
) -> str:
    """Finished jobs per minute, one stacked bar per minute of the last ``minutes``."""
    width, height = 480, 100
    end = now.replace(second=0, microsecond=0)
    span = [end - dt.timedelta(minutes=minutes - 1 - i) for i in range(minutes)]
    totals = [sum(per_minute.get(m, {}).values()) for m in span]
    peak = max(totals, default=0) or 1
    plot_h, slot = height - 16, width / minutes
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        'class="pgq-throughput" aria-label="finished jobs per minute">',
        f'<line x1="0" y1="{plot_h}" x2="{width}" y2="{plot_h}" stroke="#bbb"/>',
    ]
    for i, minute in enumerate(span):
        by_status = per_minute.get(minute, {})
        tip = f"{minute:%H:%M} UTC: " + (
            ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())) or "none"
        )
        y = float(plot_h)
        parts.append(f"<g><title>{esc(tip)}</title>")
        for status in [*COLOURS, *sorted(set(by_status) - set(COLOURS))]:
            n = by_status.get(status, 0)
            if n:
                h = n / peak * (plot_h - 4)
                y -= h
                parts.append(
                    f'<rect x="{i * slot + 1:.1f}" y="{y:.1f}" width="{slot - 2:.1f}" '
                    f'height="{h:.1f}" fill="{COLOURS.get(status, "#5c6bc0")}"/>'
                )
        parts.append("</g>")
    parts.append(
        f'<text x="0" y="{height - 2}" font-size="10" fill="#666">{span[0]:%H:%M}</text>'
        f'<text x="{width}" y="{height - 2}" font-size="10" fill="#666" text-anchor="end">'
        f"{span[-1]:%H:%M} UTC</text>"
        f'<text x="2" y="10" font-size="10" fill="#666">peak {max(totals)}/min</text></svg>'
    )
    return "".join(parts)


def problem_page(status: int, title: str, message: str, *, back: str = "/") -> str:
    """A whole page for a refused request (no data, no forms)."""
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{status} {esc(title)}"
        f"</title><style>{_CSS}</style></head><body><header><b>pgq_nb</b>"
        f'<a href="{esc(back)}">back</a></header><main><h1>{status} {esc(title)}</h1>'
        f'<p class="problem" id="problem">{esc(message)}</p></main></body></html>'
    )


def login_page(message: str | None, next_path: str) -> str:
    problem = f'<p class="problem" id="problem">{esc(message)}</p>' if message else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Log in · pgq_nb</title>"
        f"<style>{_CSS}</style></head><body><header><b>pgq_nb</b></header><main>"
        f"<h1>Log in</h1>{problem}<form method=post action=/login>"
        f'<input type="hidden" name="next" value="{esc(next_path)}">'
        '<label>Token <input type="password" name="token" id="token" autocomplete="off" '
        'autofocus></label> <button id="login">Log in</button></form>'
        '<p class="muted">The token is the secret the dashboard was started with '
        "(PGQ_NB_WEB_TOKEN or its --token-file).</p></main></body></html>"
    )
