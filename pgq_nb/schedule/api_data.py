"""Schedules as data on the queue: ``q.add_schedule``, ``q.update_schedule``,
``q.remove_schedule``, ``q.backfill`` and ``q.schedule_preview`` (a mixin of AsyncQueue; the
database side is :mod:`pgq_nb.schedule.data`).

A schedule is an entrypoint and a payload on a cron expression: each tick is a job of that
entrypoint whose ``job.data`` is the payload, with ``job.schedule_name`` and ``job.fire_time``
set. So one handler can be scheduled many times with different arguments (a report per
region), from a notebook cell or a shell, without deploying anything: every worker that has
the entrypoint fires the schedule's ticks, exactly once each, from its next look at the
schedules (at most a second later).
"""

from __future__ import annotations

import datetime as dt
import os
import warnings
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from pgq_nb import runtime
from pgq_nb.encoding import encode_payload
from pgq_nb.enqueue import check_payload_size, refuse_reserved
from pgq_nb.errors import InvalidInputError
from pgq_nb.models import check_text, refuse_frame
from pgq_nb.nbjobs.content import ENTRYPOINT as NOTEBOOK_ENTRYPOINT
from pgq_nb.nbjobs.scheduling import (
    BOTH,
    add_notebook_schedule,
    notebook_payload_refused,
    update_notebook_schedule,
)
from pgq_nb.schedule import data
from pgq_nb.schedule.database import ScheduleSpec

if TYPE_CHECKING:
    import pandas as pd

    from pgq_nb.registry import Registry
    from pgq_nb.store import Store

#: update_schedule's default for ``payload``: keep the stored one (None is a payload).
KEEP: Any = object()


def _payload(name: str, payload: object) -> bytes | None:
    refuse_frame(payload, f"one schedule per row (q.add_schedule({name!r}, ...) in a loop)")
    return check_payload_size(f"the payload of schedule {name!r}", encode_payload(payload))


def _entrypoint(entrypoint: object) -> str:
    if entrypoint is None:
        raise InvalidInputError(
            "a schedule needs the entrypoint its ticks run: q.add_schedule(name, cron, "
            "entrypoint='report', payload={...})"
        )
    if not isinstance(entrypoint, str) or not entrypoint.strip():
        raise InvalidInputError(f"entrypoint must be an entrypoint's name, not {entrypoint!r}")
    check_text("entrypoint name", entrypoint)
    refuse_reserved(entrypoint)
    return entrypoint


class ScheduleWithoutWorker(UserWarning):
    """A schedule added for an entrypoint that no handler here and no live worker runs: its
    ticks will wait queued until one does."""


class DataScheduleMethods:
    """Schedules as data (a mixin of AsyncQueue)."""

    pool: Any
    queries: dict[str, str]
    registry: Registry
    store: Store
    schedule_specs: dict[str, ScheduleSpec]
    _sync_schedules: Callable[[], Awaitable[None]]  # ScheduleMethods

    async def _check_registered(self, entrypoint: str) -> None:
        """UnknownEntrypointError unless a handler of ``entrypoint`` is registered here or by
        some worker (the rule of enqueue)."""
        async with self.pool.acquire() as conn:
            await self.registry.prepare({entrypoint}, conn)

    @runtime.bridged
    async def add_schedule(
        self,
        name: str,
        cron: str,
        *,
        entrypoint: str | None = None,
        payload: Any = None,
        tz: str = "UTC",
        catch_up: str = "latest",
        notebook: str | os.PathLike[str] | None = None,
        parameters: dict[str, Any] | None = None,
        tags: Sequence[str] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> dt.datetime:
        """Schedule a registered entrypoint: each tick of ``cron`` (read in the IANA zone
        ``tz``) queues a job of ``entrypoint`` with ``payload`` (its ``job.data``; the job
        also has ``schedule_name`` and ``fire_time``). Stored in Postgres: any worker that has
        the entrypoint fires it, exactly once per tick, within a second, without a restart.
        Many schedules may run one entrypoint. ``catch_up`` as for ``@q.schedule``. Returns
        the first tick. A bad name, expression, zone, payload, an unknown entrypoint or a
        name already taken is refused with nothing written.

        ``notebook=`` (with ``parameters=``, instead of an entrypoint and payload): each tick
        runs that notebook as ``q.enqueue_notebook`` does, the version stored now, with the
        tick's time as the parameter ``fire_time`` (see :mod:`pgq_nb.nbjobs`).

        ``tags`` and ``meta`` label every tick's job (:mod:`pgq_nb.labels`)."""
        if name in self.schedule_specs:
            raise InvalidInputError(
                f"a schedule named {name!r} is declared here with @q.schedule; give this one "
                "another name"
            )
        check_text("schedule name", name)
        spec = ScheduleSpec(
            name=name, expression=cron, tz=tz, catch_up=catch_up, tags=tags, meta=meta
        )
        if notebook is not None or parameters is not None:
            first = await add_notebook_schedule(
                self.pool,
                self.queries,
                self.registry,
                spec,
                notebook,
                parameters,
                entrypoint,
                payload,
            )
            await self._warn_unserved(name, NOTEBOOK_ENTRYPOINT)
            return first
        schedule = data.DataSchedule(
            spec=spec, entrypoint=_entrypoint(entrypoint), payload=_payload(name, payload)
        )
        await self._check_registered(schedule.entrypoint)
        first = await data.add(self.pool, self.queries, schedule)
        await self._warn_unserved(name, schedule.entrypoint)
        return first

    async def _warn_unserved(self, name: str, entrypoint: str) -> None:
        """Say so (one line) when no handler here and no live worker runs ``entrypoint``."""
        if entrypoint in self.registry.handlers:
            return
        live = await self.pool.fetchval(
            self.queries["live_workers_serving"],
            entrypoint,
            self.store.settings.heartbeat_timeout,
        )
        if live:
            return
        how = (
            "q.serve_notebooks() here, or `pgq-nb worker app:q --notebooks`"
            if entrypoint == NOTEBOOK_ENTRYPOINT
            else "a handler here (q.start_worker()), or `pgq-nb worker app:q`"
        )
        warning = ScheduleWithoutWorker(
            f"schedule {name!r} added, but no live worker runs {entrypoint!r} and this "
            f"process has no handler of it: its ticks will wait queued until one runs ({how})"
        )
        warnings.warn_explicit(warning, type(warning), "pgq_nb", 0, module="pgq_nb", registry={})

    @runtime.bridged
    async def update_schedule(
        self,
        name: str,
        *,
        cron: str | None = None,
        entrypoint: str | None = None,
        payload: Any = KEEP,
        tz: str | None = None,
        catch_up: str | None = None,
        parameters: dict[str, Any] | None = None,
        notebook: str | os.PathLike[str] | None = None,
        tags: Any = KEEP,
        meta: Any = KEEP,
    ) -> dt.datetime:
        """Change a schedule added with :meth:`add_schedule`: what is given is replaced, the
        rest kept (``payload=None`` stores no payload, ``tags=None`` no tags). A new
        expression or zone fires from its first tick after now; paused stays paused. Workers
        follow within a second. Returns the next run.

        A schedule that runs a notebook takes ``parameters=`` (replacing its parameters) and
        ``notebook=`` (another notebook, or the same one edited: its content is stored now),
        never ``payload=`` or ``entrypoint=``."""
        if (
            not any(v is not None for v in (cron, entrypoint, tz, catch_up, parameters, notebook))
            and payload is KEEP
            and tags is KEEP
            and meta is KEEP
        ):
            raise InvalidInputError(
                f"nothing to change in schedule {name!r}: give cron=, tz=, catch_up=, "
                "entrypoint=, payload=, tags=, meta= (or parameters=, notebook= for a "
                "notebook's schedule)"
            )
        await self._sync_schedules()

        def spec_of(row: Any) -> ScheduleSpec:
            return ScheduleSpec(
                name=name,
                expression=row["expression"] if cron is None else cron,
                tz=row["tz"] if tz is None else tz,
                catch_up=row["catch_up"] if catch_up is None else catch_up,
                tags=row["tags"] if tags is KEEP else tags,
                meta=row["meta"] if meta is KEEP else meta,
            )

        if parameters is not None or notebook is not None:
            if entrypoint is not None or payload is not KEEP:
                raise InvalidInputError(BOTH)
            return await update_notebook_schedule(
                self.pool, self.queries, name, notebook, parameters, spec_of
            )
        new_entrypoint = None if entrypoint is None else _entrypoint(entrypoint)
        encoded = KEEP if payload is KEEP else _payload(name, payload)
        if new_entrypoint is not None:
            await self._check_registered(new_entrypoint)

        def change(row: Any) -> data.DataSchedule:
            if row["entrypoint"] == NOTEBOOK_ENTRYPOINT and (
                encoded is not KEEP or new_entrypoint is not None
            ):
                raise notebook_payload_refused(name)
            spec = spec_of(row)
            return data.DataSchedule(
                spec=spec,
                entrypoint=new_entrypoint or row["entrypoint"],
                payload=row["payload"] if encoded is KEEP else encoded,
            )

        return await data.update(self.pool, self.queries, name, change)

    @runtime.bridged
    async def remove_schedule(self, name: str) -> None:
        """Drop a schedule added with :meth:`add_schedule`: no tick of it fires after this
        returns (jobs already queued stay queued); its jobs' history stays."""
        await self._sync_schedules()
        await data.remove(self.pool, self.queries, name)

    @runtime.bridged
    async def backfill(
        self,
        name: str,
        start: dt.datetime,
        end: dt.datetime,
        *,
        force: bool = False,
        include_paused: bool = False,
        progress: bool | None = None,
    ) -> pd.DataFrame:
        """Queue every tick of schedule ``name`` in [start, end) (aware datetimes) that has
        not fired, oldest first, exactly once even if two processes backfill at once (ticks
        after now are left to the workers). Returns a DataFrame, one row per tick up to now:
        ``fire_time`` (in the schedule's zone), ``job_id`` and ``enqueued`` (False: it had
        fired already). Over 100,000 ticks needs ``force=True``; a paused schedule is refused
        unless ``include_paused=True`` (it stays paused). ``progress`` shows a bar (default:
        in a notebook, for 100 ticks or more)."""
        await self._sync_schedules()
        from pgq_nb.notebook import schedule_frames

        with schedule_frames.BackfillBar(progress, name) as bar:
            rows = await data.backfill(
                self.pool,
                self.queries,
                name,
                start,
                end,
                force=force,
                include_paused=include_paused,
                on_start=bar.start,
                on_batch=bar.update,
                on_fired=bar.fired,
            )
        tz = await self._schedule_tz(name)
        return schedule_frames.backfill_frame(rows, tz)

    async def _schedule_tz(self, name: str) -> str:
        row = await self.pool.fetchrow(self.queries["get_schedule"], name)
        return "UTC" if row is None else str(row["tz"])

    @runtime.bridged
    async def schedule_preview(
        self,
        name: str,
        start: dt.datetime | None = None,
        days: float = 7,
        *,
        limit: int = data.PREVIEW_LIMIT,
    ) -> pd.DataFrame:
        """The ticks schedule ``name`` fires from ``start`` (default now) for ``days`` days,
        at most ``limit``, daylight saving applied: a DataFrame with ``fire_time`` in the
        schedule's zone, ``fire_time_utc`` and ``utc_offset``. A paused schedule fires none of
        them until resumed (the ``enabled`` attribute of the frame says so)."""
        await self._sync_schedules()
        from pgq_nb.notebook import schedule_frames

        row, ticks = await data.preview(self.pool, self.queries, name, start, days, limit)
        return schedule_frames.preview_frame(row, ticks)
