"""Hooks: callbacks that run in the worker when a job's attempt starts or ends.

``@q.on(event)`` registers a ``def`` or ``async def`` callback taking ``(job, outcome)``:

- ``"started"``: an attempt is about to run (fired when the worker starts the handler);
- ``"succeeded"``: the attempt succeeded (the job is in history as succeeded);
- ``"failed"``: the attempt failed, whatever comes next (so every failed attempt fires it once);
- ``"retried"``: the failed attempt goes back to the queue to be tried again;
- ``"dead"``: the failed attempt was the last: the job failed for good;
- ``"snoozed"``: the handler raised ``pgq_nb.Snooze``: the job went back to the queue, due
  later, without using up the attempt (no failure; see :mod:`pgq_nb.snooze`).

So each attempt fires ``started`` and then exactly one of ``succeeded``, ``failed`` +
``retried``, ``failed`` + ``dead``, or ``snoozed``. A cancelled attempt (``q.cancel``) or one
interrupted by a stop fires nothing after ``started``. Every event but ``started`` fires after
the outcome is recorded in Postgres, so a hook that reads the job sees what it says.

A hook never changes a job's outcome and never stops the worker: ``def`` hooks run in a small
pool of :data:`HOOK_THREADS` daemon threads of their own (a hook that blocks holds one of
them, not the worker's loop nor a handler's thread, and never keeps a stopped worker's process
alive), ``async def`` hooks run on the worker's loop as tasks, cancelled
after :data:`ASYNC_TIMEOUT` seconds. A hook that raises (or times out) is logged on the
``pgq_nb.hooks`` logger, at most once per hook per :data:`LOG_EVERY` seconds with the count of
the failures not logged meanwhile.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime as dt
import functools
import inspect
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pgq_nb.errors import InvalidInputError, did_you_mean
from pgq_nb.models import Job

logger = logging.getLogger("pgq_nb.hooks")

#: The events ``q.on`` accepts, in the order an attempt can fire them.
EVENTS: tuple[str, ...] = ("started", "succeeded", "failed", "retried", "dead", "snoozed")
#: Seconds an ``async def`` hook may run before it is cancelled (and logged).
ASYNC_TIMEOUT = 10.0
#: A failing hook is logged at most once per this many seconds.
LOG_EVERY = 60.0
#: Threads of a worker's pool for ``def`` hooks.
HOOK_THREADS = 4

Hook = Callable[[Job, "Outcome"], Any]
F = TypeVar("F", bound=Hook)

_NO_RESULT: Any = object()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outcome:
    """What an attempt came to, as a hook sees it.

    ``status``: ``"running"`` (for ``started``), ``"succeeded"``, ``"retrying"`` (a failed
    attempt that will be retried), ``"failed"`` (failed for good) or ``"snoozed"``. ``error``
    is the failed attempt's error line (None otherwise), ``attempt`` the attempt's number (1
    for the first), ``duration`` its seconds (None for ``started``); ``result`` the handler's
    result, decoded from its JSON (None but for ``succeeded``).
    """

    status: str
    attempt: int
    error: str | None = None
    duration: float | None = None
    result_json: str | None = dataclasses.field(default=None, repr=False)

    @property
    def result(self) -> Any:
        """The handler's result as stored (decoded from JSON), None if it returned none."""
        return None if self.result_json is None else json.loads(self.result_json)


def check_event(event: object) -> str:
    """``event`` if it is one of :data:`EVENTS`; else InvalidInputError saying which are."""
    if isinstance(event, str) and event in EVENTS:
        return event
    shown = repr(event) if isinstance(event, str) else type(event).__name__
    hint = did_you_mean(event, EVENTS) if isinstance(event, str) else ""
    raise InvalidInputError(
        f"q.on({shown}): the event must be one of {', '.join(map(repr, EVENTS))}{hint}"
    )


class Hooks:
    """The hooks registered on one queue (``registry.hooks``), by event."""

    def __init__(self) -> None:
        self.by_event: dict[str, list[Hook]] = {event: [] for event in EVENTS}

    def on(self, event: str) -> Callable[[F], F]:
        """Validate ``event`` now; the returned decorator registers the hook."""
        name = check_event(event)

        def register(hook: F) -> F:
            if not callable(hook):
                raise InvalidInputError(f"@q.on({name!r}) must decorate a function")
            self.by_event[name].append(hook)
            return hook

        return register

    def __bool__(self) -> bool:
        return any(self.by_event.values())


def _is_async(hook: Hook) -> bool:
    return inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(
        getattr(hook, "__call__", None)  # noqa: B004 - async callable objects
    )


def _name(hook: Hook) -> str:
    return str(getattr(hook, "__qualname__", None) or type(hook).__name__)


class Dispatch:
    """Runs one worker's hooks: on its loop, never waiting for them.

    ``pending`` holds the outcomes of attempts that ended and wait to be recorded; the worker
    calls :meth:`recorded` with the ids of a batch once it is committed."""

    def __init__(self, hooks: Hooks) -> None:
        self.hooks = hooks
        self.pending: dict[int, tuple[Job, Outcome, tuple[str, ...]]] = {}
        self._pool: DaemonPool | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self._logged: dict[int, tuple[float, int]] = {}  # id(hook): (last logged, suppressed)

    def started(self, job: Job) -> None:
        """An attempt of ``job`` starts."""
        if self.hooks.by_event["started"]:
            self.fire(("started",), job, Outcome(status="running", attempt=job.attempts))

    def ended(
        self,
        job: Job,
        status: str,
        started: dt.datetime,
        finished: dt.datetime,
        *,
        error: str | None = None,
        result: str | None = None,
        recorded: bool = False,
    ) -> None:
        """An attempt of ``job`` ended (``status`` as :attr:`Outcome.status`); its hooks fire
        once it is recorded (at once if it is already: ``recorded``)."""
        events = _events(status)
        if not any(self.hooks.by_event[e] for e in events):
            return  # the common case: no hook, no cost
        outcome = Outcome(
            status=status,
            attempt=job.attempts,
            error=error,
            duration=(finished - started).total_seconds(),
            result_json=result,
        )
        if recorded:
            self.fire(events, job, outcome)
        else:
            self.pending[job.id] = (job, outcome, events)

    def recorded(self, ids: Iterable[int]) -> None:
        """The attempts of ``ids`` are recorded: fire their hooks."""
        if not self.pending:
            return
        for job_id in ids:
            entry = self.pending.pop(job_id, None)
            if entry is not None:
                self.fire(entry[2], entry[0], entry[1])

    def fire(self, events: tuple[str, ...], job: Job, outcome: Outcome) -> None:
        loop = asyncio.get_running_loop()
        for event in events:
            for hook in self.hooks.by_event[event]:
                future: asyncio.Future[Any]
                if _is_async(hook):
                    future = asyncio.ensure_future(_with_timeout(hook, job, outcome))
                else:
                    if self._pool is None:
                        self._pool = DaemonPool(HOOK_THREADS)
                    future = asyncio.wrap_future(self._pool.submit(hook, job, outcome), loop=loop)
                self._tasks.add(future)
                future.add_done_callback(functools.partial(self._done, hook, event, job.id))

    def _done(self, hook: Hook, event: str, job_id: int, future: asyncio.Future[Any]) -> None:
        self._tasks.discard(future)
        if future.cancelled():
            exc: BaseException | None = asyncio.CancelledError("cancelled at the worker's stop")
        else:
            exc = future.exception()
        if exc is None:
            return
        now = time.monotonic()
        last, suppressed = self._logged.get(id(hook), (float("-inf"), 0))
        if now - last < LOG_EVERY:
            self._logged[id(hook)] = (last, suppressed + 1)
            return
        self._logged[id(hook)] = (now, 0)
        logger.warning(
            f"the {event!r} hook {_name(hook)} raised {type(exc).__name__}: {exc} (the job's "
            f"outcome stands; this hook's failures are logged at most every {LOG_EVERY:g} s"
            + (f", {suppressed} more since the last" if suppressed else "")
            + ")",
            exc_info=exc,
            extra={"job_id": job_id, "hook": _name(hook), "event": event},
        )

    async def close(self, wait: float = 5.0) -> None:
        """At the worker's stop: give running hooks ``wait`` seconds, then cancel the async ones
        (a ``def`` hook's thread cannot be stopped: it is left to end on its own)."""
        self.pending.clear()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=wait)
            for task in list(self._tasks):
                task.cancel()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


class DaemonPool:
    """At most ``size`` daemon threads running the calls :meth:`submit` queues, in order.

    Not a ThreadPoolExecutor: the interpreter joins those threads at its exit, so one hung
    ``def`` hook would keep a stopped worker's process alive for ever; daemon threads die
    with the process."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._calls: queue.SimpleQueue[
            tuple[concurrent.futures.Future[Any], Hook, tuple[Any, ...]] | None
        ] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Hook, *args: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the hook pool is shut down")
            self._calls.put((future, fn, args))
            # as ThreadPoolExecutor: a new thread only when none is idle, up to size
            if not self._idle.acquire(blocking=False) and len(self._threads) < self.size:
                thread = threading.Thread(
                    target=self._run, name=f"pgq_nb-hook_{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        return future

    def _run(self) -> None:
        while (call := self._calls.get()) is not None:
            future, fn, args = call
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:
                    future.set_exception(exc)
            self._idle.release()

    def shutdown(self) -> None:
        """Cancel the calls not started; each thread ends after its call (a hung one never
        does, but does not hold the process)."""
        with self._lock:
            self._closed = True
            while True:
                try:
                    call = self._calls.get_nowait()
                except queue.Empty:
                    break
                if call is not None:
                    call[0].cancel()
            for _ in self._threads:
                self._calls.put(None)


def _events(status: str) -> tuple[str, ...]:
    if status == "succeeded":
        return ("succeeded",)
    if status == "retrying":
        return ("failed", "retried")
    if status == "snoozed":
        return ("snoozed",)
    return ("failed", "dead")


async def _with_timeout(hook: Hook, job: Job, outcome: Outcome) -> None:
    try:
        async with asyncio.timeout(ASYNC_TIMEOUT):
            await hook(job, outcome)
    except TimeoutError:
        raise TimeoutError(f"it ran longer than {ASYNC_TIMEOUT:g} s and was cancelled") from None
