"""Cron syntax: parsing and validating 5- and 6-field expressions (with the bad field named
in every error) and time zones. The fire-time logic is in :mod:`pgq_nb.schedule.cron`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterBadDateError, CroniterError, croniter

from pgq_nb.errors import InvalidInputError, did_you_mean

_NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELDS = ("minute", "hour", "day of month", "month", "day of week")
_BOUNDS = {
    "second": (0, 59),
    "minute": (0, 59),
    "hour": (0, 23),
    "day of month": (1, 31),
    "month": (1, 12),
    "day of week": (0, 7),
}
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_NAMES = {
    "month": ({name: i for i, name in enumerate(_MONTHS, start=1)}, " or a month name (jan-dec)"),
    "day of week": ({name: i for i, name in enumerate(_DAYS)}, " or a day name (sun-sat)"),
}
_NUMBER = re.compile(r"[0-9]+")


# -- parsing ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Parsed:
    cron: str  # what croniter is given
    seconds: bool  # 6 fields, seconds first
    every_hour: bool  # the hour field selects all 24 hours: follow real time across DST


def _field_error(expression: str, number: int, name: str, problem: str) -> InvalidInputError:
    return InvalidInputError(
        f"invalid cron expression {expression!r}: field {number} ({name}) {problem}"
    )


def _check_value(token: str, name: str, fail: functools.partial[InvalidInputError]) -> int:
    low, high = _BOUNDS[name]
    if _NUMBER.fullmatch(token):
        if not low <= int(token) <= high:
            raise fail(f"{token!r} is out of range {low}-{high}")
        return int(token)
    names, hint = _NAMES.get(name, ({}, ""))
    if token.lower() in names:
        return names[token.lower()]
    if token.lower() in ("r", "h") or token.lower().startswith(("r(", "h(")):
        raise fail(
            f"{token!r}: random (R) and hashed (H) values are not supported, because every "
            "worker must compute the same fire times; write the value out"
        )
    raise fail(f"{token!r} is not a number from {low} to {high}{hint}")


def _check_field(expression: str, number: int, name: str, value: str) -> None:
    """Raise InvalidInputError naming the field if ``value`` is not valid cron for it."""
    fail = functools.partial(_field_error, expression, number, name)
    low, high = _BOUNDS[name]
    for item in value.split(","):
        if not item:
            raise fail(f"{value!r} has an empty list item; remove the extra comma")
        base, slash, step = item.partition("/")
        if slash and not (_NUMBER.fullmatch(step) and 1 <= int(step) <= high - low + 1):
            raise fail(
                f"step {step!r} in {item!r} must be a whole number from 1 to {high - low + 1}"
            )
        lowered = base.lower()
        if lowered == "*":
            continue
        if lowered == "?":
            if name not in ("day of month", "day of week"):
                raise fail("'?' is only allowed for day of month and day of week; use '*'")
            continue
        if name == "day of month" and lowered == "l" and not slash:
            continue  # the last day of the month
        if name == "day of week" and "#" in lowered and not slash:
            day, _, nth = base.partition("#")  # e.g. 5#3, the third Friday
            _check_value(day, name, fail)
            if not re.fullmatch(r"[1-5]", nth):
                raise fail(f"{item!r}: the number after '#' is the week of the month, 1 to 5")
            continue
        if name == "day of week" and lowered.startswith("l") and len(lowered) > 1 and not slash:
            _check_value(base[1:], name, fail)  # e.g. L5, the last Friday
            continue
        first, dash, last = base.partition("-")
        start = _check_value(first, name, fail)
        if dash and _check_value(last, name, fail) < start:
            raise fail(
                f"range {base!r} goes backwards; to wrap around, write two ranges: "
                f"'{first}-{high},{low}-{last}'"
            )


@functools.lru_cache(maxsize=512)
def parse_expression(expression: str) -> Parsed:
    text = _NICKNAMES.get(expression.lower(), expression)
    if text.startswith("@"):
        raise InvalidInputError(
            f"unknown cron nickname {expression!r}; use one of {', '.join(_NICKNAMES)}, or write "
            "the fields out"
        )
    fields = text.split()
    if len(fields) not in (5, 6):
        raise InvalidInputError(
            f"cron expression {expression!r} has {len(fields)} fields; write 5 (minute hour "
            "day-of-month month day-of-week, e.g. '0 * * * *' for every hour) or 6 with seconds "
            "first (e.g. '*/10 * * * * *' for every 10 seconds)"
        )
    seconds = len(fields) == 6
    names = (("second",) if seconds else ()) + _FIELDS
    for number, (name, value) in enumerate(zip(names, fields, strict=True), start=1):
        _check_field(expression, number, name, value)
    try:
        expanded, _ = croniter.expand(text, second_at_beginning=seconds)
        walker = croniter(text, dt.datetime(2000, 1, 1), second_at_beginning=seconds)
        walker.get_next(dt.datetime)
    except CroniterBadDateError:
        raise InvalidInputError(
            f"cron expression {expression!r} never fires (no date has day of month "
            f"{fields[-3]!r} in month {fields[-2]!r}); fix the day-of-month or month field"
        ) from None
    except (CroniterError, ValueError, KeyError, IndexError) as exc:  # past the checks above
        raise InvalidInputError(
            f"invalid cron expression {expression!r}: croniter refuses it ({exc}); check each "
            f"field against the cron syntax"
        ) from None
    hours = expanded[1]  # croniter orders minute, hour, ... whatever the input order
    every_hour = hours == ["*"] or set(range(24)) <= set(hours)
    return Parsed(text, seconds, every_hour)


@functools.lru_cache(maxsize=256)
def zone_info(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        pass
    raise InvalidInputError(
        f"unknown time zone {tz!r}{did_you_mean(tz, available_timezones())}; use an IANA name "
        "such as 'Europe/Oslo', 'America/New_York' or 'UTC'"
    )
