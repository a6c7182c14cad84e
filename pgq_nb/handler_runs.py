"""How one attempt runs a handler: on the loop (``async def``) or in a thread (``def``).

An ``async def`` handler can be interrupted: a timeout or a cancel request stops it. A ``def``
handler runs in a thread, and a thread cannot be stopped from outside. So the attempt of a
``def`` handler ends when its thread returns, whatever happened meanwhile: a timeout or a
cancel is noted when it happens and applied then. Until the thread returns the job stays
picked by its worker (its slot held, its heartbeat sent), so it cannot be retried or claimed
by another worker while the abandoned run still goes on: a job never runs twice at once.

Timeouts count from the moment the handler starts, not from when the job was claimed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pgq_nb.models import Job
from pgq_nb.retry import JobTimeoutError

logger = logging.getLogger("pgq_nb.worker")


def timeout_error(seconds: float, ran: float | None = None) -> JobTimeoutError:
    """The error of an attempt that ran past its entrypoint's timeout."""
    if ran is None:
        return JobTimeoutError(f"the handler ran longer than its timeout of {seconds:g} s")
    return JobTimeoutError(
        f"the handler ran longer than its timeout of {seconds:g} s (a def handler cannot be "
        f"interrupted: its thread returned after {ran:.1f} s, and only then was the attempt "
        "ended; use an async def handler to have it stopped at the timeout)"
    )


async def run_async(call: Awaitable[Any], timeout: float | None) -> Any:
    """Await an ``async def`` handler's coroutine; past ``timeout`` it is cancelled."""
    if timeout is None:
        return await call
    try:
        async with asyncio.timeout(timeout):
            return await call
    except TimeoutError:
        raise timeout_error(timeout) from None


async def run_in_thread(
    executor: Any,
    handler: Callable[[Job], Any],
    job: Job,
    *,
    timeout: float | None,
    cancel_requested: Callable[[], bool],
) -> Any:
    """Run a ``def`` handler in ``executor``; the attempt ends when the thread returns.

    Cancelling this coroutine does not abandon the thread: if ``cancel_requested()`` (someone
    cancelled the job) it raises CancelledError once the thread has returned; otherwise (the
    worker is shutting down) the thread's own outcome is returned, since the run did happen.
    Past ``timeout`` (counted from the thread's start) the attempt fails with
    :class:`JobTimeoutError`, also once the thread has returned.
    """
    loop = asyncio.get_running_loop()
    started = loop.create_future()

    def call() -> Any:
        loop.call_soon_threadsafe(_set_once, started, time.monotonic())
        return handler(job)

    thread = loop.run_in_executor(executor, call)
    timed_out = False
    interrupted = False
    try:
        began: float = await asyncio.shield(started)
        if timeout is not None:
            remaining = max(timeout - (time.monotonic() - began), 0.0)
            done, _ = await asyncio.wait([thread], timeout=remaining)
            timed_out = not done
            if timed_out:
                logger.warning(
                    "a def handler ran past its timeout; its job ends when the thread returns",
                    extra={"job_id": job.id, "entrypoint": job.entrypoint, "timeout_s": timeout},
                )
    except asyncio.CancelledError:
        interrupted = True
    interrupted = await _outlive(thread) or interrupted
    if interrupted and cancel_requested():
        raise asyncio.CancelledError
    if timed_out and timeout is not None:
        raise timeout_error(timeout, time.monotonic() - started.result())
    return thread.result()


async def _outlive(thread: asyncio.Future[Any]) -> bool:
    """Wait for ``thread`` to end, however often this task is cancelled meanwhile; True if it
    was cancelled while waiting."""
    cancelled = False
    while not thread.done():
        try:
            await asyncio.wait([thread])
        except asyncio.CancelledError:
            cancelled = True
    return cancelled


def _set_once(future: asyncio.Future[float], value: float) -> None:
    if not future.done():
        future.set_result(value)
