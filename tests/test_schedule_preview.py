"""The calendar (#18, item 3): q.schedule_preview lists the ticks a schedule fires, daylight
saving applied, as a typed DataFrame with zone-aware times; the dashboard shows the next ones.
The tick lists are table-tested without a database."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

import pgq_nb
from pgq_nb.errors import InvalidInputError
from pgq_nb.notebook.dashboard_data import ScheduleRow
from pgq_nb.notebook.dashboard_html import clock, schedules_table
from pgq_nb.notebook.schedule_frames import preview_frame
from pgq_nb.schedule.cron import CronSpec, fire_times

UTC = dt.UTC


def local(expression: str, tz: str, start: str, end: str) -> list[str]:
    zone = pd.Timestamp(start).tz_localize(tz).tzinfo
    ticks = fire_times(
        CronSpec(expression=expression, tz=tz),
        pd.Timestamp(start).tz_localize(tz).to_pydatetime(),
        pd.Timestamp(end).tz_localize(tz).to_pydatetime(),
    )
    return [t.astimezone(zone).isoformat(timespec="minutes") for t in ticks]


@pytest.mark.parametrize(
    ("expression", "tz", "start", "end", "expected"),
    [
        # spring forward in Oslo: 02:30 does not exist on 29 March, it fires at 03:00 once
        (
            "30 2 * * *",
            "Europe/Oslo",
            "2026-03-28",
            "2026-03-31",
            ["2026-03-28T02:30+01:00", "2026-03-29T03:00+02:00", "2026-03-30T02:30+02:00"],
        ),
        # fall back in Oslo: 02:30 happens twice on 25 October, it fires at the first
        (
            "30 2 * * *",
            "Europe/Oslo",
            "2026-10-24",
            "2026-10-27",
            ["2026-10-24T02:30+02:00", "2026-10-25T02:30+02:00", "2026-10-26T02:30+01:00"],
        ),
        # a fixed-hour schedule fires a repeated 01:00 once (the first); an every-hour one twice
        (
            "0 0-2 * * *",
            "America/New_York",
            "2026-11-01",
            "2026-11-01T03:00",
            ["2026-11-01T00:00-04:00", "2026-11-01T01:00-04:00", "2026-11-01T02:00-05:00"],
        ),
        (
            "0 * * * *",
            "America/New_York",
            "2026-11-01T00:00",
            "2026-11-01T03:00",
            [
                "2026-11-01T00:00-04:00",
                "2026-11-01T01:00-04:00",
                "2026-11-01T01:00-05:00",
                "2026-11-01T02:00-05:00",
            ],
        ),
        # and no 02:00 on the spring-forward day
        (
            "0 * * * *",
            "America/New_York",
            "2026-03-08T00:00",
            "2026-03-08T04:00",
            ["2026-03-08T00:00-05:00", "2026-03-08T01:00-05:00", "2026-03-08T03:00-04:00"],
        ),
        # [start, end): the end is left out, the start kept
        ("0 12 * * mon", "UTC", "2026-11-30T12:00", "2026-12-07T12:00", ["2026-11-30T12:00+00:00"]),
        ("0 12 * * mon", "UTC", "2026-11-30T12:01", "2026-12-07T12:00", []),
    ],
)
def test_fire_times_across_daylight_saving(
    expression: str, tz: str, start: str, end: str, expected: list[str]
) -> None:
    assert local(expression, tz, start, end) == expected


def test_preview_frame_is_typed_and_zone_aware() -> None:
    spec = CronSpec(expression="30 2 * * *", tz="Europe/Oslo")
    start = dt.datetime(2026, 3, 28, tzinfo=UTC)
    ticks = list(fire_times(spec, start, start + dt.timedelta(days=3)))
    row = {"name": "n", "entrypoint": "e", "expression": "30 2 * * *", "tz": "Europe/Oslo"}
    frame = preview_frame({**row, "enabled": True}, ticks)
    assert list(frame.columns) == ["fire_time", "fire_time_utc", "utc_offset"]
    assert str(frame["fire_time"].dt.tz) == "Europe/Oslo"
    assert str(frame["fire_time_utc"].dt.tz) == "UTC"
    assert list(frame["utc_offset"]) == [pd.Timedelta(hours=h) for h in (1, 2, 2)]
    assert frame["fire_time"][1].isoformat() == "2026-03-29T03:00:00+02:00"
    assert frame.attrs["entrypoint"] == "e"
    empty = preview_frame({**row, "enabled": False}, [])
    assert len(empty) == 0 and str(empty["fire_time"].dt.tz) == "Europe/Oslo"


def test_schedule_preview_from_the_database(q: pgq_nb.Queue) -> None:
    q.entrypoint("report")(lambda job: None)
    q.add_schedule("oslo", "30 2 * * *", entrypoint="report", tz="Europe/Oslo")
    frame = q.schedule_preview("oslo", start=dt.datetime(2026, 10, 24, tzinfo=UTC), days=3)
    assert [t.isoformat() for t in frame["fire_time"]] == [
        "2026-10-24T02:30:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]
    upcoming = q.schedule_preview("oslo")
    assert len(upcoming) == 7
    assert upcoming["fire_time_utc"].iloc[0] > pd.Timestamp.now(tz="UTC")
    assert len(q.schedule_preview("oslo", days=30, limit=5)) == 5
    with pytest.raises(InvalidInputError, match="days must be"):
        q.schedule_preview("oslo", days=0)
    with pytest.raises(InvalidInputError, match="timezone-aware"):
        q.schedule_preview("oslo", start=dt.datetime(2026, 1, 1))
    with pytest.raises(InvalidInputError, match="no schedule named 'olso'"):
        q.schedule_preview("olso")


def test_the_dashboard_shows_the_next_ticks() -> None:
    now = dt.datetime(2026, 11, 30, 10, 15, tzinfo=UTC)
    row = ScheduleRow(
        name="hourly",
        expression="0 * * * *",
        tz="UTC",
        enabled=True,
        next_run=dt.datetime(2026, 11, 30, 11, 0, tzinfo=UTC),
        last_run=None,
        last_job_id=None,
        last_status=None,
        last_finished=None,
        last_error=None,
    )
    html = schedules_table([row], now)
    then = [dt.datetime(2026, 11, 30, h, 0, tzinfo=UTC) for h in (12, 13)]
    assert f"then {clock(then[0], now)}, {clock(then[1], now)}" in html
