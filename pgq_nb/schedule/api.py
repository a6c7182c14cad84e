"""Cron schedules on the queue: ``@q.schedule(name, expression)`` and their management.

A schedule's ticks are jobs of an entrypoint with the schedule's name, so they get retries,
history, results and the views like any other job. Every worker that has the handler fires
due ticks; a unique (schedule, fire time) record makes a second fire impossible.
"""

from __future__ import annotations

import datetime as dt
import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pgq_nb import runtime
from pgq_nb.errors import InvalidInputError
from pgq_nb.models import Job
from pgq_nb.retry import RetryPolicy
from pgq_nb.schedule import database
from pgq_nb.schedule.cron import Schedule
from pgq_nb.schedule.database import ScheduleSpec

if TYPE_CHECKING:
    import pandas as pd

S = TypeVar("S", bound=Callable[[Schedule], Any])


class ScheduleMethods:
    """Schedules (a mixin of AsyncQueue)."""

    pool: Any
    queries: dict[str, str]
    schedule_specs: dict[str, ScheduleSpec]
    handlers: dict[str, Any]
    settings: Any
    entrypoint: Callable[..., Callable[[Any], Any]]  # AsyncQueue.entrypoint
    _unsynced_schedules: set[str]

    async def _sync_schedules(self) -> None:
        """Store schedules declared here since the last sync (so a notebook can list, pause
        or run them before any worker started)."""
        if self._unsynced_schedules:
            names = sorted(self._unsynced_schedules)
            taken = await database.register(
                self.pool, self.queries, [self.schedule_specs[n] for n in names]
            )
            self._unsynced_schedules.difference_update(names)
            if taken:
                raise InvalidInputError(
                    f"@q.schedule({taken[0]!r}, ...): a schedule of that name was added with "
                    f"q.add_schedule, so this one is not stored and will not fire; rename it, "
                    f"or drop the other with q.remove_schedule({taken[0]!r})"
                )

    def schedule(
        self,
        name: str,
        expression: str,
        *,
        tz: str = "UTC",
        catch_up: str = "latest",
        retry: RetryPolicy | None = None,
        timeout: float | dt.timedelta | None = None,
        tags: Sequence[str] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Callable[[S], S]:
        """Run the decorated handler on a cron schedule: ``"0 * * * *"`` (hourly), or six
        fields with seconds first. It receives a :class:`Schedule` (name, expression, tz,
        fire_time, last_fire_time). ``catch_up`` says what to fire for ticks missed while no
        worker ran: ``"latest"`` (the newest only), ``"all"`` (each, up to 100) or ``"skip"``.
        An invalid expression or time zone is refused here, naming the bad field. ``tags``
        and ``meta`` label every tick's job (:mod:`pgq_nb.labels`).
        """
        spec = ScheduleSpec(
            name=name, expression=expression, tz=tz, catch_up=catch_up, tags=tags, meta=meta
        )
        if name in self.handlers and name not in self.schedule_specs:
            raise InvalidInputError(
                f"{name!r} is already an entrypoint; a schedule's ticks are jobs of an "
                "entrypoint with the schedule's name, so give the schedule another name"
            )

        def register(handler: S) -> S:
            if not callable(handler):
                raise InvalidInputError(f"@schedule({name!r}) must decorate a function")
            queries, pool = self.queries, self.pool
            # the options are checked first; the schedule is recorded before its handler, whose
            # registration is what a worker serving the whole registry notices
            add_handler = self.entrypoint(name, retry=retry, timeout=timeout)
            run: Callable[[Job], Any]

            if inspect.iscoroutinefunction(handler):

                async def run_tick(job: Job) -> Any:
                    tick = await database.schedule_for_tick(pool, queries, name, _fire(job))
                    return await handler(tick)

                run = run_tick
            else:

                def run_tick_sync(job: Job) -> Any:
                    tick = runtime.run_sync(
                        database.schedule_for_tick(pool, queries, name, _fire(job))
                    )
                    return handler(tick)

                run = run_tick_sync
            self.schedule_specs[name] = spec
            self._unsynced_schedules.add(name)
            add_handler(run)
            return handler

        return register

    @runtime.bridged
    async def schedule_list(self) -> list[dict[str, Any]]:
        """Every stored schedule as dicts (see :func:`pgq_nb.schedule.database.list_schedules`)."""
        await self._sync_schedules()
        return await database.list_schedules(
            self.pool,
            self.queries,
            set(self.handlers),
            heartbeat_timeout_s=self.settings.heartbeat_timeout,
        )

    @runtime.bridged
    async def schedules(self) -> pd.DataFrame:
        """Schedules as a DataFrame: name, entrypoint, source (``code``: ``@q.schedule``;
        ``data``: ``q.add_schedule``), expression, tz, next_run, last_run, last_status, enabled,
        and whether any live worker (or this process) has its entrypoint's handler."""
        from pgq_nb.notebook import overview

        frame: pd.DataFrame = overview.schedules_frame(await self.schedule_list())
        return frame

    @runtime.bridged
    async def pause_schedule(self, name: str) -> None:
        """Stop firing ``name`` until resumed (queued ticks stay queued)."""
        await self._sync_schedules()
        await database.pause(self.pool, self.queries, name)

    @runtime.bridged
    async def resume_schedule(self, name: str) -> dt.datetime:
        """Fire ``name`` again, from its next tick after now; returns that tick."""
        await self._sync_schedules()
        return await database.resume(self.pool, self.queries, name)

    @runtime.bridged
    async def run_schedule_now(self, name: str) -> int:
        """Queue a run of ``name`` now (the next cron tick still fires); returns its job id."""
        await self._sync_schedules()
        return await database.run_now(self.pool, self.queries, name)


def _fire(job: Job) -> dt.datetime:
    if job.fire_time is None:
        raise InvalidInputError(
            f"job {job.id} of schedule {job.entrypoint!r} has no fire time; schedule jobs are "
            "made by the scheduler (or q.run_schedule_now), not by q.enqueue"
        )
    return job.fire_time
