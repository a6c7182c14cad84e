"""The scheduler loop every worker runs for the schedules of the entrypoints it serves.

It fires due ticks (exactly once, whichever worker gets there first), then sleeps until the
earliest next run of its entrypoints' schedules, at most :data:`MAX_SLEEP` (a worker with no
schedules costs two small transactions a minute). A schedule added, changed, removed or
resumed anywhere sends ``NOTIFY <channel>, 'schedules:'`` (the statements in schedules.sql do,
in their own transaction), which the worker's listener passes on with :func:`poke`: the
scheduler wakes and re-reads the table at once, so the change holds from the next tick. A
NOTIFY is only a hint (anyone who may connect can send one): the table decides. While the
worker has no LISTEN connection (:func:`set_listening`), it looks every :data:`POLL` seconds
instead. An entrypoint the worker took on after it started is noticed within :data:`POLL`
seconds too (its names are asked for each time, without a query).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from pgq_nb import db
from pgq_nb.schedule import database

if TYPE_CHECKING:
    from pgq_nb.store import Store

logger = logging.getLogger("pgq_nb.schedule.runner")

#: Longest sleep between looks at the schedules table while NOTIFYs are heard.
MAX_SLEEP = 60.0
#: Longest sleep while they are not (no LISTEN connection), and between looks at the names.
POLL = 1.0
#: How often old tick records are pruned.
PRUNE_EVERY = dt.timedelta(hours=1)


class _Wakeups:
    """The schedulers running on one store, and whether a NOTIFY would reach them."""

    def __init__(self) -> None:
        self.events: set[asyncio.Event] = set()
        self.listening = False


_by_store: weakref.WeakKeyDictionary[Store, _Wakeups] = weakref.WeakKeyDictionary()


def _wakeups(store: Store) -> _Wakeups:
    found = _by_store.get(store)
    if found is None:
        found = _by_store[store] = _Wakeups()
    return found


def poke(store: Store) -> None:
    """Make the schedulers on ``store`` look at the schedules table now (a ``schedules:``
    NOTIFY was heard, or LISTEN began again after a gap in which one may have been missed)."""
    for event in _wakeups(store).events:
        event.set()


def set_listening(store: Store, listening: bool) -> None:
    """Say whether a worker on ``store`` hears NOTIFYs; when not, its scheduler polls."""
    _wakeups(store).listening = listening
    if listening:
        poke(store)


def sleep_for(wake: dt.datetime | None, now: dt.datetime, listening: bool) -> float:
    """Seconds to sleep before the next look: until ``wake`` (the earliest next run, None if
    there is none), at most :data:`MAX_SLEEP`, or :data:`POLL` while not ``listening``. A
    ``wake`` already past, just after firing what was due, is a schedule another worker is
    firing (its row was locked) or one this one cannot (a time zone it lacks): :data:`POLL`,
    not a busy loop."""
    longest = MAX_SLEEP if listening else POLL
    if wake is None:
        return longest
    left = (wake - now).total_seconds()
    return min(longest, left if left > 0 else POLL)


async def run_scheduler(store: Store, entrypoints: Callable[[], Sequence[str]]) -> None:
    """Fire due ticks of the schedules of the entrypoints ``entrypoints()`` (asked each time:
    a worker serving its whole registry takes on new ones) until cancelled."""
    wakeups = _wakeups(store)
    woken = asyncio.Event()
    wakeups.events.add(woken)
    loop = asyncio.get_running_loop()
    pruned = dt.datetime.now(dt.UTC)
    try:
        while True:
            woken.clear()
            names = sorted(set(entrypoints()))
            delay = POLL
            if names:
                try:
                    fired = await database.fire_due(store.pool, store.queries, names)
                    if fired:
                        logger.info("fired schedule ticks", extra={"job_ids": fired})
                    wake = await database.next_wakeup(store.pool, store.queries, names)
                    now = dt.datetime.now(dt.UTC)
                    delay = sleep_for(wake, now, wakeups.listening)
                    if now - pruned > PRUNE_EVERY:
                        await database.prune_ticks(store.pool, store.queries)
                        pruned = now
                except db.TRANSIENT_ERRORS as exc:
                    logger.warning(
                        "scheduler could not reach the database", extra={"error": str(exc)}
                    )
            # sleep until the next run, a poke, or new names (looked at every POLL seconds)
            until = loop.time() + delay
            while (left := until - loop.time()) > 0:
                try:
                    await asyncio.wait_for(woken.wait(), min(left, POLL))
                    break
                except TimeoutError:
                    pass
                if not wakeups.listening or sorted(set(entrypoints())) != names:
                    break
    finally:
        wakeups.events.discard(woken)
