"""Counting views: ``q.stats()``, jobs per entrypoint and status, with rates.

Counts never come from a capped list: live ones from the ``jobs`` table (small), finished ones
from the ``finished_counts`` counters, or, for a ``since=`` span, from one range of
``history_finished_idx`` counted in full. This is the aggregate to count with (the hourly
report's "orders converted in the last hour"); the listing views cap their rows
(:mod:`pgq_nb.view_limits`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pgq_nb.errors import InvalidInputError
from pgq_nb.notebook import tagged
from pgq_nb.notebook.columns import STATUS_DTYPE, time_span

if TYPE_CHECKING:
    from pgq_nb.store import SqlTarget

__all__ = ["STATS_SAMPLE", "STATS_WINDOW", "stats"]

#: stats() looks at no more than this many recent jobs for its rates and mean durations.
STATS_SAMPLE = 50_000
#: stats() without since= gives the rates of the jobs that finished in this last span.
STATS_WINDOW = dt.timedelta(minutes=15)


async def stats(
    aq: SqlTarget,
    *,
    window: dt.timedelta | None = None,
    since: dt.datetime | dt.timedelta | str | None = None,
    until: dt.datetime | dt.timedelta | str | None = None,
    tags: list[str] | None = None,
    meta: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """One row per entrypoint (the index): a column per status with its count (zeros
    included), ``jobs_per_minute`` finished and ``mean_duration_s``.

    By default every finished job counts, from the ``finished_counts`` counters, and the rates
    are over the last ``window`` (15 minutes), from the most recent :data:`STATS_SAMPLE`
    finished jobs at most (over the time they span, when there are more in the window). With
    ``since`` (and ``until``, exclusive), the finished columns count the jobs that finished in
    that span, and the rates are over it, exactly: one range of ``history_finished_idx``, so
    an hour is cheap and a year is not. Live counts are always the queue now, from ``jobs``.
    Everything is read in one snapshot.
    """
    start, end = time_span(since, until)
    if end is not None and start is None:
        raise InvalidInputError(
            "until= needs since= too (q.stats(since=..., until=...)): without since=, "
            "q.stats() counts every finished job"
        )
    if start is not None and window is not None:
        raise InvalidInputError(
            "give window= (rates over the last window) or since= (counts and rates over a "
            "span), not both"
        )
    window = STATS_WINDOW if window is None else window
    if not isinstance(window, dt.timedelta) or window <= dt.timedelta(0):
        raise InvalidInputError("window must be a positive timedelta")
    q = aq.queries
    async with (
        aq.pool.acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        known = await conn.fetch(q["known_entrypoints"])
        if tags is not None or meta is not None:  # the counters have no labels: count rows
            live = await tagged.fetch(conn, q["job_counts_tagged"], tags, meta)
            done = await tagged.fetch(conn, q["finished_tagged"], start, end, tags, meta)
            recent = _span_rates(done)
        elif start is None:
            live = await conn.fetch(q["job_counts"])
            done = await conn.fetch(q["history_counts"])
            recent = await conn.fetch(q["recent_throughput"], window.total_seconds(), STATS_SAMPLE)
        else:
            live = await conn.fetch(q["job_counts"])
            done = await conn.fetch(q["finished_between"], start, end)
            recent = _span_rates(done)
    counts: dict[str, dict[str, int]] = {r["name"]: {} for r in known}
    for row in [*live, *done]:
        per_status = counts.setdefault(row["entrypoint"], {})
        per_status[row["status"]] = per_status.get(row["status"], 0) + int(row["n"])
    rates = {r["entrypoint"]: r for r in recent}
    for name in rates:
        counts.setdefault(name, {})
    names = sorted(counts)
    data: dict[str, Any] = {
        status: np.array([counts[n].get(status, 0) for n in names], dtype="int64")
        for status in STATUS_DTYPE.categories
    }
    data["jobs_per_minute"] = np.array(
        [rates[n]["n"] * 60.0 / rates[n]["span_s"] if n in rates else 0.0 for n in names],
        dtype="float64",
    )
    data["mean_duration_s"] = np.array(
        [rates[n]["mean_s"] if n in rates else None for n in names], dtype="float64"
    )
    index = pd.Index(pd.array(names, dtype="str"), name="entrypoint")
    return pd.DataFrame(data, index=index)


def _span_rates(done: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``finished_between``'s rows (per entrypoint and status) as ``recent_throughput``'s
    (per entrypoint: jobs, mean run time, span in seconds)."""
    per: dict[str, dict[str, Any]] = {}
    for row in done:
        into = per.setdefault(
            row["entrypoint"], {"n": 0, "run_s": 0.0, "timed": 0, "span_s": row["span_s"]}
        )
        into["n"] += int(row["n"])
        into["run_s"] += float(row["run_s"])
        into["timed"] += int(row["timed"])
    return [
        {
            "entrypoint": name,
            "n": p["n"],
            "mean_s": p["run_s"] / p["timed"] if p["timed"] else None,
            "span_s": max(float(p["span_s"]), 1e-9),
        }
        for name, p in per.items()
    ]
