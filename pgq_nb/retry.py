"""Retry policies: how often and how late a failed job runs again. Pure functions, no I/O.

A failed attempt is rescheduled in the database (``execute_after = now + delay``); nothing
sleeps in a handler or holds a worker slot while it waits.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from collections.abc import Callable

from pgq_nb.errors import InvalidInputError


class RetryLater(Exception):
    """Raise in a handler to run the job again after ``delay`` seconds (counts as an attempt;
    when no attempts are left the job fails)."""

    def __init__(self, delay: float | dt.timedelta = 0.0, reason: str = "") -> None:
        seconds = delay.total_seconds() if isinstance(delay, dt.timedelta) else float(delay)
        if seconds < 0:
            raise InvalidInputError("RetryLater delay must not be negative")
        super().__init__(reason or f"retry requested in {seconds:g} s")
        self.delay = seconds
        self.reason = reason

    def __reduce__(self) -> tuple[type[RetryLater], tuple[float, str]]:
        # pickled as its arguments (Exception's own reduce passes the message back as the
        # delay): a handler in a process or on Dask that raises it is retried after its delay
        return (RetryLater, (self.delay, self.reason))


class GiveUp(Exception):
    """Raise in a handler to fail the job at once, whatever attempts are left."""


def _seconds(name: str, value: float | dt.timedelta) -> float:
    seconds = value.total_seconds() if isinstance(value, dt.timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise InvalidInputError(f"{name} must be a non-negative number of seconds or a timedelta")
    return float(seconds)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How a failing job is retried.

    The n-th retry waits ``base_delay * factor ** (n - 1)`` seconds, capped at ``max_delay``,
    then spread by ``jitter`` (0.1 = up to 10 % either way) so that retries of many jobs that
    failed together do not all come back at once.

    ``retry_on``: only these exception types are retried (default: any Exception).
    ``give_up_on``: these fail at once, even if ``retry_on`` matches.
    A crashed worker's job (stale heartbeat) also counts as a failed attempt.
    """

    max_attempts: int = 3
    base_delay: float | dt.timedelta = 1.0
    max_delay: float | dt.timedelta = 300.0
    factor: float = 2.0
    jitter: float = 0.1
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,)
    give_up_on: type[BaseException] | tuple[type[BaseException], ...] = ()
    # the same, normalised: seconds and tuples
    base_delay_s: float = dataclasses.field(init=False, repr=False)
    max_delay_s: float = dataclasses.field(init=False, repr=False)
    retry_types: tuple[type[BaseException], ...] = dataclasses.field(init=False, repr=False)
    give_up_types: tuple[type[BaseException], ...] = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise InvalidInputError("max_attempts must be an int")
        if self.max_attempts < 1:
            raise InvalidInputError("max_attempts must be at least 1 (1 means no retries)")
        object.__setattr__(self, "base_delay_s", _seconds("base_delay", self.base_delay))
        object.__setattr__(self, "max_delay_s", _seconds("max_delay", self.max_delay))
        if self.max_delay_s < self.base_delay_s:
            raise InvalidInputError("max_delay must be at least base_delay")
        if not isinstance(self.factor, int | float) or self.factor < 1:
            raise InvalidInputError("factor must be a number >= 1")
        if not isinstance(self.jitter, int | float) or not 0 <= self.jitter <= 1:
            raise InvalidInputError("jitter must be between 0 and 1")
        for name, normalised in (("retry_on", "retry_types"), ("give_up_on", "give_up_types")):
            value = getattr(self, name)
            types = (value,) if isinstance(value, type) else tuple(value)
            if not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
                raise InvalidInputError(f"{name} must be exception types")
            object.__setattr__(self, normalised, types)

    @classmethod
    def none(cls) -> RetryPolicy:
        """Never retry: the first failure is final."""
        return cls(max_attempts=1)


def retry_delay(policy: RetryPolicy, attempt: int, unit_random: float = 0.5) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    ``unit_random`` in [0, 1) picks the jitter: 0.5 means none, 0 the shortest, 1 the longest.
    """
    raw = policy.base_delay_s * policy.factor ** max(attempt - 1, 0)
    capped = min(raw, policy.max_delay_s)
    spread = 1.0 + policy.jitter * (2.0 * unit_random - 1.0)
    return max(0.0, min(capped * spread, policy.max_delay_s))


@dataclasses.dataclass(frozen=True)
class Decision:
    """What to do with a failed attempt: retry after ``delay`` seconds, or fail for good."""

    retry: bool
    delay: float = 0.0


def decide(
    policy: RetryPolicy,
    error: BaseException,
    attempt: int,
    rand: Callable[[], float] = random.random,
) -> Decision:
    """Retry or fail, for ``error`` raised by attempt number ``attempt``."""
    if isinstance(error, GiveUp):
        return Decision(retry=False)
    if attempt >= policy.max_attempts:
        return Decision(retry=False)
    if isinstance(error, RetryLater):
        return Decision(retry=True, delay=error.delay)
    if isinstance(error, policy.give_up_types):
        return Decision(retry=False)
    if not isinstance(error, policy.retry_types):
        return Decision(retry=False)
    return Decision(retry=True, delay=retry_delay(policy, attempt, rand()))
