"""The run page's timeline: the chart ``run.timeline()`` draws with matplotlib, drawn here by
the server as inline SVG (no script, no library, nothing fetched from elsewhere) from the
same :class:`~pgq_nb.workflow_timeline.Timeline`. Every name and tooltip is escaped."""

from __future__ import annotations

from collections.abc import Callable

from pgq_nb.web.html import esc
from pgq_nb.workflow_timeline import (
    KIND_LABELS,
    KINDS,
    STATUS_COLOURS,
    STATUS_LABELS,
    Row,
    Segment,
    Timeline,
    band,
    duration_text,
    nice_ticks,
    seconds_label,
)

WIDTH = 1000
LABEL_W = 190
ROW_H = 16
#: How each part of a bar is drawn: its opacity, hatched or not (where: workflow_timeline.band).
_STYLE = {"blocked": (0.35, True), "queued": (0.4, False), "running": (1.0, False)}
_LABEL_CHARS = 32


def timeline_svg(tl: Timeline) -> str:
    """One row per step (or per step name, folded) with its parts; the time axis; a legend."""
    plot_w = WIDTH - LABEL_W - 12
    top = 6
    n = len(tl.rows)
    axis_y = top + n * ROW_H + 4
    legend_y = axis_y + 44
    height = legend_y + 10
    scale = plot_w / (tl.span * 1.02)

    def x(seconds: float) -> float:
        return LABEL_W + seconds * scale

    colours = [*STATUS_COLOURS, *sorted(set(tl.counts) - set(STATUS_COLOURS))]
    hatches = "".join(
        f'<pattern id="pgq-hatch-{i}" width="6" height="6" patternUnits="userSpaceOnUse" '
        f'patternTransform="rotate(45)"><rect width="6" height="6" '
        f'fill="{_colour(s)}" fill-opacity="0.25"/>'
        f'<line x1="0" y1="0" x2="0" y2="6" stroke="{_colour(s)}" stroke-width="2"/></pattern>'
        for i, s in enumerate(colours)
    )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" class="pgq-timeline" role="img" '
        f'aria-label="timeline of workflow run {tl.run_id}" data-steps="{tl.steps}">',
        f"<defs>{hatches}</defs>",
    ]
    for seconds in nice_ticks(tl.span):
        parts.append(
            f'<line x1="{x(seconds):.1f}" y1="{top}" x2="{x(seconds):.1f}" y2="{axis_y}" '
            f'stroke="#e0e0e0"/><text x="{x(seconds):.1f}" y="{axis_y + 12}" font-size="10" '
            f'fill="#666" text-anchor="middle">{esc(seconds_label(seconds, tl.span))}</text>'
        )
    for y, row in enumerate(tl.rows):
        parts.append(_row(row, top + y * ROW_H, x, tl.span, colours))
    if tl.state == "running":
        now = x((tl.now - tl.origin).total_seconds())
        parts.append(
            f'<line x1="{now:.1f}" y1="{top}" x2="{now:.1f}" y2="{axis_y}" stroke="#424242" '
            f'stroke-dasharray="4 3" data-now=""><title>now</title></line>'
        )
    parts.append(
        f'<text x="{LABEL_W}" y="{axis_y + 24}" font-size="10" fill="#666">time since the '
        f"run was submitted</text>"
    )
    parts.append(_legend(tl, legend_y, colours))
    parts.append("</svg>")
    return "".join(parts)


def timeline_html(tl: Timeline) -> str:
    """The chart with a line saying what it covers (and what was folded)."""
    state = f"{tl.state}, " if tl.state else ""
    so_far = " so far" if tl.state == "running" else ""
    notes = "".join(f" · {esc(note)}" for note in tl.notes())
    return (
        f'<div data-timeline="{tl.run_id}"><h2>Timeline</h2><p class="muted">{esc(state)}'
        f"{tl.steps:,} steps, {esc(duration_text(tl.span))}{so_far}{notes}</p>"
        f'<div style="overflow-x:auto">{timeline_svg(tl)}</div><h2>Steps</h2></div>'
    )


def _colour(status: str) -> str:
    return STATUS_COLOURS.get(status, "#5c6bc0")


def _row(row: Row, top: int, x: Callable[[float], float], span: float, colours: list[str]) -> str:
    label = row.label if len(row.label) <= _LABEL_CHARS else row.label[: _LABEL_CHARS - 1] + "…"
    counts = ", ".join(f"{n:,} {STATUS_LABELS.get(s, s)}" for s, n in row.counts.items())
    what = f"{row.label}: {counts}" if row.steps > 1 else f"{row.label}: {_title(row.status)}"
    if row.job_id is not None:
        what += f" (job {row.job_id}, {row.attempts} attempts)"
    out = [
        f'<g data-row="{esc(row.label)}" data-status="{esc(row.status)}"><title>{esc(what)}'
        f'</title><text x="{LABEL_W - 6}" y="{top + ROW_H - 4}" font-size="11" '
        f'text-anchor="end">{esc(label)}</text>'
    ]
    for kind in KINDS:
        for seg in row.segments:
            if seg.kind == kind:
                out.append(_bar(seg, top, row.steps > 1, x, span, colours))
    out.append("</g>")
    return "".join(out)


def _bar(
    seg: Segment,
    top: int,
    folded: bool,
    x: Callable[[float], float],
    span: float,
    colours: list[str],
) -> str:
    opacity, hatched = _STYLE[seg.kind]
    offset, share = band(seg.kind, folded)
    h = ROW_H * share
    left = x(seg.start)
    width = max(x(seg.end) - left, 1.5)  # a part too short to see is drawn 1.5 px wide
    fill = f"url(#pgq-hatch-{colours.index(seg.status)})" if hatched else _colour(seg.status)
    tip = (
        f"{_title(seg.status)}, {KIND_LABELS[seg.kind]}: "
        f"{duration_text(seg.end - seg.start)} from {seconds_label(seg.start, span)}"
    )
    y = top + (ROW_H - h) / 2 + offset * ROW_H
    return (
        f'<rect x="{left:.1f}" y="{y:.1f}" width="{width:.1f}" '
        f'height="{h:.1f}" fill="{fill}" fill-opacity="{opacity}" data-kind="{seg.kind}" '
        f'data-status="{esc(seg.status)}"><title>{esc(tip)}</title></rect>'
    )


def _title(status: str) -> str:
    return STATUS_LABELS.get(status, status)


def _legend(tl: Timeline, y: int, colours: list[str]) -> str:
    out, left = [], float(LABEL_W)
    kinds = {seg.kind for row in tl.rows for seg in row.segments}
    entries = [(_colour(s), 1.0, _title(s)) for s in colours if tl.counts.get(s)]
    entries += [("#616161", _STYLE[k][0], KIND_LABELS[k]) for k in KINDS if k in kinds]
    for fill, opacity, text in entries:
        out.append(
            f'<rect x="{left:.0f}" y="{y - 9}" width="10" height="10" fill="{fill}" '
            f'fill-opacity="{opacity}"/><text x="{left + 14:.0f}" y="{y}" font-size="10" '
            f'fill="#424242">{esc(text)}</text>'
        )
        left += 24 + 6.5 * len(text)
    return "".join(out)
