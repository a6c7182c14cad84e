"""Cron schedules in the database: register them, fire due ticks exactly once, manage them.

Async functions taking an asyncpg connection (or pool) and the named queries
(``q.aio.queries``); the time arithmetic is in :mod:`pgq_nb.schedule.cron`, and every decision about
what is due uses the database clock, which all workers share.

Exactly once, with no leader: any worker may call :func:`fire_due` for the schedules it has
handlers for. It locks the due schedule rows ``FOR UPDATE SKIP LOCKED`` (so one worker at a time
computes a schedule's ticks and the others skip it instead of waiting), then writes each tick's
``schedule_ticks`` row and its job in one statement: the primary key (schedule, fire_time) makes
a second fire of a tick write nothing, whoever tries it and however stale their view. A tick's
job is a job of the schedule's entrypoint with the schedule's payload, carrying the schedule's
name and the tick's fire time. A worker fires the schedules of the entrypoints it serves: an
``@q.schedule`` one (entrypoint = its name, no payload) and any added with ``q.add_schedule``
(:mod:`pgq_nb.schedule.data`), read from the table at every look, so a schedule added, changed or
removed from another process needs no restart.

Decisions:

* :func:`run_now` queues a job with fire_time = now and writes no ``schedule_ticks`` row: it is
  an extra run, and the next cron tick still fires as planned. It works on a paused schedule.
* :func:`pause` stops firing; jobs of the schedule already queued stay queued (cancel them like
  any job). :func:`resume` fires again from the first tick after now: ticks that fell in the
  pause are never replayed, whatever ``catch_up`` says (catch-up is for ticks missed because no
  worker ran, not for ticks someone chose to pause).
* :func:`register` on an existing schedule keeps its enabled flag and last run; a changed
  expression or time zone moves next_run to the first new tick after now (missed ticks of the
  old expression are not fired). It never overwrites a schedule added with ``q.add_schedule``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from pgq_nb.errors import InvalidInputError, article, did_you_mean
from pgq_nb.labels import check_meta, check_tags
from pgq_nb.schedule.cron import (
    CATCH_UP_POLICIES,
    MAX_CATCH_UP,
    CronSpec,
    Schedule,
    due_ticks,
    next_fire,
)
from pgq_nb.store import acquired

logger = logging.getLogger("pgq_nb.schedule.database")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScheduleSpec:
    """A schedule as registered: its name (also the entrypoint of its tick jobs), its cron
    expression and IANA time zone, and what to do with ticks missed while no worker ran
    (``catch_up``: ``latest``, ``all`` or ``skip``; see :mod:`pgq_nb.schedule.cron`).

    Construction validates everything, so a bad schedule is refused where it is declared.
    """

    name: str
    expression: str
    tz: str = "UTC"
    catch_up: str = "latest"
    #: the labels of its ticks' jobs (see :mod:`pgq_nb.labels`), checked here
    tags: Sequence[str] | None = dataclasses.field(default=None, hash=False)
    meta: Mapping[str, Any] | None = dataclasses.field(default=None, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or self.name != self.name.strip():
            raise InvalidInputError(
                f"a schedule name must be a non-empty str without surrounding spaces, not "
                f"{self.name!r}"
            )
        if self.catch_up not in CATCH_UP_POLICIES:
            raise InvalidInputError(
                f"schedule {self.name!r}: catch_up must be one of "
                f"{', '.join(map(repr, CATCH_UP_POLICIES))}, not {self.catch_up!r}"
            )
        try:
            cron = CronSpec(expression=self.expression, tz=self.tz)
        except InvalidInputError as exc:
            raise InvalidInputError(f"schedule {self.name!r}: {exc}") from None
        object.__setattr__(self, "expression", cron.expression)
        try:
            object.__setattr__(self, "tags", check_tags(self.tags))
            object.__setattr__(self, "meta", check_meta(self.meta))
        except InvalidInputError as exc:
            raise InvalidInputError(f"schedule {self.name!r}: {exc}") from None

    @property
    def cron(self) -> CronSpec:
        """The expression and zone, as :mod:`pgq_nb.schedule.cron` takes them."""
        return CronSpec(expression=self.expression, tz=self.tz)


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidInputError(f"a schedule name is a str, not {name!r}")
    return name


def _check_names(names: Collection[str]) -> list[str]:
    if isinstance(names, str):
        raise InvalidInputError(f"names must be a list of schedule names, not the str {names!r}")
    return sorted({_check_name(n) for n in names})


async def unknown_schedule(conn: Any, queries: dict[str, str], name: str) -> InvalidInputError:
    known = [r["name"] for r in await conn.fetch(queries["schedule_names"])]
    if not known:
        return InvalidInputError(
            f"no schedule named {name!r}: no schedules are stored yet; add one with "
            "q.add_schedule(name, cron, entrypoint=...) or declare one with "
            "@q.schedule(name, expression)"
        )
    return InvalidInputError(
        f"no schedule named {name!r}{did_you_mean(name, known)}; the known schedules are "
        f"{', '.join(map(repr, known))}"
    )


async def register(db: Any, queries: dict[str, str], specs: Sequence[ScheduleSpec]) -> list[str]:
    """Create or update the ``@q.schedule`` schedules in ``specs`` (see the module docstring
    for what an update keeps). Each new or changed schedule's next_run is its first tick after
    now. Returns the names it left alone because a ``q.add_schedule`` schedule has them."""
    specs = list(specs)
    for i, spec in enumerate(specs):
        if not isinstance(spec, ScheduleSpec):
            raise InvalidInputError(
                f"specs[{i}] is {article(type(spec).__name__)}, not a ScheduleSpec; build it with "
                "ScheduleSpec(name=..., expression=..., tz=..., catch_up=...)"
            )
    names = [spec.name for spec in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidInputError(
            f"schedule {twice[0]!r} is given twice; give each schedule one expression"
        )
    if not specs:
        return []
    specs.sort(key=lambda spec: spec.name)
    async with acquired(db) as conn, conn.transaction():
        now = await conn.fetchval(queries["schedules_now"])
        stored = await conn.fetch(
            queries["upsert_schedules"],
            [spec.name for spec in specs],
            [spec.expression for spec in specs],
            [spec.tz for spec in specs],
            [spec.catch_up for spec in specs],
            [next_fire(spec.cron, now) for spec in specs],
            [None if spec.tags is None else json.dumps(spec.tags) for spec in specs],
            [None if spec.meta is None else json.dumps(spec.meta) for spec in specs],
        )
    taken = sorted(set(names) - {row["name"] for row in stored})
    if taken:
        logger.warning(
            "@q.schedule names taken by schedules added with q.add_schedule; not registered",
            extra={"schedules": taken},
        )
    return taken


async def fire_due(
    db: Any,
    queries: dict[str, str],
    names: Collection[str],
    now: dt.datetime | None = None,
    *,
    max_catch_up: int = MAX_CATCH_UP,
) -> list[int]:
    """Fire every due tick of the enabled schedules of the entrypoints ``names`` (those a
    worker serves); return the new jobs' ids.

    Due ticks are chosen by each schedule's ``catch_up`` policy
    (:func:`pgq_nb.schedule.cron.due_ticks`) against ``now`` (default: the database clock).
    One transaction, two statements, whatever the number of schedules: lock the due rows, then
    record the ticks, queue their jobs and move each schedule's next_run to its first tick after
    now. Safe to call from any number of workers at once: each tick is fired once.
    """
    wanted = _check_names(names)
    if now is not None and (not isinstance(now, dt.datetime) or now.utcoffset() is None):
        raise InvalidInputError(f"now must be a timezone-aware datetime or None, not {now!r}")
    if not wanted:
        return []
    async with acquired(db) as conn, conn.transaction():
        rows = await conn.fetch(queries["lock_due_schedules"], wanted, now)
        if not rows:
            return []
        tick_names: list[str] = []
        tick_times: list[dt.datetime] = []
        moved: list[str] = []
        next_runs: list[dt.datetime] = []
        for row in rows:
            try:
                cron = CronSpec(expression=row["expression"], tz=row["tz"])
                ticks = due_ticks(
                    cron,
                    row["last_run"],
                    row["next_run"],
                    row["now"],
                    row["catch_up"],
                    max_catch_up,
                )
            except InvalidInputError as exc:  # e.g. a time zone this machine does not know
                logger.warning(
                    "cannot compute the ticks of a schedule here; left to other workers",
                    extra={"schedule": row["name"], "error": str(exc)},
                )
                continue
            tick_names += [row["name"]] * len(ticks)
            tick_times += ticks
            moved.append(row["name"])
            next_runs.append(next_fire(cron, row["now"]))
        if not moved:
            return []
        fired = await conn.fetch(queries["fire_ticks"], tick_names, tick_times, moved, next_runs)
    for job in fired:
        logger.debug(
            "schedule fired",
            extra={
                "schedule": job["schedule_name"],
                "fire_time": job["fire_time"],
                "job_id": job["id"],
            },
        )
    return [job["id"] for job in fired]


async def run_now(db: Any, queries: dict[str, str], name: str) -> int:
    """Queue a run of schedule ``name`` now, outside its ticks; return the job id. The job's
    fire_time is now; the schedule's own ticks are not affected (see the module docstring)."""
    _check_name(name)
    async with acquired(db) as conn:
        job_id = await conn.fetchval(queries["run_schedule_now"], name)
        if job_id is None:
            raise await unknown_schedule(conn, queries, name)
    return int(job_id)


async def pause(db: Any, queries: dict[str, str], name: str) -> None:
    """Stop firing schedule ``name`` until :func:`resume`. Queued jobs of it stay queued."""
    _check_name(name)
    async with acquired(db) as conn:
        if await conn.fetchval(queries["pause_schedule"], name) is None:
            raise await unknown_schedule(conn, queries, name)


async def resume(db: Any, queries: dict[str, str], name: str) -> dt.datetime:
    """Fire schedule ``name`` again; return its next run. A paused schedule restarts from its
    first tick after now (ticks that fell in the pause are not replayed); resuming a schedule
    that is not paused changes nothing."""
    _check_name(name)
    async with acquired(db) as conn, conn.transaction():
        row = await conn.fetchrow(queries["lock_schedule"], name)
        if row is None:
            raise await unknown_schedule(conn, queries, name)
        if row["enabled"]:
            next_run: dt.datetime = row["next_run"]
            return next_run
        next_run = next_fire(CronSpec(expression=row["expression"], tz=row["tz"]), row["now"])
        await conn.execute(queries["resume_schedule"], name, next_run)
    return next_run


async def list_schedules(
    db: Any,
    queries: dict[str, str],
    registered_names: Collection[str],
    *,
    heartbeat_timeout_s: float = 30.0,
) -> list[dict[str, Any]]:
    """Every stored schedule, by name, as dicts: name, entrypoint, source (``code`` for
    ``@q.schedule``, ``data`` for ``q.add_schedule``), expression, tz, catch_up, enabled,
    next_run, last_run, last_job_id, last_status (of that job, live or finished; None if it
    never ran), created, last_registered, and who can run it:

    * ``registered_here``: its entrypoint is in ``registered_names`` (this process has the
      handler);
    * ``live_workers``: workers with a heartbeat within ``heartbeat_timeout_s`` that registered
      it;
    * ``handler_registered``: either of those. False means nothing will run its ticks: its
      handler is no longer registered anywhere (the schedule is kept, not silently dropped).
    """
    here = set(_check_names(registered_names))
    async with acquired(db) as conn:
        rows = await conn.fetch(queries["list_schedules"], float(heartbeat_timeout_s))
    listed = []
    for row in rows:
        entry = dict(row)
        entry["registered_here"] = entry["entrypoint"] in here
        entry["handler_registered"] = entry["registered_here"] or entry["live_workers"] > 0
        listed.append(entry)
    return listed


async def next_wakeup(
    db: Any, queries: dict[str, str], names: Collection[str]
) -> dt.datetime | None:
    """The earliest next_run among the enabled schedules of the entrypoints ``names`` (None if
    there is none):
    a worker need not call :func:`fire_due` before then, unless schedules change."""
    wanted = _check_names(names)
    if not wanted:
        return None
    async with acquired(db) as conn:
        wakeup: dt.datetime | None = await conn.fetchval(queries["next_schedule_run"], wanted)
    return wakeup


async def schedule_for_tick(
    db: Any, queries: dict[str, str], name: str, fire_time: dt.datetime
) -> Schedule:
    """The :class:`~pgq_nb.schedule.cron.Schedule` a tick's handler receives: for the job of
    schedule ``name`` firing at ``fire_time``, with the tick fired before it as
    ``last_fire_time``."""
    _check_name(name)
    async with acquired(db) as conn:
        row = await conn.fetchrow(queries["schedule_for_tick"], name, fire_time)
        if row is None:
            raise await unknown_schedule(conn, queries, name)
    return Schedule(
        name=row["name"],
        expression=row["expression"],
        tz=row["tz"],
        fire_time=fire_time,
        last_fire_time=row["last_fire_time"],
    )


async def prune_ticks(
    db: Any, queries: dict[str, str], older_than: dt.timedelta = dt.timedelta(days=7)
) -> int:
    """Forget fired ticks older than ``older_than``, keeping each schedule's newest; return how
    many were deleted. Ticks are only needed to refuse a second fire while a tick could still be
    due, so a day or more is plenty."""
    if not isinstance(older_than, dt.timedelta) or older_than < dt.timedelta(0):
        raise InvalidInputError(f"older_than must be a timedelta >= 0, not {older_than!r}")
    async with acquired(db) as conn:
        deleted: int = await conn.fetchval(
            queries["prune_schedule_ticks"], older_than.total_seconds()
        )
    return deleted
