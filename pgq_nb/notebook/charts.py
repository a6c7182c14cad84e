"""Throughput charts: finished jobs per minute by status.

:func:`plot_throughput` draws a matplotlib figure (``q.plot_throughput(since="1h")``);
:func:`throughput_svg` draws the dashboard's small chart as inline SVG, which costs no
rendering on the pgq_nb loop thread and shows in static HTML exports too. Both read
:func:`fetch_throughput`: one range scan of ``history_finished_idx`` with a cap on the jobs it
looks at, never a count over the whole of history.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
from typing import TYPE_CHECKING, Any, cast

from pgq_nb import runtime

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from pgq_nb.facade import Queue
    from pgq_nb.queue import AsyncQueue

#: Final statuses, in the order they are stacked, with their colours.
STATUS_COLOURS = {
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "cancelled": "#757575",
    "upstream_failed": "#ef6c00",
}
#: q.plot_throughput() looks at no more than this many of the newest finished jobs.
PLOT_MAX_JOBS = 500_000
_MINUTE = dt.timedelta(minutes=1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Throughput:
    """Finished jobs per minute and status over a window, by the server's clock."""

    now: dt.datetime
    since: dt.datetime
    #: {minute (aware, truncated): {status: jobs}}; minutes without jobs are absent
    per_minute: dict[dt.datetime, dict[str, int]]
    #: how many jobs were looked at; equal to ``cap`` when the window held more
    seen: int
    cap: int

    @property
    def capped(self) -> bool:
        return self.seen >= self.cap

    @property
    def total(self) -> int:
        return sum(sum(by_status.values()) for by_status in self.per_minute.values())

    def totals(self) -> dict[str, int]:
        """Jobs per status over the window."""
        out: dict[str, int] = {}
        for by_status in self.per_minute.values():
            for status, n in by_status.items():
                out[status] = out.get(status, 0) + n
        return out

    def minutes(self, last: int | None = None) -> list[dt.datetime]:
        """Every minute of the window, oldest first (the newest ``last`` of them)."""
        end = self.now.replace(second=0, microsecond=0)
        start = self.since.replace(second=0, microsecond=0)
        if last is not None:
            start = max(start, end - (last - 1) * _MINUTE)
        start = min(start, end)  # a window starting in the future shows this minute
        count = int((end - start) / _MINUTE) + 1
        return [start + i * _MINUTE for i in range(count)]


async def fetch_throughput(
    aio: AsyncQueue,
    *,
    since: dt.datetime | None = None,
    window_s: float = 900.0,
    cap: int = 20_000,
    connection: Any = None,
) -> Throughput:
    """Finished jobs per minute since ``since`` (or the last ``window_s`` seconds, by the
    server's clock), from at most the ``cap`` newest of them."""
    query = aio.queries["dashboard_throughput"]
    args = (since, float(window_s), int(cap))
    rows = await (aio.pool if connection is None else connection).fetch(query, *args)
    per_minute: dict[dt.datetime, dict[str, int]] = {}
    for r in rows:
        if r["minute"] is not None:
            per_minute.setdefault(r["minute"], {})[r["status"]] = int(r["n"])
    first = rows[0]
    return Throughput(
        now=first["now"], since=first["since"], per_minute=per_minute, seen=first["seen"], cap=cap
    )


def parse_since(since: object) -> tuple[dt.datetime | None, float, str]:
    """``since`` as (start or None, window in seconds, label): a timedelta or a duration
    string ("15min", "1h", "2d") means that long before now; an aware datetime (or ISO 8601
    string with a zone) a fixed start."""
    from pgq_nb.notebook.columns import check_since  # pandas, on first use

    start = check_since(since)
    if isinstance(start, dt.timedelta):
        return None, start.total_seconds(), f"last {_duration(start)}"
    return start, 0.0, f"since {start.astimezone():%Y-%m-%d %H:%M}"


def _duration(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def async_queue(q: Queue | AsyncQueue) -> AsyncQueue:
    """The AsyncQueue behind ``q`` (a sync Queue's ``aio``)."""
    return cast("AsyncQueue", getattr(q, "aio", q))


def plot_throughput(q: Queue | AsyncQueue, since: object = "1h") -> Figure:
    """A matplotlib figure of finished jobs per minute, stacked by status, since ``since``
    (a duration like "15min", "1h", "2d", a timedelta, or an aware datetime).

    Reads at most the newest PLOT_MAX_JOBS finished jobs (the title says so when the window
    held more). Returns the figure without showing it (a notebook displays it once).
    """
    aio = async_queue(q)
    start, window_s, label = parse_since(since)
    data = runtime.run_sync(
        fetch_throughput(aio, since=start, window_s=window_s, cap=PLOT_MAX_JOBS),
        "plot_throughput()",
    )
    return _figure(data, label)


def _figure(data: Throughput, label: str) -> Figure:
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(9, 3.2), layout="constrained")
    plt.close(fig)  # no second copy from pyplot's auto-display; the returned figure shows
    minutes = data.minutes()
    bottoms = [0] * len(minutes)
    width = 0.8 / (24 * 60)  # days, matplotlib's date unit
    statuses = [s for s in STATUS_COLOURS if data.totals().get(s)]
    statuses += sorted(set(data.totals()) - set(STATUS_COLOURS))
    for status in statuses:
        heights = [data.per_minute.get(m, {}).get(status, 0) for m in minutes]
        ax.bar(
            minutes,  # type: ignore[arg-type]  # matplotlib converts datetimes itself
            heights,
            width=width,
            bottom=bottoms,
            label=status,
            color=STATUS_COLOURS.get(status, "#5c6bc0"),
            align="edge",
        )
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    local = dt.datetime.now().astimezone().tzinfo
    ax.xaxis.set_major_formatter(
        mdates.DateFormatter("%H:%M", tz=local)  # type: ignore[no-untyped-call]
    )
    ax.set_xlim(
        mdates.date2num(minutes[0]),  # type: ignore[no-untyped-call]
        mdates.date2num(minutes[-1] + _MINUTE),  # type: ignore[no-untyped-call]
    )
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("jobs / minute")
    title = f"Finished jobs per minute, {label}: {data.total:,}"
    if data.capped:
        title += f" (the newest {data.cap:,} jobs only)"
    ax.set_title(title, fontsize=10, loc="left")
    if statuses:
        ax.legend(loc="upper left", fontsize=8, frameon=False)
    else:
        ax.text(0.5, 0.5, "no jobs finished", transform=ax.transAxes, ha="center", color="grey")
    ax.grid(axis="y", alpha=0.3)
    return fig


def throughput_svg(data: Throughput, minutes: int = 15, width: int = 420, height: int = 90) -> str:
    """The dashboard's small chart: one stacked bar per minute of the last ``minutes``, with a
    tooltip per bar. Inline SVG, no JavaScript."""
    span = data.minutes(last=minutes)
    totals = [sum(data.per_minute.get(m, {}).values()) for m in span]
    peak = max(totals, default=0) or 1
    plot_h = height - 16
    slot = width / max(len(span), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'class="pgq-throughput" role="img">',
        f'<line x1="0" y1="{plot_h}" x2="{width}" y2="{plot_h}" stroke="#bbb"/>',
    ]
    for i, minute in enumerate(span):
        by_status = data.per_minute.get(minute, {})
        local = minute.astimezone()
        tip = f"{local:%H:%M}: " + (
            ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())) or "none"
        )
        y = float(plot_h)
        parts.append(f"<g><title>{html.escape(tip)}</title>")
        for status in [*STATUS_COLOURS, *sorted(set(by_status) - set(STATUS_COLOURS))]:
            n = by_status.get(status, 0)
            if not n:
                continue
            h = n / peak * (plot_h - 4)
            y -= h
            parts.append(
                f'<rect x="{i * slot + 1:.1f}" y="{y:.1f}" width="{slot - 2:.1f}" '
                f'height="{h:.1f}" fill="{STATUS_COLOURS.get(status, "#5c6bc0")}"/>'
            )
        parts.append("</g>")
    if span:
        first, last = span[0].astimezone(), span[-1].astimezone()
        parts.append(
            f'<text x="0" y="{height - 2}" font-size="10" fill="#666">{first:%H:%M}</text>'
        )
        parts.append(
            f'<text x="{width}" y="{height - 2}" font-size="10" fill="#666" '
            f'text-anchor="end">{last:%H:%M}</text>'
        )
    parts.append(
        f'<text x="2" y="10" font-size="10" fill="#666">peak {max(totals, default=0)}/min</text>'
    )
    parts.append("</svg>")
    return "".join(parts)
