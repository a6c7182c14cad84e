"""DataFrames of schedules as data: a backfill's ticks and a schedule's calendar (preview),
and the progress bar of a backfill."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from pgq_nb.notebook import progress as bars
from pgq_nb.notebook.columns import typed

#: A backfill of at least this many ticks gets a bar by default (in a notebook).
BACKFILL_MIN_TICKS = 100


class BackfillBar:
    """The bar of a backfill: made when the number of ticks is known, closed at the end, in a
    notebook with a line of plain text saying what was done (``backfill of 'x': 288 ticks,
    288 enqueued``), which a saved notebook keeps."""

    def __init__(self, progress: bool | None, name: str) -> None:
        self.progress, self.name = progress, name
        self.bar: bars.Bar | None = None
        self.total = self.done = self.enqueued = 0
        self.counted = False  # told how many were enqueued

    def start(self, total: int) -> None:
        self.__exit__()  # a call run again (see pgq_nb.query_errors) starts a new bar
        self.total, self.done, self.enqueued, self.counted = int(total), 0, 0, False
        self.bar = bars.bar(
            self.progress,
            self.total,
            f"backfill {self.name}",
            "ticks",
            BACKFILL_MIN_TICKS,
            scaled=False,
            noted=True,
        )

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)

    def fired(self, n: int) -> None:
        """``n`` more ticks were enqueued (the others had fired already)."""
        self.enqueued += n
        self.counted = True

    def summary(self, failed: bool = False) -> str:
        """What the backfill did, in a line."""
        ticks = f"{self.total:,} tick{'' if self.total == 1 else 's'}"
        if failed or self.done < self.total:
            ticks = f"stopped after {self.done:,} of {ticks}"
        if not self.counted:
            return f"backfill of {self.name!r}: {ticks}"
        return f"backfill of {self.name!r}: {ticks}, {self.enqueued:,} enqueued"

    def __enter__(self) -> BackfillBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close(self.summary(failed=bool(exc and exc[0] is not None)))
            self.bar = None


def _local(values: Sequence[dt.datetime], tz: str) -> pd.Series:
    local: pd.Series = typed(list(values), "time").dt.tz_convert(tz)
    return local


def backfill_frame(rows: Sequence[Mapping[str, Any]], tz: str) -> pd.DataFrame:
    """One row per tick: fire_time (in the schedule's zone), job_id (Int64), enqueued."""
    return pd.DataFrame(
        {
            "fire_time": _local([r["fire_time"] for r in rows], tz),
            "job_id": typed([r["job_id"] for r in rows], "int"),
            "enqueued": pd.Series(pd.array([r["enqueued"] for r in rows], dtype="boolean")),
        }
    )


def preview_frame(schedule: Mapping[str, Any], ticks: Sequence[dt.datetime]) -> pd.DataFrame:
    """The ticks of ``schedule`` (a row of get_schedule): fire_time in its zone, fire_time_utc
    and utc_offset (a timedelta: it changes across daylight saving). ``frame.attrs`` has the
    schedule's name, entrypoint, expression, tz and enabled."""
    utc = typed(list(ticks), "time")
    local = utc.dt.tz_convert(schedule["tz"])
    offsets = [t.utcoffset() for t in local]
    out = pd.DataFrame(
        {
            "fire_time": local,
            "fire_time_utc": utc,
            "utc_offset": pd.Series(pd.array(offsets, dtype="timedelta64[us]")),
        }
    )
    out.attrs.update(
        {k: schedule[k] for k in ("name", "entrypoint", "expression", "tz", "enabled")}
    )
    return out
