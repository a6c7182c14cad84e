"""The checks of an enqueue's arguments that need no database: ``execute_after`` (a delay or
an aware datetime), the dedupe scope and window, dedupe keys. Used by :mod:`pgq_nb.enqueue`
and by ``enqueue_df``.
"""

from __future__ import annotations

import datetime as dt

from pgq_nb.errors import InvalidInputError
from pgq_nb.models import DEDUPE_KEY_LIMIT, check_text

#: The longest delay (either way) and dedupe window: about 1,000 years. Python dates end in
#: year 9999, and a window becomes a timestamp in Postgres.
MAX_DELAY = dt.timedelta(days=365_000)


def check_delay(name: str, value: dt.timedelta) -> dt.timedelta:
    """``value`` if it is within MAX_DELAY either way; else InvalidInputError."""
    if abs(value) > MAX_DELAY:
        raise InvalidInputError(
            f"{name}={value!r} is too far away; a delay (or window) may be at most "
            f"{MAX_DELAY.days:,} days (about 1,000 years) either way"
        )
    return value


def check_time(value: object) -> dt.datetime | None:
    """``execute_after`` as an aware datetime (a timedelta counts from now)."""
    if value is None:
        return None
    if isinstance(value, dt.timedelta):
        return dt.datetime.now(dt.UTC) + check_delay("execute_after", value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise InvalidInputError(
                "execute_after is a naive datetime; give it a time zone "
                "(datetime.now(timezone.utc) + ...) or pass a timedelta"
            )
        try:
            value.astimezone(dt.UTC)  # asyncpg sends it in UTC
        except OverflowError:
            raise InvalidInputError(
                f"execute_after={value.isoformat()} is out of range in UTC; give a time "
                "between the years 1 and 9999"
            ) from None
        return value
    raise InvalidInputError(
        f"execute_after must be a timezone-aware datetime or a timedelta, not "
        f"{type(value).__name__}"
    )


def check_scope(dedupe: object) -> tuple[str, float | None]:
    """(scope, window seconds) of a ``dedupe`` argument."""
    if isinstance(dedupe, dt.timedelta):
        seconds = check_delay("dedupe", dedupe).total_seconds()
        if seconds <= 0:
            raise InvalidInputError("a dedupe window must be a positive timedelta")
        return "window", seconds
    if dedupe in ("active", "queued"):
        return str(dedupe), None
    raise InvalidInputError(
        f"dedupe must be 'active' (while queued or running), 'queued' (while queued) or a "
        f"timedelta (a window after enqueue), not {dedupe!r}"
    )


def check_key(name: str, key: object) -> str:
    """A dedupe key Postgres can store and index."""
    return check_text(name, key, limit=DEDUPE_KEY_LIMIT, in_bytes=True)
