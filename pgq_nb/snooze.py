"""Snooze (issue #21, item 2): a handler says "not yet, ask me again later" without failing.

``raise pgq_nb.Snooze(seconds)`` (or a ``timedelta``) from any handler (``async def``, ``def``
in a thread, in a process, on Dask, transactional: its writes roll back) puts the job back
queued, due after the delay. It is not a failure: the attempt the start counted is taken
back, nothing is added to ``errors``, no retry or failure hook fires (``"snoozed"`` does), and
``snoozes`` goes up by one. The worker records it in its batched ``finish_jobs`` (outcome
``'snooze'``), which wakes the workers when the job is due (``due:SECONDS``).

A job may snooze at most its entrypoint's ``max_snoozes`` times (:data:`DEFAULT_MAX_SNOOZES`
unless ``@q.entrypoint(..., max_snoozes=N)`` says otherwise): the snooze beyond the cap fails
the job for good, with an error saying how often it snoozed and how to raise the cap. So a job
that keeps saying "not yet" ends instead of cycling for ever. Pure functions, table-tested.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, NamedTuple

from pgq_nb.errors import InvalidInputError

#: Snoozes a job may take when its entrypoint does not say (``max_snoozes=``): enough for a
#: job that polls for an input every few minutes for hours, not enough to cycle for ever.
DEFAULT_MAX_SNOOZES = 100
#: The longest snooze: a year (a job due later belongs in a schedule).
MAX_SNOOZE_S = 365 * 24 * 3600.0


def snooze_seconds(delay: object) -> float:
    """``delay`` (seconds as an int or float, or a timedelta) as seconds; InvalidInputError for
    a negative, NaN or infinite delay, a bool or anything else."""
    if isinstance(delay, dt.timedelta):
        seconds = delay.total_seconds()
    elif isinstance(delay, bool) or not isinstance(delay, int | float):
        raise InvalidInputError(
            f"Snooze takes seconds (an int or float) or a datetime.timedelta, not "
            f"{type(delay).__name__} {delay!r:.60}: raise pgq_nb.Snooze(300) or "
            "pgq_nb.Snooze(datetime.timedelta(minutes=5))"
        )
    else:
        seconds = float(delay)
    if math.isnan(seconds) or seconds < 0:
        raise InvalidInputError(
            f"Snooze delay {seconds!r} is not a non-negative number of seconds: give 0 to be "
            "asked again at once, or a positive delay"
        )
    if seconds > MAX_SNOOZE_S:
        raise InvalidInputError(
            f"Snooze delay of {seconds:g} s is more than a year (pgq_nb.snooze.MAX_SNOOZE_S); "
            "for work that far ahead, enqueue it with execute_after= or use a schedule"
        )
    return seconds


class Snooze(Exception):
    """Raise in a handler to put its job back, due after ``delay`` (seconds or a timedelta),
    without using up an attempt: "not yet, ask me again later". The job's ``snoozes`` count
    goes up; past its entrypoint's ``max_snoozes`` the job fails for good."""

    def __init__(self, delay: float | dt.timedelta = 0.0) -> None:
        seconds = snooze_seconds(delay)
        super().__init__(seconds)  # args = (seconds,): it pickles back from a process
        self.delay = seconds

    def __str__(self) -> str:
        return f"snoozed for {self.delay:g} s"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Snooze, (self.delay,))


def check_max_snoozes(value: object) -> int:
    """``value`` if it is an int >= 0 (``max_snoozes=`` of an entrypoint); else
    InvalidInputError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(
            f"max_snoozes must be an int (how many times a job may snooze), not "
            f"{type(value).__name__} {value!r:.60}"
        )
    if not 0 <= value < 2**31:
        raise InvalidInputError(
            f"max_snoozes={value} is out of range: give 0 (never snooze) or more "
            f"(default {DEFAULT_MAX_SNOOZES})"
        )
    return value


class SnoozeDecision(NamedTuple):
    """What a snooze comes to: back to the queue after ``delay`` seconds, or (over the cap) a
    failure for good with ``error``."""

    snooze: bool
    delay: float
    error: str | None


def after_snooze(entrypoint: str, snoozes: int, max_snoozes: int, delay: float) -> SnoozeDecision:
    """A job of ``entrypoint`` that snoozed ``snoozes`` times before raised Snooze(``delay``):
    snooze again while that stays within ``max_snoozes``, else fail for good saying why."""
    if snoozes < max_snoozes:
        return SnoozeDecision(True, delay, None)
    times = "time" if snoozes == 1 else "times"
    return SnoozeDecision(
        False,
        0.0,
        f"SnoozeLimitReached: the job snoozed {snoozes} {times} already and asked to snooze "
        f"again; entrypoint {entrypoint!r} allows max_snoozes={max_snoozes}. Raise the cap "
        f"with @q.entrypoint({entrypoint!r}, max_snoozes=N), or have the handler fail or "
        "return when what it waits for does not come",
    )
