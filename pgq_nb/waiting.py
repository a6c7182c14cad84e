"""The one wait loop: ``q.wait(ids)`` and ``run.wait()`` poll the database until what they
wait for is over, backing off from 10 ms to 0.5 s, with a progress bar of finished work and a
deadline. An interrupt stops the waiting and leaves the jobs as they are."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def wait_until(
    poll: Callable[[], Awaitable[tuple[T | None, int]]],
    *,
    total: int,
    timeout: float | None,
    progress: bool | None,
    description: str,
    unit: str,
    timed_out: Callable[[], str],
    min_total: int = 1,
    grown: Callable[[], int] | None = None,
) -> T:
    """Call ``poll`` until it returns a result (not None) and return it. ``poll`` returns
    (result or None, how many of ``total`` are finished); the count advances the bar
    (:func:`pgq_nb.notebook.progress.bar`: ``progress`` if given, else in a notebook), whose
    total follows ``grown()`` after each poll when given (a run whose map_overs add steps).
    Past ``timeout`` seconds, raises TimeoutError with ``timed_out()`` as its message."""
    bar: Any = None
    if progress is not False:  # the notebook layer only when a bar may be shown
        from pgq_nb.notebook import progress as bars

        bar = bars.bar(progress, total, description, unit=unit, min_total=min_total)
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    delay = 0.01
    shown = 0
    try:
        while True:
            result, finished = await poll()
            if grown is not None and getattr(bar, "total", None) not in (None, grown()):
                bar.total = grown()
                bar.refresh()
            if bar is not None and finished > shown:
                bar.update(finished - shown)
                shown = finished
            if result is not None:
                return result
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError(timed_out())
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
    finally:
        if bar is not None:
            bar.close()
