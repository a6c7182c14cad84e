"""One background event-loop thread per process, serving every sync call.

Jupyter's kernel already runs an event loop, so ``asyncio.run`` fails in a cell, and asyncpg
pools are bound to the loop that created them. pgq_nb therefore runs its own loop in a daemon
thread: it owns every asyncpg pool, runs notebook workers, and sync methods submit coroutines
to it and wait. ``await q.aio.method()`` from another loop (the kernel's) is bridged to this
loop as well, except a call given the caller's own asyncpg connection, which runs where that
connection lives (:func:`run_for`). No ``nest_asyncio``.

The sync facades are built from the async classes here (:func:`blocking`, :func:`forwarded`,
:func:`blocking_function`), so every signature and docstring is written once.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import inspect
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar, cast, overload

from pgq_nb.errors import BlockingCallError, InvalidInputError

T = TypeVar("T")
R = TypeVar("R")
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
    """Await ``coro`` on the pgq_nb loop, from whatever loop is running now.

    Cancelling the awaiting task cancels ``coro`` and waits (up to 10 s) for it to end, so its
    clean-ups (a worker deregistering, a query cancelled) are over when the cancel arrives.
    """
    running = asyncio.get_running_loop()
    own = loop()
    if running is own:
        return await coro
    finished = running.create_future()
    tasks: list[asyncio.Task[T]] = []

    def resolve() -> None:
        if not finished.done():
            finished.set_result(None)

    def report(_: object) -> None:
        with contextlib.suppress(RuntimeError):  # the awaiting loop has closed
            running.call_soon_threadsafe(resolve)

    def start() -> None:
        task = own.create_task(coro)
        task.add_done_callback(report)
        tasks.append(task)

    own.call_soon_threadsafe(start)
    try:
        await asyncio.shield(finished)
    except asyncio.CancelledError:
        # call_soon_threadsafe keeps order: start() has run before this cancel does.
        own.call_soon_threadsafe(lambda: tasks[0].cancel())
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            async with asyncio.timeout(10):
                await asyncio.shield(finished)
        raise
    return tasks[0].result()


async def run_for(connection: Any, coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` on the loop ``connection`` belongs to (an asyncpg connection works only
    on the loop that opened it): pgq_nb's loop for None (the pool) or one of pgq_nb's own
    connections (a ``q.transaction()``'s), else the running loop (the caller's own connection,
    opened on the caller's loop). A connection of a third loop is refused before any use."""
    owner = getattr(connection, "_loop", None)  # asyncpg keeps no public accessor for it
    if connection is None or owner is loop():
        return await run_here(coro)
    if owner is not None and owner is not asyncio.get_running_loop():
        coro.close()
        raise InvalidInputError(
            "connection= belongs to another event loop than the one awaiting this call, and "
            "an asyncpg connection works only on its own loop: await the q.aio method on the "
            "loop that opened the connection (a blocking q.method cannot use one)"
        )
    return await coro


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


def _sync_return(method: Callable[..., Any], wrapper: Callable[..., Any]) -> None:
    """Give ``wrapper`` (a sync twin that wraps the result of ``method``) the signature of
    ``method`` returning the sync class: ``AsyncX`` becomes ``X``, the class that wraps it."""
    signature = inspect.signature(method)
    returned = signature.return_annotation
    name = returned if isinstance(returned, str) else getattr(returned, "__name__", "")
    sync_name = name.removeprefix("Async")
    sync_signature = signature.replace(return_annotation=sync_name)
    wrapper.__signature__ = sync_signature  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**method.__annotations__, "return": sync_name}


@overload
def blocking(
    method: Callable[Concatenate[Any, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Any, P], T]: ...


@overload
def blocking(
    method: Callable[Concatenate[Any, P], Coroutine[Any, Any, T]], wrap: Callable[[T], R]
) -> Callable[Concatenate[Any, P], R]: ...


def blocking(
    method: Callable[Concatenate[Any, P], Coroutine[Any, Any, T]],
    wrap: Callable[[T], Any] | None = None,
) -> Callable[Concatenate[Any, P], Any]:
    """The blocking twin of an async method, for a sync facade whose ``aio`` attribute holds
    the async object: ``get = blocking(AsyncThing.get)`` makes ``thing.get()`` run
    ``thing.aio.get()`` on the pgq_nb loop and wait. Its signature and docstring are the async
    method's. ``wrap`` turns a result that is an async object (``AsyncX``) into its facade
    (``X``); the twin's return annotation says so."""
    what = f"{method.__name__}()"

    def call(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> Any:
        result = run_sync(method(self.aio, *args, **kwargs), what)
        return result if wrap is None else wrap(result)

    functools.update_wrapper(call, method)
    if wrap is not None:
        _sync_return(method, call)
    return call


def blocking_function(
    function: Callable[P, Coroutine[Any, Any, T]], wrap: Callable[[T], R], name: str
) -> Callable[P, R]:
    """The blocking twin ``name`` of a module-level coroutine function returning an async
    object, which ``wrap`` turns into its facade: ``connect = blocking_function(aconnect,
    Queue, "connect")``. Its signature and docstring are the async function's."""

    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return wrap(run_sync(function(*args, **kwargs), f"pgq_nb.{name}()"))

    functools.update_wrapper(call, function)
    call.__name__ = call.__qualname__ = name
    _sync_return(function, call)
    return call


def forwarded(method: Callable[Concatenate[Any, P], T]) -> Callable[Concatenate[Any, P], T]:
    """A plain (not async) method of the async object, on its sync facade:
    ``entrypoint = forwarded(AsyncQueue.entrypoint)`` makes ``q.entrypoint(...)`` call
    ``q.aio.entrypoint(...)``, with its signature and docstring."""

    def call(self: Any, *args: P.args, **kwargs: P.kwargs) -> T:
        return method(self.aio, *args, **kwargs)

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
