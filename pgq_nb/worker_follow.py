"""A worker follows its queue's registry: handlers registered after it started.

In a notebook, handlers are defined cell by cell: ``w = q.start_worker()`` runs, then a later
cell adds ``@q.entrypoint("b")``, a workflow's next step or a ``@q.schedule``. A worker started
without ``entrypoints=`` serves the registry as it grows: before its next claim (at the latest
one poll interval later) it takes on each handler registered since, through the same path as
at its start (retry limits, global flow limits, schedules, and the worker's own row in the
database), so limits, pauses and schedules hold for it too. A worker started with
``entrypoints=`` keeps that set. Either kind runs the new body of a handler that is defined
again (a re-run cell), from the next job it starts.

A base class of :class:`pgq_nb.worker.Worker`. The registry is written by the notebook's
thread and read here on the pgq_nb loop: its ``generation`` is read first, then copies of its
dicts are taken (a copy is one step under the GIL), so a registration that lands in between
is seen at the next look.
"""

from __future__ import annotations

import concurrent.futures
import logging
from typing import TYPE_CHECKING, Any

from pgq_nb import db
from pgq_nb.executors import JobExecutor, open_pool
from pgq_nb.schedule import database

if TYPE_CHECKING:
    from pgq_nb.registry import EntrypointSpec, Registry
    from pgq_nb.schedule.database import ScheduleSpec
    from pgq_nb.store import Store

logger = logging.getLogger("pgq_nb.worker")


class Following:
    """Taking on handlers registered, or defined again, after the worker started."""

    store: Store
    registry: Registry
    specs: dict[str, EntrypointSpec]
    concurrency: int
    worker_id: int | None
    _q: dict[str, str]
    _schedules: list[ScheduleSpec]
    _executor: Any
    _pool: JobExecutor | None
    dask: Any
    processes: int | None
    _follows: bool  # started without entrypoints=: serves every registered handler
    _generation: int  # the registry's generation this worker has taken on

    def _registry_changed(self) -> bool:
        """Has a handler been registered (or defined again) since the worker last looked?"""
        return self.registry.generation != self._generation

    async def _follow_registry(self) -> bool:
        """Take on what was registered since the last look: record new handlers (and their
        schedules) in the database first, as a starting worker does, then serve them. False
        when the database could not be reached (the claim loop tries again later)."""
        try:
            await self._take_on()
        except db.TRANSIENT_ERRORS as exc:
            logger.warning("could not take on new handlers; retrying", extra={"error": str(exc)})
            return False
        return True

    async def _take_on(self) -> None:
        generation = self.registry.generation
        handlers = self.registry.handlers.copy()
        declared = self.registry.schedule_specs.copy()
        served = handlers if self._follows else {n: handlers[n] for n in self.specs}
        changed = {n: s for n, s in served.items() if self.specs.get(n) is not s}
        known = {s.name: s for s in self._schedules}
        schedules = [s for n, s in declared.items() if n in served and known.get(n) != s]
        if changed:
            names = [*self.specs, *(n for n in changed if n not in self.specs)]
            async with self.store.pool.acquire() as conn:
                await self.registry.register(conn, sorted(changed))
                if schedules:
                    await database.register(conn, self._q, schedules)
                await conn.execute(self._q["set_worker_entrypoints"], self.worker_id, names)
            added = sorted(n for n in changed if n not in self.specs)
            self.specs.update(changed)
            for spec in schedules:
                known[spec.name] = spec
            self._schedules = list(known.values())
            if self._executor is None and any(not s.is_async for s in changed.values()):
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self.concurrency, thread_name_prefix="pgq_nb-job"
                )
            if self._pool is None:  # (a handler that cannot be pickled fails its jobs, saying so)
                self._pool = open_pool(
                    changed.values(), self.processes, self.concurrency, False, self.dask
                )
            logger.info(
                "worker took on handlers registered after it started",
                extra={
                    "worker_id": self.worker_id,
                    "added": added,
                    "redefined": sorted(n for n in changed if n not in added),
                },
            )
        self._generation = generation
