"""``run.timeline()``: a Gantt chart of a workflow run, drawn with matplotlib from a
:class:`~pgq_nb.workflow_timeline.Timeline` (the timing rules are there).

The figure is built with matplotlib's object API, not pyplot: nothing is registered with
pyplot, so a notebook shows it once, as the cell's value, and it may be built on any thread
(run.timeline() builds it on the pgq_nb loop). It is a :class:`TimelineFigure`, whose
``_repr_png_`` makes it a static PNG in a notebook even when pyplot was never imported (its
inline backend is what registers the PNG formatter of plain figures), so it stays in the saved
notebook.
"""

from __future__ import annotations

import io
from typing import NamedTuple

from matplotlib.figure import Figure

from pgq_nb.workflow_timeline import (
    KIND_LABELS,
    KINDS,
    STATUS_COLOURS,
    STATUS_LABELS,
    Timeline,
    band,
    duration_text,
    seconds_label,
)


class TimelineFigure(Figure):
    """A matplotlib Figure that a notebook shows as a PNG without pyplot."""

    def _repr_png_(self) -> bytes:
        out = io.BytesIO()
        self.savefig(out, format="png")
        return out.getvalue()


class _Style(NamedTuple):
    alpha: float
    hatch: str | None


#: How each part of a bar is drawn (where in its row: workflow_timeline.band).
_STYLE = {
    "blocked": _Style(0.35, "///"),
    "queued": _Style(0.4, None),
    "running": _Style(1.0, None),
}
#: A part shorter than this fraction of the span is drawn this wide, so that it shows.
_MIN_WIDTH = 0.002
_LABEL_CHARS = 40


def timeline_figure(tl: Timeline) -> TimelineFigure:
    """The chart of ``tl``: one row per step (or per step name, folded), top to bottom in
    submission order; per row its queue wait (light), run (solid) or time not yet runnable
    (hatched), coloured by status; the time axis in seconds (or minutes) since submission."""
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    n = max(len(tl.rows), 1)
    fig = TimelineFigure(figsize=(10, min(1.8 + 0.2 * n, 30)), layout="constrained")
    ax = fig.add_subplot()
    min_width = tl.span * _MIN_WIDTH
    for kind in KINDS:
        style = _STYLE[kind]
        ys, heights, lefts, widths, colours, gids = [], [], [], [], [], []
        for y, row in enumerate(tl.rows):
            offset, height = band(kind, row.steps > 1)
            for seg in row.segments:
                if seg.kind != kind:
                    continue
                ys.append(y + offset)
                heights.append(height)
                lefts.append(seg.start)
                widths.append(max(seg.end - seg.start, min_width))
                colours.append(STATUS_COLOURS.get(seg.status, "#5c6bc0"))
                gids.append(f"{kind}:{y}:{seg.status}")
        if not ys:
            continue
        bars = ax.barh(
            ys,
            widths,
            left=lefts,
            height=heights,
            color=colours,
            alpha=style.alpha,
            hatch=style.hatch,
            edgecolor=colours if style.hatch else "none",
            linewidth=0,
            label=f"_{kind}",  # "_": no legend entry of its own (the legend is built below)
        )
        for rect, gid in zip(bars.patches, gids, strict=True):
            rect.set_gid(gid)
    ax.set_yticks(
        range(len(tl.rows)),
        [_short(row.label) for row in tl.rows],
        fontsize=8 if n <= 30 else 7,
    )
    ax.set_ylim(n - 0.5, -0.5)  # the first step on top
    ax.set_xlim(0, tl.span * 1.02)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: seconds_label(x, tl.span)))
    running = tl.state == "running"
    if running:
        now = (tl.now - tl.origin).total_seconds()
        ax.axvline(now, color="#424242", linestyle="--", linewidth=0.8)
    local = tl.origin.astimezone()
    ax.set_xlabel(f"time since the run was submitted ({local:%Y-%m-%d %H:%M:%S %Z})", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    title = (
        f"workflow {tl.name} (run {tl.run_id}): {tl.state}, {tl.steps:,} steps, "
        f"{duration_text(tl.span)}{' so far (dashed line: now)' if running else ''}"
    )
    notes = tl.notes()
    if notes:
        title += "\n" + "; ".join(notes)
    ax.set_title(title, fontsize=10, loc="left")
    handles = [
        Patch(color=STATUS_COLOURS.get(s, "#5c6bc0"), label=STATUS_LABELS.get(s, s))
        for s in [*STATUS_COLOURS, *sorted(set(tl.counts) - set(STATUS_COLOURS))]
        if tl.counts.get(s)
    ]
    kinds = {seg.kind for row in tl.rows for seg in row.segments}
    handles += [
        Patch(
            facecolor="#616161",
            alpha=_STYLE[k].alpha,
            hatch=_STYLE[k].hatch,
            edgecolor="#616161" if _STYLE[k].hatch else "none",
            label=KIND_LABELS[k],
        )
        for k in KINDS
        if k in kinds
    ]
    if handles:
        ax.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize=8,
            frameon=False,
        )
    else:
        ax.text(0.5, 0.5, "no steps", transform=ax.transAxes, ha="center", color="grey")
    return fig


def _short(label: str) -> str:
    return label if len(label) <= _LABEL_CHARS else label[: _LABEL_CHARS - 1] + "…"
