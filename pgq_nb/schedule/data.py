"""Schedules as data: add, change and remove schedules of any registered entrypoint from a
running process (``q.add_schedule``), backfill a schedule over a past range, and list the ticks
a schedule will fire. Async functions taking a pool (or connection) and the named queries; the
queue's calls (:mod:`pgq_nb.schedule.api`) check the entrypoint against the registry first.

A schedule is (entrypoint, payload) on a cron expression: each tick is a job of the entrypoint
carrying the payload, with the schedule's name and the tick's fire time on the job. A schedule
added here has ``source = 'data'``: workers never re-register it, and only these calls change
it. One declared with ``@q.schedule`` has ``source = 'code'``: its code owns it, so it cannot
be updated or removed here (pause it instead).

Decisions:

* A changed expression or time zone moves next_run to the first new tick after now (as a
  re-declared ``@q.schedule`` does); any other change keeps next_run, enabled and the last run.
* :func:`remove` deletes the row in one statement; a worker firing the schedule holds the row
  locked, so the removal waits for that fire and no tick fires after it commits. Its jobs,
  their history and its fired ticks stay.
* :func:`backfill` fires every tick of [start, end) that is not after the database's now and
  has not fired (ticks are remembered for a week after they fired: see ``prune_ticks``), in
  batches of :data:`BACKFILL_BATCH` through the scheduler's own ``schedule_ticks`` rows, so two
  backfills of the same range at once, or a backfill and the workers, fire each tick once.
  Ticks after now are left to the workers. It neither moves next_run nor counts as a last run.
  A paused schedule is refused (its ticks are not wanted now, by whoever paused it) unless
  ``include_paused=True`` says the backfill is meant anyway; it stays paused.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
from collections.abc import Callable
from typing import Any

from pgq_nb.errors import InvalidInputError
from pgq_nb.schedule.cron import CronSpec, fire_times, next_fire
from pgq_nb.schedule.database import ScheduleSpec, unknown_schedule
from pgq_nb.store import acquired

#: A backfill of more ticks than this needs ``force=True``.
BACKFILL_LIMIT = 100_000
#: Ticks written per statement (and per transaction) by a backfill.
BACKFILL_BATCH = 1_000
#: The most ticks a preview lists.
PREVIEW_LIMIT = 10_000


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataSchedule:
    """A schedule as ``q.add_schedule`` stores it: a valid name, cron expression, time zone and
    catch-up policy (checked by :class:`ScheduleSpec`), the entrypoint its ticks run and their
    payload, already encoded."""

    spec: ScheduleSpec
    entrypoint: str
    payload: bytes | None


def _code_owned(name: str, doing: str) -> InvalidInputError:
    return InvalidInputError(
        f"schedule {name!r} is declared in code with @q.schedule, so the code owns it: "
        f"{doing}; change or delete the decorator (and restart its workers), or stop it with "
        f"q.pause_schedule({name!r})"
    )


async def _check_entrypoint(conn: Any, queries: dict[str, str], entrypoint: str) -> None:
    """An @q.schedule handler takes a Schedule, not a Job: refuse to schedule one as data."""
    if await conn.fetchval(queries["schedule_source"], entrypoint) == "code":
        raise InvalidInputError(
            f"entrypoint {entrypoint!r} is the handler of the @q.schedule schedule "
            f"{entrypoint!r} (it takes a Schedule, not a Job); schedule an @q.entrypoint "
            "handler, which receives the payload as job.data"
        )


async def add(db: Any, queries: dict[str, str], schedule: DataSchedule) -> dt.datetime:
    """Store ``schedule``; return its first tick. InvalidInputError if the name is taken."""
    spec = schedule.spec
    async with acquired(db) as conn, conn.transaction():
        await _check_entrypoint(conn, queries, schedule.entrypoint)
        now = await conn.fetchval(queries["schedules_now"])
        next_run = next_fire(spec.cron, now)
        added = await conn.fetchval(
            queries["add_schedule"],
            spec.name,
            schedule.entrypoint,
            schedule.payload,
            spec.expression,
            spec.tz,
            spec.catch_up,
            next_run,
        )
        if added is not None and (spec.tags or spec.meta):
            await _label(conn, queries, spec)
        if added is None:
            source = await conn.fetchval(queries["schedule_source"], spec.name)
            how = "declared with @q.schedule" if source == "code" else "added before"
            raise InvalidInputError(
                f"a schedule named {spec.name!r} already exists ({how}); give this one another "
                f"name, or change that one with q.update_schedule({spec.name!r}, ...)"
            )
    return next_run


async def lock(conn: Any, queries: dict[str, str], name: str, doing: str) -> Any:
    """The row of data schedule ``name``, locked; InvalidInputError for an unknown name or an
    @q.schedule one."""
    if not isinstance(name, str):
        raise InvalidInputError(f"a schedule name is a str, not {name!r}")
    row = await conn.fetchrow(queries["lock_schedule"], name)
    if row is None:
        raise await unknown_schedule(conn, queries, name)
    if row["source"] == "code":
        raise _code_owned(name, doing)
    return row


async def update(
    db: Any,
    queries: dict[str, str],
    name: str,
    change: Callable[[Any], DataSchedule],
) -> dt.datetime:
    """Change data schedule ``name`` to ``change(its locked row)``; return its next run."""
    async with acquired(db) as conn, conn.transaction():
        row = await lock(conn, queries, name, "q.update_schedule cannot change it")
        new = change(row)
        if new.entrypoint != row["entrypoint"]:
            await _check_entrypoint(conn, queries, new.entrypoint)
        spec = new.spec
        next_run: dt.datetime = row["next_run"]
        if (spec.expression, spec.tz) != (row["expression"], row["tz"]):
            next_run = next_fire(spec.cron, row["now"])
        await conn.execute(
            queries["update_schedule"],
            name,
            new.entrypoint,
            new.payload,
            spec.expression,
            spec.tz,
            spec.catch_up,
            next_run,
        )
        await _label(conn, queries, spec)
    return next_run


async def _label(conn: Any, queries: dict[str, str], spec: ScheduleSpec) -> None:
    """Store the labels of ``spec``'s ticks' jobs."""
    meta = None if spec.meta is None else json.dumps(spec.meta)
    await conn.execute(queries["label_schedule"], spec.name, spec.tags, meta)


async def remove(db: Any, queries: dict[str, str], name: str) -> None:
    """Drop data schedule ``name`` (see the module docstring)."""
    async with acquired(db) as conn, conn.transaction():
        await lock(conn, queries, name, "q.remove_schedule cannot remove it")
        await conn.execute(queries["remove_schedule"], name)


async def _row(conn: Any, queries: dict[str, str], name: str) -> Any:
    if not isinstance(name, str):
        raise InvalidInputError(f"a schedule name is a str, not {name!r}")
    row = await conn.fetchrow(queries["get_schedule"], name)
    if row is None:
        raise await unknown_schedule(conn, queries, name)
    return row


def _aware(what: str, value: object) -> dt.datetime:
    if not isinstance(value, dt.datetime) or value.utcoffset() is None:
        raise InvalidInputError(
            f"{what} must be a timezone-aware datetime, e.g. "
            f"datetime(2026, 1, 1, tzinfo=timezone.utc) or pd.Timestamp('2026-01-01', tz='UTC'), "
            f"not {value!r}"
        )
    return value


def backfill_ticks(
    spec: CronSpec, name: str, start: object, end: object, now: dt.datetime, force: bool
) -> list[dt.datetime]:
    """The ticks a backfill of [start, end) fires, ascending (those after ``now`` left out);
    InvalidInputError for a range that is backwards, or over :data:`BACKFILL_LIMIT` ticks
    without ``force``."""
    start, end = _aware("start", start), _aware("end", end)
    if start > end:
        raise InvalidInputError(
            f"backfill of {name!r}: start {start.isoformat()} is after end {end.isoformat()}; "
            "the range is [start, end), so swap them"
        )
    upto = min(end, now + dt.timedelta(microseconds=1))
    ticks = fire_times(spec, start, upto)
    wanted = list(ticks if force else itertools.islice(ticks, BACKFILL_LIMIT + 1))
    if not force and len(wanted) > BACKFILL_LIMIT:
        raise InvalidInputError(
            f"backfill of {name!r} from {start.isoformat()} to {end.isoformat()} covers more "
            f"than {BACKFILL_LIMIT:,} ticks of {spec.expression!r}; narrow the range, or pass "
            "force=True (--force) to enqueue them all"
        )
    return wanted


async def backfill(
    db: Any,
    queries: dict[str, str],
    name: str,
    start: object,
    end: object,
    *,
    force: bool = False,
    include_paused: bool = False,
    on_start: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    on_fired: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Fire the ticks of schedule ``name`` in [start, end) that have not fired, oldest first
    (see the module docstring). Returns one dict per tick of the range up to now, in time
    order: ``fire_time``, ``job_id`` (the job that tick fired, by this call or before; None if
    it fired so long ago that its record was pruned) and ``enqueued`` (this call fired it).
    ``on_start(total)`` is told the number of ticks, ``on_batch(n)`` each batch done (its
    ticks) and ``on_fired(n)`` how many of them this call fired. A paused schedule is refused
    unless ``include_paused``."""
    if not isinstance(force, bool):
        raise InvalidInputError(f"force must be True or False, not {force!r}")
    if not isinstance(include_paused, bool):
        raise InvalidInputError(f"include_paused must be True or False, not {include_paused!r}")
    async with acquired(db) as conn:
        row = await _row(conn, queries, name)
        if not row["enabled"] and not include_paused:
            raise InvalidInputError(
                f"schedule {name!r} is paused, so nothing was backfilled: resume it with "
                f"q.resume_schedule({name!r}) first, or pass include_paused=True "
                "(--include-paused) to backfill it while it stays paused"
            )
        cron = CronSpec(expression=row["expression"], tz=row["tz"])
        ticks = backfill_ticks(cron, name, start, end, row["now"], force)
        if on_start is not None:
            on_start(len(ticks))
        out: list[dict[str, Any]] = []
        for first in range(0, len(ticks), BACKFILL_BATCH):
            batch = ticks[first : first + BACKFILL_BATCH]
            async with conn.transaction():
                fired = await conn.fetch(queries["backfill_ticks"], name, batch)
                if not fired and await conn.fetchval(queries["schedule_source"], name) is None:
                    raise InvalidInputError(
                        f"schedule {name!r} was removed while it was being backfilled; "
                        f"{len(out):,} of its {len(ticks):,} ticks were looked at"
                    )
            new = {r["fire_time"]: r["id"] for r in fired}
            before = {
                r["fire_time"]: r["job_id"]
                for r in await conn.fetch(queries["fired_ticks"], name, batch)
            }
            out += [
                {
                    "fire_time": t,
                    "job_id": new.get(t, before.get(t)),
                    "enqueued": t in new,
                }
                for t in batch
            ]
            if on_batch is not None:
                on_batch(len(batch))
            if on_fired is not None:
                on_fired(len(new))
    return out


async def preview(
    db: Any,
    queries: dict[str, str],
    name: str,
    start: object = None,
    days: float = 7,
    limit: int = PREVIEW_LIMIT,
) -> tuple[Any, list[dt.datetime]]:
    """Schedule ``name``'s row and its fire times (UTC) from ``start`` (default: the database's
    now) for ``days`` days, at most ``limit`` of them."""
    if isinstance(days, bool) or not isinstance(days, int | float) or not 0 < days <= 3660:
        raise InvalidInputError(f"days must be a number from 0 (exclusive) to 3660, not {days!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidInputError(f"limit must be an int >= 1, not {limit!r}")
    async with acquired(db) as conn:
        row = await _row(conn, queries, name)
    begin = row["now"] if start is None else _aware("start", start)
    cron = CronSpec(expression=row["expression"], tz=row["tz"])
    ticks = fire_times(cron, begin, begin + dt.timedelta(days=days))
    return row, list(itertools.islice(ticks, limit))
