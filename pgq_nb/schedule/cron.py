"""Cron schedules as pure functions: parse and validate, fire times, due ticks. No I/O.

A schedule is a cron expression read in an IANA time zone (``zoneinfo``): 5 fields (minute
hour day-of-month month day-of-week), or 6 with seconds first (croniter's
``second_at_beginning``), or one of @yearly, @annually, @monthly, @weekly, @daily, @midnight,
@hourly. croniter steps through wall-clock times; this module decides which instants each
wall-clock time fires at, so the rules below hold whatever croniter version is installed.
Every datetime in or out is timezone-aware; fire times are returned in UTC, except in
:class:`Schedule`, which gives them in the schedule's zone.

Daylight saving (tested for Europe/Oslo and America/New_York, both changes of the year, and
against a brute-force reference for those, Australia/Lord_Howe's 30-minute changes and
America/Havana's changes at midnight). A tick is an instant, so 02:00+02:00 and 02:00+01:00 are
two ticks:

* A wall-clock time that does not exist (spring forward: Oslo jumps from 02:00 to 03:00, so
  02:30 never happens) fires once, at the first instant after the gap (03:00 summer time). All
  the times inside one gap fire once between them (``*/15 2 * * *`` fires once, at 03:00), and
  if 03:00 is a tick too it is that same tick, not a second one.
* A wall-clock time that occurs twice (fall back: Oslo goes from 03:00 back to 02:00, so 02:30
  happens twice) fires once, at its first occurrence.
* Except a schedule whose hour field is every hour (``0 * * * *``, ``*/15 * * * *``,
  ``* * * * * *``): it follows real time instead of the wall clock. It fires at both
  occurrences of a repeated time and skips times that do not exist, so it ticks exactly once in
  every real hour (every real 15 minutes, every real second) across both changes: no double, no
  gap. This is what Vixie cron does with its wildcard-hour jobs.

Checked against croniter 7 given zone-aware datetimes: it agrees with these rules except in the
repeated hour, where it fires fixed-hour times twice (``30 2 * * *`` at 02:30+02:00 and again
at 02:30+01:00). Here croniter only steps through naive wall-clock times, which it does the
same whatever the machine's own time zone.

Missed ticks (:func:`due_ticks`). A tick is due when it is at or after the schedule's
``next_run`` (the oldest tick not fired yet), after its last fired tick, and at or before now:

* ``latest``: only the newest due tick fires; older ones are dropped.
* ``all``: every due tick fires, oldest first, at most ``max_catch_up`` (the newest ones).
* ``skip``: only a tick that is on time fires: the newest due tick, if it is at most ``grace``
  (60 s) old. A schedule that ticks more often than that behaves like ``latest``, because its
  newest tick is always recent.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from itertools import chain
from zoneinfo import ZoneInfo

from croniter import croniter

from pgq_nb.errors import InvalidInputError
from pgq_nb.schedule.syntax import Parsed, parse_expression, zone_info

CATCH_UP_POLICIES = ("latest", "all", "skip")
#: How old the newest due tick may be for ``catch_up="skip"`` to still fire it.
SKIP_GRACE = dt.timedelta(seconds=60)
#: The default bound on how many missed ticks ``catch_up="all"`` fires at once.
MAX_CATCH_UP = 100

_UTC = dt.UTC
_SECOND = dt.timedelta(seconds=1)
_TINY = dt.timedelta(microseconds=1)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=_UTC)


def _aware(name: str, value: object) -> dt.datetime:
    """``value`` as a UTC datetime; InvalidInputError unless it is a timezone-aware datetime."""
    if not isinstance(value, dt.datetime) or value.utcoffset() is None:
        raise InvalidInputError(
            f"{name} must be a timezone-aware datetime (e.g. datetime.now(timezone.utc)), "
            f"not {value!r}"
        )
    return value.astimezone(_UTC)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CronSpec:
    """A valid cron expression (whitespace normalised) and the IANA time zone it is read in.

    Construction validates both (InvalidInputError names the bad field or zone).
    """

    expression: str
    tz: str

    def __post_init__(self) -> None:
        if not isinstance(self.expression, str):
            raise InvalidInputError(f"a cron expression is a str, not {self.expression!r}")
        if not isinstance(self.tz, str):
            raise InvalidInputError(f"a time zone is an IANA name (a str), not {self.tz!r}")
        object.__setattr__(self, "expression", " ".join(self.expression.split()))
        parse_expression(self.expression)
        zone_info(self.tz)


# -- wall-clock times and the instants they fire at -------------------------------------------


def _walls_after(p: Parsed, wall: dt.datetime, before: dt.datetime | None) -> Iterator[dt.datetime]:
    """Matching wall-clock times after ``wall``, ascending, stopping before ``before``."""
    walker = croniter(p.cron, wall.replace(microsecond=0), second_at_beginning=p.seconds)
    while (found := walker.get_next(dt.datetime)) < (before or dt.datetime.max):
        yield found


def _walls_upto(p: Parsed, wall: dt.datetime, down_to: dt.datetime | None) -> Iterator[dt.datetime]:
    """Matching wall-clock times at or before ``wall``, descending, down to ``down_to``."""
    start = wall.replace(microsecond=0) + _SECOND
    walker = croniter(p.cron, start, second_at_beginning=p.seconds)
    while (found := walker.get_prev(dt.datetime)) >= (down_to or dt.datetime.min):
        yield found


def _wall(zone: ZoneInfo, instant: dt.datetime) -> dt.datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def _first(zone: ZoneInfo, wall: dt.datetime) -> dt.datetime:
    return wall.replace(tzinfo=zone, fold=0).astimezone(_UTC)


def _second(zone: ZoneInfo, wall: dt.datetime) -> dt.datetime:
    return wall.replace(tzinfo=zone, fold=1).astimezone(_UTC)


def _transition(zone: ZoneInfo, low: dt.datetime, high: dt.datetime) -> dt.datetime:
    """The first instant in (low, high] whose UTC offset is the one at ``high``."""
    target = high.astimezone(zone).utcoffset()
    lo, hi = (low - _EPOCH) // _TINY, (high - _EPOCH) // _TINY
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if (_EPOCH + mid * _TINY).astimezone(zone).utcoffset() == target:
            hi = mid
        else:
            lo = mid
    return _EPOCH + hi * _TINY


def _repeated(zone: ZoneInfo, wall: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The wall-clock times [start, end) that occur twice, around a repeated ``wall``."""
    first, second = _first(zone, wall), _second(zone, wall)
    start = _wall(zone, _transition(zone, first, second))
    return start, start + (second - first)


def _resolve(
    p: Parsed, zone: ZoneInfo, wall: dt.datetime, forward: bool
) -> tuple[Iterator[dt.datetime], dt.datetime | None]:
    """The instants a matching ``wall`` fires at, lazily and in the order of travel, and the
    wall-clock time to walk on from if the walk must jump (None: carry on).

    A gap, or a repeated hour, is resolved whole at its first matching wall-clock time met,
    then jumped over: the times of one gap all fire once, at its end; in a repeated hour, the
    first occurrences all come before the second ones.
    """
    first, second = _first(zone, wall), _second(zone, wall)
    if first == second:
        return iter([first]), None
    if first > second:  # in a spring-forward gap
        gap_end = _transition(zone, second, first)
        fired = iter([] if p.every_hour else [gap_end])
        return fired, _wall(zone, gap_end) - _TINY if forward else _wall(zone, gap_end - _TINY)
    start, end = _repeated(zone, wall)

    def walls() -> Iterator[dt.datetime]:
        rest = _walls_after(p, wall, end) if forward else _walls_upto(p, wall - _TINY, start)
        return chain([wall], rest)

    firsts = (_first(zone, w) for w in walls())
    seconds = (_second(zone, w) for w in walls()) if p.every_hour else iter([])
    if forward:
        return chain(firsts, seconds), end - _TINY
    return chain(seconds, firsts), start - _TINY


def _walk(p: Parsed, zone: ZoneInfo, cursor: dt.datetime, forward: bool) -> Iterator[dt.datetime]:
    """Candidate instants of the wall-clock times after (forward) or at and before ``cursor``,
    in the order of travel; a gap's end may come more than once."""
    while True:
        walls = _walls_after(p, cursor, None) if forward else _walls_upto(p, cursor, None)
        for wall in walls:
            instants, jump = _resolve(p, zone, wall, forward)
            yield from instants
            if jump is not None:
                cursor = jump
                break


def _forward(p: Parsed, zone: ZoneInfo, after: dt.datetime) -> Iterator[dt.datetime]:
    """Fire times after ``after``, ascending, with the daylight-saving rules applied."""
    cursor = _wall(zone, after)
    head: Iterator[dt.datetime] = iter([])
    if _first(zone, cursor) != _second(zone, cursor):  # `after` is in a repeated hour
        start, end = _repeated(zone, cursor)
        in_second = after.astimezone(zone).fold == 1
        if not in_second:
            head = (_first(zone, w) for w in _walls_after(p, cursor, end))
        if p.every_hour:
            since = cursor if in_second else start - _TINY
            head = chain(head, (_second(zone, w) for w in _walls_after(p, since, end)))
        cursor = end - _TINY
    last = after
    for instant in chain(head, _walk(p, zone, cursor, forward=True)):
        if instant > last:
            last = instant
            yield instant


def _backward(p: Parsed, zone: ZoneInfo, at: dt.datetime) -> Iterator[dt.datetime]:
    """Fire times at or before ``at``, descending, with the daylight-saving rules applied."""
    cursor = _wall(zone, at)
    head: Iterator[dt.datetime] = iter([])
    if _first(zone, cursor) != _second(zone, cursor):  # `at` is in a repeated hour
        start, end = _repeated(zone, cursor)
        in_second = at.astimezone(zone).fold == 1
        if in_second and p.every_hour:
            head = (_second(zone, w) for w in _walls_upto(p, cursor, start))
        upto = end - _TINY if in_second else cursor
        head = chain(head, (_first(zone, w) for w in _walls_upto(p, upto, start)))
        cursor = start - _TINY
    last = at + _TINY
    for instant in chain(head, _walk(p, zone, cursor, forward=False)):
        if instant < last:
            last = instant
            yield instant


# -- the public time functions ----------------------------------------------------------------


def next_fire(spec: CronSpec, after: dt.datetime) -> dt.datetime:
    """The first fire time strictly after ``after`` (aware), in UTC."""
    return next(
        _forward(parse_expression(spec.expression), zone_info(spec.tz), _aware("after", after))
    )


def fire_times(spec: CronSpec, start: dt.datetime, end: dt.datetime) -> Iterator[dt.datetime]:
    """The fire times in [start, end), ascending, in UTC, with the daylight-saving rules above
    (what a backfill of that range fires, and what a preview shows). Lazy: stop when enough."""
    start, end = _aware("start", start), _aware("end", end)
    for instant in _forward(parse_expression(spec.expression), zone_info(spec.tz), start - _TINY):
        if instant >= end:
            return
        yield instant


def due_ticks(
    spec: CronSpec,
    last_fire: dt.datetime | None,
    next_run: dt.datetime,
    now: dt.datetime,
    catch_up: str,
    max_catch_up: int = MAX_CATCH_UP,
    *,
    grace: dt.timedelta = SKIP_GRACE,
) -> list[dt.datetime]:
    """The ticks to fire now, oldest first, in UTC, under the ``catch_up`` policy.

    Due ticks are those at or after ``next_run``, after ``last_fire`` (the last one fired, if
    any) and at or before ``now``. ``latest`` keeps the newest; ``all`` keeps the newest
    ``max_catch_up``; ``skip`` keeps the newest only if it is at most ``grace`` old.
    """
    if catch_up not in CATCH_UP_POLICIES:
        raise InvalidInputError(
            f"catch_up must be one of {', '.join(map(repr, CATCH_UP_POLICIES))}, not {catch_up!r}"
        )
    if isinstance(max_catch_up, bool) or not isinstance(max_catch_up, int) or max_catch_up < 1:
        raise InvalidInputError(f"max_catch_up must be an int >= 1, not {max_catch_up!r}")
    if not isinstance(grace, dt.timedelta) or grace < dt.timedelta(0):
        raise InvalidInputError(f"grace must be a timedelta >= 0, not {grace!r}")
    now, oldest = _aware("now", now), _aware("next_run", next_run)
    if last_fire is not None:
        oldest = max(oldest, _aware("last_fire", last_fire) + _TINY)
    if oldest > now:
        return []
    wanted = max_catch_up if catch_up == "all" else 1
    ticks: list[dt.datetime] = []
    for instant in _backward(parse_expression(spec.expression), zone_info(spec.tz), now):
        if instant < oldest or len(ticks) >= wanted:
            break
        ticks.append(instant)
    if catch_up == "skip" and ticks and now - ticks[0] > grace:
        return []
    return ticks[::-1]


# -- records ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Schedule:
    """What a schedule's handler receives (PgQueuer's name): the tick being run.

    ``fire_time`` is the tick, and ``last_fire_time`` the tick fired before it (None for the
    first), both in the schedule's time zone. A run started by hand fires at the moment it was
    asked for.
    """

    name: str
    expression: str
    tz: str
    fire_time: dt.datetime
    last_fire_time: dt.datetime | None = None

    def __post_init__(self) -> None:
        zone = zone_info(self.tz)
        object.__setattr__(self, "fire_time", _aware("fire_time", self.fire_time).astimezone(zone))
        if self.last_fire_time is not None:
            last = _aware("last_fire_time", self.last_fire_time).astimezone(zone)
            object.__setattr__(self, "last_fire_time", last)
