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
import contextvars
import dataclasses
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from pgq_nb.encoding import encode_result, is_series
from pgq_nb.errors import HandlerExitError, JobTimeoutError, UnstorableResultError
from pgq_nb.models import TRACEBACK_LIMIT, Job, storable_text

logger = logging.getLogger("pgq_nb.worker")


class AlreadyRecorded:
    """What a transactional handler's attempt resolves to: its completion is committed."""


ALREADY_RECORDED = AlreadyRecorded()


def timeout_error(seconds: float, ran: float | None = None) -> JobTimeoutError:
    """The error of an attempt that ran past its entrypoint's timeout."""
    if ran is None:
        return JobTimeoutError(f"the handler ran longer than its timeout of {seconds:g} s")
    return JobTimeoutError(
        f"the handler ran longer than its timeout of {seconds:g} s (a def handler cannot be "
        f"interrupted: its thread returned after {ran:.1f} s, and only then was the attempt "
        "ended; use an async def handler to have it stopped at the timeout)"
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Encoded:
    """A handler's result, already encoded as JSON text (None for no result); ``series``: it
    was a pandas Series (stored as a dict), which a map_over's source cannot return."""

    json: str | None
    series: bool = False


def encode(value: Any) -> Encoded:
    """Encode a handler's result; anything that goes wrong is the job's own failure."""
    try:
        return Encoded(encode_result(value), is_series(value))
    except Exception as exc:
        try:
            why = f"{type(exc).__name__}: {exc}"
        except Exception:
            why = type(exc).__name__
        raise UnstorableResultError(
            storable_text(f"the result could not be stored: {why}", 2_000)
        ) from None


async def encode_off_loop(value: Any) -> Encoded:
    """Encode a result; anything but a small scalar is encoded in a thread, so a big
    DataFrame's JSON never holds up the loop (the heartbeat, other jobs' completions)."""
    if (
        value is None
        or isinstance(value, bool | int | float)
        or (isinstance(value, str) and len(value) < 10_000)
    ):
        return encode(value)
    return await asyncio.to_thread(encode, value)


def _exited(exc: BaseException) -> HandlerExitError:
    return HandlerExitError(
        f"the handler raised {type(exc).__name__} ({exc!r}); job code must not end the worker: "
        "raise an exception (or pgq_nb.GiveUp) to fail the job"
    )


async def run_async(call: Awaitable[Any], timeout: float | None) -> Any:
    """Await an ``async def`` handler's coroutine and encode its result; past ``timeout`` it is
    cancelled. SystemExit and KeyboardInterrupt from the handler fail the attempt."""
    try:
        if timeout is None:
            value = await call
        else:
            async with asyncio.timeout(timeout):
                value = await call
    except TimeoutError:
        if timeout is None:
            raise
        raise timeout_error(timeout) from None
    except (SystemExit, KeyboardInterrupt) as exc:
        raise _exited(exc) from None
    return value if value is ALREADY_RECORDED else await encode_off_loop(value)


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
        try:
            value = handler(job)
        except (SystemExit, KeyboardInterrupt) as exc:
            raise _exited(exc) from None
        return value if value is ALREADY_RECORDED else encode(value)  # in this thread

    # in a copy of this task's context, as asyncio.to_thread does: the attempt's span (pgq_nb
    # tracing) is current in the handler too, so the jobs it enqueues continue the trace
    thread = loop.run_in_executor(executor, contextvars.copy_context().run, call)
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


def describe_error(exc: BaseException) -> tuple[str, str]:
    """A failed attempt's error line and traceback, storable whatever the exception holds (NUL
    characters, a huge message, a ``__str__`` that raises)."""
    try:
        error = f"{type(exc).__name__}: {exc}"
    except Exception:
        error = f"{type(exc).__name__}: (its message could not be read)"
    try:
        trace = "".join(traceback.format_exception(exc))
    except Exception:
        trace = error
    return storable_text(error) or "", storable_text(trace, TRACEBACK_LIMIT) or ""


def failed_future(exc: BaseException) -> asyncio.Future[Any]:
    """A done future that failed with ``exc`` (RuntimeError in place of a CancelledError)."""
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    if isinstance(exc, asyncio.CancelledError):
        exc = RuntimeError(
            "the handler raised CancelledError though nobody cancelled the job (an awaited task "
            "was cancelled?); catch it in the handler, or raise an ordinary exception"
        )
    future.set_exception(exc)
    return future
