"""One background event-loop thread per process, serving every sync call.

Jupyter's kernel already runs an event loop, so ``asyncio.run`` fails in a cell, and asyncpg
pools are bound to the loop that created them. pgq_nb therefore runs its own loop in a daemon
thread: it owns every asyncpg pool, runs notebook workers, and sync methods submit coroutines
to it and wait. ``await q.aio.method()`` from another loop (the kernel's) is bridged to this
loop as well. No ``nest_asyncio``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

from pgq_nb.errors import BlockingCallError

T = TypeVar("T")
P = ParamSpec("P")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_shutdown_hooks: list[Callable[[], Awaitable[None]]] = []


def loop() -> asyncio.AbstractEventLoop:
    """The pgq_nb event loop, started on first use."""
    global _loop, _thread
    with _lock:
        if _loop is None or _thread is None or not _thread.is_alive():
            new_loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(new_loop)
                new_loop.call_soon(ready.set)
                new_loop.run_forever()

            _thread = threading.Thread(target=run, name="pgq_nb-loop", daemon=True)
            _thread.start()
            ready.wait()
            _loop = new_loop
        return _loop


def in_loop_thread() -> bool:
    """True when called from the pgq_nb loop thread itself."""
    return _thread is not None and threading.current_thread() is _thread


def run_sync(coro: Coroutine[Any, Any, T], what: str = "this call") -> T:
    """Run ``coro`` on the pgq_nb loop and wait for its result.

    A KeyboardInterrupt (the notebook's Stop button) cancels the coroutine, which makes asyncpg
    cancel the running query and return its connection healthy, then re-raises.
    """
    if in_loop_thread():
        coro.close()
        raise BlockingCallError(
            f"{what} blocks, and was called from inside the pgq_nb event loop (an async handler "
            "or callback), where it would deadlock; use `await q.aio.<method>(...)` there"
        )
    own = loop()
    done = threading.Event()
    tasks: list[asyncio.Task[T]] = []

    def start() -> None:
        task = own.create_task(coro)
        task.add_done_callback(lambda _: done.set())
        tasks.append(task)

    own.call_soon_threadsafe(start)
    try:
        done.wait()
    except KeyboardInterrupt:
        # call_soon_threadsafe keeps order: start() has run before this cancel does.
        own.call_soon_threadsafe(lambda: tasks[0].cancel())
        done.wait(timeout=10)  # let the cancellation reach the server and clean-ups run
        raise
    return tasks[0].result()


async def run_here(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` on the pgq_nb loop, from whatever loop is running now."""
    running = asyncio.get_running_loop()
    own = loop()
    if running is own:
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, own))


def bridged(
    method: Callable[Concatenate[Any, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, T]]:
    """Decorate an async method so it always executes on the pgq_nb loop."""

    async def wrapper(self: Any, *args: P.args, **kwargs: P.kwargs) -> T:
        return await run_here(method(self, *args, **kwargs))

    return cast(
        "Callable[Concatenate[Any, P], Coroutine[Any, Any, T]]",
        functools.wraps(method)(wrapper),
    )


def blocking(
    method: Callable[Concatenate[Any, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Any, P], T]:
    """The blocking twin of an async method, for a sync facade whose ``aio`` attribute holds
    the async object: ``get = blocking(AsyncThing.get)`` makes ``thing.get()`` run
    ``thing.aio.get()`` on the pgq_nb loop and wait."""

    def call(self: Any, *args: P.args, **kwargs: P.kwargs) -> T:
        return run_sync(method(self.aio, *args, **kwargs), f"{method.__name__}()")

    return cast("Callable[Concatenate[Any, P], T]", functools.wraps(method)(call))


def add_shutdown_hook(hook: Callable[[], Awaitable[None]]) -> None:
    """Run ``hook`` on the loop when the interpreter exits (close pools cleanly)."""
    _shutdown_hooks.append(hook)


def _at_exit() -> None:
    if _loop is None or _thread is None or not _thread.is_alive() or not _shutdown_hooks:
        return

    async def run_hooks() -> None:
        await asyncio.gather(*(hook() for hook in _shutdown_hooks), return_exceptions=True)

    future = asyncio.run_coroutine_threadsafe(run_hooks(), _loop)
    with contextlib.suppress(Exception):  # best effort at interpreter exit
        future.result(timeout=5)


atexit.register(_at_exit)
