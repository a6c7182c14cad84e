"""Cron fire times as pure functions: a table of expressions, zones and next fire times (both
daylight-saving changes of Europe/Oslo and America/New_York included), a brute-force reference
around every transition, invalid input, and the catch-up policies."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from pgq_nb.errors import InvalidInputError
from pgq_nb.schedule.cron import CronSpec, Schedule, _backward, _forward, due_ticks, next_fire
from pgq_nb.schedule.database import ScheduleSpec
from pgq_nb.schedule.syntax import parse_expression, zone_info

UTC = dt.UTC


def parse_cron(expression: str, tz: str = "UTC") -> CronSpec:
    return CronSpec(expression=expression, tz=tz)


def previous_fire(spec: CronSpec, at: dt.datetime) -> dt.datetime:
    """The last fire time at or before ``at``: the walk due_ticks takes."""
    return next(_backward(parse_expression(spec.expression), zone_info(spec.tz), at))


def fire_times_between(
    spec: CronSpec, start: dt.datetime, end: dt.datetime, limit: int = 1000
) -> list[dt.datetime]:
    """The fire times in (start, end], ascending: the first ``limit`` of next_fire's walk."""
    times: list[dt.datetime] = []
    for instant in _forward(parse_expression(spec.expression), zone_info(spec.tz), start):
        if instant > end or len(times) >= limit:
            break
        times.append(instant)
    return times


def at(text: str) -> dt.datetime:
    """An aware datetime from ISO text (a trailing Z means UTC)."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


# 2026 transitions. Oslo: spring 03-29 01:00Z (02:00 CET -> 03:00 CEST), fall 10-25 01:00Z
# (03:00 CEST -> 02:00 CET). New York: spring 03-08 07:00Z (02:00 EST -> 03:00 EDT), fall
# 11-01 06:00Z (02:00 EDT -> 01:00 EST).
NEXT_FIRE_TABLE = [
    # (expression, tz, after, expected next fire)
    ("0 * * * *", "UTC", "2026-01-01T10:00:00Z", "2026-01-01T11:00:00Z"),
    ("0 * * * *", "UTC", "2026-01-01T10:59:59.999999Z", "2026-01-01T11:00:00Z"),
    ("*/15 * * * *", "UTC", "2026-01-01T10:07:00Z", "2026-01-01T10:15:00Z"),
    ("0 9 * * 1-5", "UTC", "2026-01-02T10:00:00Z", "2026-01-05T09:00:00Z"),
    ("0 9 * * mon-fri", "UTC", "2026-01-02T10:00:00Z", "2026-01-05T09:00:00Z"),
    ("0 0 1 * *", "UTC", "2026-01-31T12:00:00Z", "2026-02-01T00:00:00Z"),
    ("0 0 29 2 *", "UTC", "2026-03-01T00:00:00Z", "2028-02-29T00:00:00Z"),
    ("0 0 L * *", "UTC", "2026-02-10T00:00:00Z", "2026-02-28T00:00:00Z"),
    ("0 12 * * 5#3", "UTC", "2026-01-01T00:00:00Z", "2026-01-16T12:00:00Z"),
    ("0 0 13 * 5", "UTC", "2026-02-01T00:00:00Z", "2026-02-06T00:00:00Z"),  # dom OR dow
    ("0 0 * jan,jul *", "UTC", "2026-02-01T00:00:00Z", "2026-07-01T00:00:00Z"),
    ("@hourly", "UTC", "2026-01-01T10:30:00Z", "2026-01-01T11:00:00Z"),
    ("@daily", "UTC", "2026-01-01T10:30:00Z", "2026-01-02T00:00:00Z"),
    ("@weekly", "UTC", "2026-01-01T10:30:00Z", "2026-01-04T00:00:00Z"),
    ("0 9 * * *", "Europe/Oslo", "2026-01-10T12:00:00Z", "2026-01-11T08:00:00Z"),
    ("0 9 * * *", "Europe/Oslo", "2026-07-10T12:00:00Z", "2026-07-11T07:00:00Z"),
    ("0 9 * * *", "Asia/Kolkata", "2026-07-10T12:00:00Z", "2026-07-11T03:30:00Z"),
    ("0 0 * * *", "America/New_York", "2026-01-10T06:00:00Z", "2026-01-11T05:00:00Z"),
    # 6 fields, seconds first
    ("*/10 * * * * *", "UTC", "2026-01-01T10:00:05Z", "2026-01-01T10:00:10Z"),
    ("*/10 * * * * *", "UTC", "2026-01-01T10:00:10Z", "2026-01-01T10:00:20Z"),
    ("30 0 * * * *", "UTC", "2026-01-01T10:00:30Z", "2026-01-01T11:00:30Z"),
    ("15,45 * * * * *", "UTC", "2026-01-01T10:00:50Z", "2026-01-01T10:01:15Z"),
    ("0 0 12 * * *", "Europe/Oslo", "2026-01-01T12:00:00Z", "2026-01-02T11:00:00Z"),
    ("* * * * * *", "UTC", "2026-01-01T10:00:00.500000Z", "2026-01-01T10:00:01Z"),
    # Oslo, spring forward: 02:xx does not exist
    ("30 2 * * *", "Europe/Oslo", "2026-03-28T12:00:00Z", "2026-03-29T01:00:00Z"),  # 03:00+02
    ("30 2 * * *", "Europe/Oslo", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"),
    ("*/15 2 * * *", "Europe/Oslo", "2026-03-28T12:00:00Z", "2026-03-29T01:00:00Z"),
    ("*/15 2 * * *", "Europe/Oslo", "2026-03-29T01:00:00Z", "2026-03-30T00:00:00Z"),
    ("0 * * * *", "Europe/Oslo", "2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z"),  # 01->03
    ("30 * * * *", "Europe/Oslo", "2026-03-29T00:30:00Z", "2026-03-29T01:30:00Z"),  # 02:30 gone
    ("* * * * * *", "Europe/Oslo", "2026-03-29T00:59:59Z", "2026-03-29T01:00:00Z"),
    # Oslo, fall back: 02:xx happens twice
    ("30 2 * * *", "Europe/Oslo", "2026-10-24T12:00:00Z", "2026-10-25T00:30:00Z"),  # first
    ("30 2 * * *", "Europe/Oslo", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"),  # not twice
    ("30 2 * * *", "Europe/Oslo", "2026-10-25T01:10:00Z", "2026-10-26T01:30:00Z"),
    ("45 2 * * *", "Europe/Oslo", "2026-10-25T00:30:00Z", "2026-10-25T00:45:00Z"),
    ("*/15 2 * * *", "Europe/Oslo", "2026-10-25T00:45:00Z", "2026-10-26T01:00:00Z"),
    ("0 * * * *", "Europe/Oslo", "2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z"),  # 02:00+01
    ("0 * * * *", "Europe/Oslo", "2026-10-25T00:30:00Z", "2026-10-25T01:00:00Z"),
    ("0 * * * *", "Europe/Oslo", "2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z"),
    ("0 * * * *", "Europe/Oslo", "2026-10-25T01:30:00Z", "2026-10-25T02:00:00Z"),
    ("* * * * * *", "Europe/Oslo", "2026-10-25T00:59:59Z", "2026-10-25T01:00:00Z"),
    # New York, spring forward: 02:xx does not exist
    ("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", "2026-03-08T07:00:00Z"),
    ("0 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", "2026-03-08T07:00:00Z"),
    ("0 3 * * *", "America/New_York", "2026-03-08T07:00:00Z", "2026-03-09T07:00:00Z"),
    ("0 * * * *", "America/New_York", "2026-03-08T06:00:00Z", "2026-03-08T07:00:00Z"),
    ("0 30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", "2026-03-08T07:00:00Z"),
    # New York, fall back: 01:xx happens twice
    ("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", "2026-11-01T05:30:00Z"),
    ("30 1 * * *", "America/New_York", "2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"),
    ("0 * * * *", "America/New_York", "2026-11-01T05:00:00Z", "2026-11-01T06:00:00Z"),
    ("0 * * * *", "America/New_York", "2026-11-01T06:00:00Z", "2026-11-01T07:00:00Z"),
    ("0 30 1 * * *", "America/New_York", "2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"),
]


@pytest.mark.parametrize(("expression", "tz", "after", "expected"), NEXT_FIRE_TABLE)
def test_next_fire_table(expression: str, tz: str, after: str, expected: str) -> None:
    spec = parse_cron(expression, tz)
    found = next_fire(spec, at(after))
    assert found == at(expected)
    assert found.tzinfo is UTC
    assert previous_fire(spec, found) == found
    assert previous_fire(spec, found - dt.timedelta(microseconds=1)) <= at(after)


def _sequence(expression: str, tz: str, start: str, end: str) -> list[str]:
    zone = ZoneInfo(tz)
    ticks = fire_times_between(parse_cron(expression, tz), at(start), at(end))
    return [t.astimezone(zone).isoformat() for t in ticks]


def test_hourly_ticks_every_real_hour_across_both_oslo_changes() -> None:
    spring = _sequence("0 * * * *", "Europe/Oslo", "2026-03-28T23:30Z", "2026-03-29T02:30Z")
    assert spring == [
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T04:00:00+02:00",
    ]
    fall = _sequence("0 * * * *", "Europe/Oslo", "2026-10-24T23:30Z", "2026-10-25T02:30Z")
    assert fall == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]


def test_hourly_ticks_every_real_hour_across_both_new_york_changes() -> None:
    spring = _sequence("0 * * * *", "America/New_York", "2026-03-08T05:30Z", "2026-03-08T08:30Z")
    assert spring == [
        "2026-03-08T01:00:00-05:00",
        "2026-03-08T03:00:00-04:00",
        "2026-03-08T04:00:00-04:00",
    ]
    fall = _sequence("0 * * * *", "America/New_York", "2026-11-01T04:30Z", "2026-11-01T07:30Z")
    assert fall == [
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T02:00:00-05:00",
    ]


def test_fixed_time_fires_once_on_both_change_days() -> None:
    days = _sequence("30 2 * * *", "Europe/Oslo", "2026-03-27T12:00Z", "2026-03-31T12:00Z")
    assert days == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",  # 02:30 does not exist: at the end of the gap
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    days = _sequence("30 1 * * *", "America/New_York", "2026-10-30T12:00Z", "2026-11-03T12:00Z")
    assert days == [
        "2026-10-31T01:30:00-04:00",
        "2026-11-01T01:30:00-04:00",  # the first 01:30 only
        "2026-11-02T01:30:00-05:00",
        "2026-11-03T01:30:00-05:00",
    ]


def test_every_second_across_the_repeated_hour_is_every_real_second() -> None:
    spec = parse_cron("* * * * * *", "Europe/Oslo")
    begin = at("2026-10-24T23:59:59Z")
    ticks = fire_times_between(spec, begin, begin + dt.timedelta(hours=2), limit=10_000)
    assert ticks == [begin + dt.timedelta(seconds=s) for s in range(1, 7201)]


def test_a_whole_missing_day_fires_its_ticks_once_at_its_end() -> None:
    # Samoa skipped 2011-12-30 entirely (UTC-10 to UTC+14).
    assert _sequence("0 12 * * *", "Pacific/Apia", "2011-12-29T12:00Z", "2011-12-31T00:00Z") == [
        "2011-12-29T12:00:00-10:00",
        "2011-12-31T00:00:00+14:00",
        "2011-12-31T12:00:00+14:00",
    ]


# -- brute-force reference ---------------------------------------------------------------------


def _reference(expression: str, tz: str, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """The documented rules, checked instant by instant (every second or minute) against the
    wall-clock time there: independent of pgq_nb.schedule.cron's stepping and of croniter's."""
    zone = ZoneInfo(tz)
    fields = expression.split()
    seconds = len(fields) == 6
    every_hour = fields[2 if seconds else 1] == "*"
    step = dt.timedelta(seconds=1 if seconds else 60)

    # croniter's own field sets; the reference takes expressions that leave the dates free
    expanded, _ = croniter.expand(expression, second_at_beginning=seconds)
    assert expanded[2:5] == [["*"], ["*"], ["*"]]
    minute, hour = (set(range(60)) if f == ["*"] else set(f) for f in expanded[:2])
    second = {0} if not seconds else set(range(60)) if expanded[5] == ["*"] else set(expanded[5])

    def matches(wall: dt.datetime) -> bool:
        return wall.second in second and wall.minute in minute and wall.hour in hour

    ticks = []
    instant = start.replace(second=0, microsecond=0) + step
    while instant <= end:
        local = instant.astimezone(zone)
        wall = local.replace(tzinfo=None)
        jump = local.utcoffset() - (instant - step).astimezone(zone).utcoffset()  # type: ignore[operator]
        fires = matches(wall) and (every_hour or local.fold == 0)
        if not every_hour and jump > dt.timedelta(0):  # the first instant after a gap
            gap = (wall - jump + k * step for k in range(jump // step))
            fires = fires or any(matches(w) for w in gap)
        if fires and instant > start:
            ticks.append(instant)
        instant += step
    return ticks


TRANSITIONS = {
    "Europe/Oslo": ["2026-03-29T01:00Z", "2026-10-25T01:00Z"],
    "America/New_York": ["2026-03-08T07:00Z", "2026-11-01T06:00Z"],
    "Australia/Lord_Howe": ["2026-04-04T15:00Z", "2026-10-03T15:30Z"],  # 30-minute changes
    "America/Havana": ["2026-03-08T05:00Z", "2026-11-01T05:00Z"],  # at midnight
}
MINUTE_EXPRESSIONS = [
    "0 * * * *",
    "30 * * * *",
    "*/15 * * * *",
    "*/7 * * * *",
    "0 2 * * *",
    "30 2 * * *",
    "30 1 * * *",
    "*/15 2 * * *",
    "15 1-3 * * *",
    "0 0 * * *",
    "59 23 * * *",
    "0 3 * * *",
]


def _windows() -> Iterator[tuple[str, str, dt.datetime]]:
    for tz, moments in TRANSITIONS.items():
        for moment in moments:
            yield tz, moment, at(moment)


@pytest.mark.parametrize("expression", MINUTE_EXPRESSIONS)
@pytest.mark.parametrize(("tz", "moment", "transition"), list(_windows()))
def test_matches_brute_force_reference_around_transitions(
    expression: str, tz: str, moment: str, transition: dt.datetime
) -> None:
    start, end = transition - dt.timedelta(hours=5), transition + dt.timedelta(hours=5)
    spec = parse_cron(expression, tz)
    expected = _reference(expression, tz, start, end)
    assert fire_times_between(spec, start, end, limit=10_000) == expected
    # from any starting point, forward and backward agree with the reference
    for minutes in range(0, 600, 7):
        origin = start + dt.timedelta(minutes=minutes, seconds=17)
        later = [t for t in expected if t > origin]
        earlier = [t for t in expected if t <= origin]
        if later:
            assert next_fire(spec, origin) == later[0], origin
        if earlier:
            assert previous_fire(spec, origin) == earlier[-1], origin


@pytest.mark.parametrize("expression", ["*/20 * * * * *", "0 30 2 * * *", "*/30 * 2 * * *"])
@pytest.mark.parametrize("tz", ["Europe/Oslo", "America/New_York"])
def test_seconds_match_brute_force_reference(expression: str, tz: str) -> None:
    for moment in TRANSITIONS[tz]:
        transition = at(moment)
        start, end = transition - dt.timedelta(hours=1.5), transition + dt.timedelta(hours=1.5)
        expected = _reference(expression, tz, start, end)
        spec = parse_cron(expression, tz)
        assert fire_times_between(spec, start, end, limit=10_000) == expected


def test_results_do_not_depend_on_the_machine_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = parse_cron("30 2 * * *", "Europe/Oslo")
    after = at("2026-10-24T12:00Z")
    expected = fire_times_between(spec, after, after + dt.timedelta(days=3))
    for machine in ("America/New_York", "Europe/Oslo"):
        monkeypatch.setenv("TZ", machine)
        time.tzset()
        try:
            assert fire_times_between(spec, after, after + dt.timedelta(days=3)) == expected
        finally:
            monkeypatch.delenv("TZ")
            time.tzset()


# -- invalid input -----------------------------------------------------------------------------


INVALID = [
    ("0 25 * * *", "UTC", "field 2 (hour) '25' is out of range 0-23"),
    ("61 * * * *", "UTC", "field 1 (minute) '61' is out of range 0-59"),
    ("0 0 32 * *", "UTC", "field 3 (day of month) '32' is out of range 1-31"),
    ("0 0 0 * *", "UTC", "field 3 (day of month) '0' is out of range 1-31"),
    ("0 0 * 13 *", "UTC", "field 4 (month) '13' is out of range 1-12"),
    ("0 0 * * 8", "UTC", "field 5 (day of week) '8' is out of range 0-7"),
    ("60 * * * * *", "UTC", "field 1 (second) '60' is out of range 0-59"),
    ("0 0 24 * * *", "UTC", "field 3 (hour) '24' is out of range 0-23"),
    ("0 0 * * fryday", "UTC", "field 5 (day of week) 'fryday' is not a number"),
    ("0 0 * smarch *", "UTC", "field 4 (month) 'smarch' is not a number from 1 to 12 or a month"),
    ("5-1 * * * *", "UTC", "field 1 (minute) range '5-1' goes backwards"),
    ("*/0 * * * *", "UTC", "field 1 (minute) step '0'"),
    ("0 */x * * *", "UTC", "field 2 (hour) step 'x'"),
    ("1,,2 * * * *", "UTC", "field 1 (minute) '1,,2' has an empty list item"),
    ("0 0 * ? *", "UTC", "field 4 (month) '?' is only allowed"),
    ("0 0 * * 1#6", "UTC", "field 5 (day of week) '1#6': the number after '#'"),
    ("0 0 15W * *", "UTC", "field 3 (day of month) '15W' is not a number"),
    ("R * * * *", "UTC", "field 1 (minute) 'R': random (R) and hashed (H) values"),
    ("0 H * * *", "UTC", "field 2 (hour) 'H': random (R) and hashed (H) values"),
    ("* * *", "UTC", "has 3 fields; write 5"),
    ("* * * * * * *", "UTC", "has 7 fields; write 5"),
    ("", "UTC", "has 0 fields"),
    ("@reboot", "UTC", "unknown cron nickname '@reboot'"),
    ("0 0 30 2 *", "UTC", "never fires"),
    ("0 0 * * *", "Europe/Olso", "unknown time zone 'Europe/Olso' (did you mean 'Europe/Oslo'"),
    ("0 0 * * *", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
    ("0 0 * * *", "", "unknown time zone ''"),
    ("0 0 * * *", "../etc/passwd", "unknown time zone '../etc/passwd'"),
]


@pytest.mark.parametrize(("expression", "tz", "message"), INVALID)
def test_invalid_input_names_the_bad_field(expression: str, tz: str, message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_cron(expression, tz)
    assert message in str(caught.value)


def test_spec_normalises_whitespace_and_accepts_names_and_nicknames() -> None:
    assert parse_cron("  0  9 *  * mon-FRI ").expression == "0 9 * * mon-FRI"
    assert parse_cron("@HOURLY").expression == "@HOURLY"
    with pytest.raises(InvalidInputError, match="must be a timezone-aware datetime"):
        next_fire(parse_cron("0 * * * *"), dt.datetime(2026, 1, 1))


def test_schedule_spec_validates_and_names_the_schedule() -> None:
    spec = ScheduleSpec(name="report", expression="0  *  * * *", tz="Europe/Oslo")
    assert spec.expression == "0 * * * *"
    assert spec.catch_up == "latest"
    assert spec.cron == parse_cron("0 * * * *", "Europe/Oslo")
    with pytest.raises(InvalidInputError, match="schedule 'report': invalid cron expression"):
        ScheduleSpec(name="report", expression="0 25 * * *")
    with pytest.raises(InvalidInputError, match="catch_up must be one of 'latest', 'all'"):
        ScheduleSpec(name="report", expression="0 * * * *", catch_up="some")
    with pytest.raises(InvalidInputError, match="non-empty str"):
        ScheduleSpec(name=" report", expression="0 * * * *")


def test_schedule_gives_times_in_its_zone() -> None:
    schedule = Schedule(
        name="report",
        expression="0 * * * *",
        tz="Europe/Oslo",
        fire_time=at("2026-10-25T01:00Z"),
        last_fire_time=at("2026-10-25T00:00Z"),
    )
    assert schedule.fire_time.isoformat() == "2026-10-25T02:00:00+01:00"
    assert schedule.last_fire_time is not None
    assert schedule.last_fire_time.isoformat() == "2026-10-25T02:00:00+02:00"
    assert schedule.fire_time.fold == 1
    with pytest.raises(InvalidInputError, match="timezone-aware"):
        Schedule(name="r", expression="0 * * * *", tz="UTC", fire_time=dt.datetime(2026, 1, 1))


# -- catch-up policies -------------------------------------------------------------------------

EVERY_10 = parse_cron("*/10 * * * *")
DUE_TABLE = [
    # (catch_up, last fire, next run, now, max_catch_up, expected ticks)
    ("latest", None, "12:00", "12:35", 100, ["12:30"]),
    ("all", None, "12:00", "12:35", 100, ["12:00", "12:10", "12:20", "12:30"]),
    ("all", None, "12:00", "12:35", 2, ["12:20", "12:30"]),
    ("skip", None, "12:00", "12:35", 100, []),  # the newest due tick is 5 minutes old
    ("skip", None, "12:00", "12:30:30", 100, ["12:30"]),  # on time, within the grace
    ("skip", None, "12:30", "12:30:59", 100, ["12:30"]),
    ("skip", None, "12:30", "12:31:01", 100, []),
    ("latest", None, "12:10", "12:10", 100, ["12:10"]),  # due at the very instant
    ("all", None, "12:10", "12:09:59", 100, []),  # not yet due
    ("latest", None, "12:10", "12:19", 100, ["12:10"]),  # the normal case: one tick
    ("all", None, "12:10", "12:19", 100, ["12:10"]),
    ("skip", None, "12:10", "12:10:01", 100, ["12:10"]),
    ("all", "12:10", "12:00", "12:35", 100, ["12:20", "12:30"]),  # never refire the last one
    ("latest", "12:30", "12:00", "12:35", 100, []),
    ("all", None, "12:05", "12:35", 100, ["12:10", "12:20", "12:30"]),  # next_run off the grid
]


def _clock(hhmm: str | None) -> dt.datetime | None:
    return None if hhmm is None else at(f"2026-01-01T{hhmm}Z")


@pytest.mark.parametrize(("policy", "last", "next_run", "now", "bound", "expected"), DUE_TABLE)
def test_due_ticks_table(
    policy: str, last: str | None, next_run: str, now: str, bound: int, expected: list[str]
) -> None:
    next_at, now_at = at(f"2026-01-01T{next_run}Z"), at(f"2026-01-01T{now}Z")
    found = due_ticks(EVERY_10, _clock(last), next_at, now_at, policy, bound)
    assert found == [_clock(t) for t in expected]


def test_due_ticks_across_the_repeated_hour_and_after_a_long_outage() -> None:
    hourly = parse_cron("0 * * * *", "Europe/Oslo")
    found = due_ticks(hourly, None, at("2026-10-24T23:00Z"), at("2026-10-25T02:30Z"), "all")
    # 01:00+02, 02:00+02, 02:00+01 (the repeated hour, in every real hour), 03:00+01
    assert found == [at("2026-10-24T23:00Z"), *(at(f"2026-10-25T0{h}:00Z") for h in range(3))]
    per_second = parse_cron("* * * * * *")
    started = time.perf_counter()
    found = due_ticks(per_second, None, at("2026-01-01T00:00Z"), at("2026-03-01T00:00Z"), "all")
    assert time.perf_counter() - started < 1.0  # walks back from now, not forward from then
    assert len(found) == 100
    assert found[-1] == at("2026-03-01T00:00Z")


def test_due_ticks_refuses_bad_policies() -> None:
    with pytest.raises(InvalidInputError, match="catch_up must be one of"):
        due_ticks(EVERY_10, None, at("2026-01-01T12:00Z"), at("2026-01-01T12:35Z"), "sometimes")
    with pytest.raises(InvalidInputError, match="max_catch_up must be an int >= 1"):
        due_ticks(EVERY_10, None, at("2026-01-01T12:00Z"), at("2026-01-01T12:35Z"), "all", 0)
