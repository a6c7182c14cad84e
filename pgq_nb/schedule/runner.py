"""The scheduler loop every worker runs for the schedules of the entrypoints it serves.

It fires due ticks (exactly once, whichever worker gets there first), then sleeps until the
next tick is due, waking at least every second so that a resumed, changed, added or removed
schedule is seen (the schedules are read from the table at every look, so one added with
``q.add_schedule`` in another process fires without a restart), and so is an entrypoint the
worker took on after it started (its names are asked for each time).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from pgq_nb import db
from pgq_nb.schedule import database

if TYPE_CHECKING:
    from pgq_nb.store import Store

logger = logging.getLogger("pgq_nb.schedule.runner")

#: Longest sleep between looks at the schedules table.
MAX_SLEEP = 1.0
#: How often old tick records are pruned.
PRUNE_EVERY = dt.timedelta(hours=1)


async def run_scheduler(store: Store, entrypoints: Callable[[], Sequence[str]]) -> None:
    """Fire due ticks of the schedules of the entrypoints ``entrypoints()`` (asked each time:
    a worker serving its whole registry takes on new ones) until cancelled."""
    pruned = dt.datetime.now(dt.UTC)
    while True:
        delay = MAX_SLEEP
        names = list(entrypoints())
        if not names:
            await asyncio.sleep(delay)
            continue
        try:
            fired = await database.fire_due(store.pool, store.queries, names)
            if fired:
                logger.info("fired schedule ticks", extra={"job_ids": fired})
            wake = await database.next_wakeup(store.pool, store.queries, names)
            now = dt.datetime.now(dt.UTC)
            if wake is not None:
                delay = min(MAX_SLEEP, max((wake - now).total_seconds(), 0.001))
            if now - pruned > PRUNE_EVERY:
                await database.prune_ticks(store.pool, store.queries)
                pruned = now
        except db.TRANSIENT_ERRORS as exc:
            logger.warning("scheduler could not reach the database", extra={"error": str(exc)})
        await asyncio.sleep(delay)
