"""Shared resources for handlers: one HTTP client or pool per worker process, not one per job.

    q.resources["settings"] = {"region": "eu"}      # a plain object, shared as it is

    @q.resource("http")                              # a factory, run once per process
    async def http():
        async with httpx.AsyncClient() as client:    # a generator: cleanup after the yield
            yield client

    @q.entrypoint("fetch")
    async def fetch(job):
        client = job.resources["http"]

Factories run when the first worker of the process starts (plain functions, coroutines,
generators and async generators are all accepted); generator factories are finished (their
cleanup runs) when the last worker of the process stops. Plain objects are never closed by
pgq_nb: they belong to whoever put them there.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, TypeVar

from pgq_nb.errors import InvalidInputError

logger = logging.getLogger("pgq_nb")
F = TypeVar("F", bound=Callable[[], Any])


def _finish(gen: Any) -> None:
    try:
        next(gen)
    except StopIteration:
        return
    gen.close()
    raise RuntimeError("a resource factory must yield exactly once")


async def _finish_async(gen: Any) -> None:
    try:
        await gen.__anext__()
    except StopAsyncIteration:
        return
    await gen.aclose()
    raise RuntimeError("a resource factory must yield exactly once")


class Resources(MutableMapping[str, Any]):
    """Name -> resource. Set plain objects with ``[]``; register factories with
    :meth:`factory` (``@q.resource(name)``)."""

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}
        self._factories: dict[str, Callable[[], Any]] = {}
        self._cleanups: list[tuple[str, Any]] = []
        self._users = 0
        self._lock = asyncio.Lock()

    # -- mapping -------------------------------------------------------------------------

    def __getitem__(self, name: str) -> Any:
        if name in self._values:
            return self._values[name]
        if name in self._factories:
            raise KeyError(
                f"resource {name!r} is made by a factory that has not run yet: factories run "
                "when a worker starts (in handlers, job.resources has it)"
            )
        raise KeyError(
            f"no resource named {name!r}; set q.resources[{name!r}] = ... or register a "
            f"factory with @q.resource({name!r}) (known: {sorted(self)})"
        )

    def __setitem__(self, name: str, value: Any) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidInputError("a resource name must be a non-empty string")
        self._factories.pop(name, None)
        self._values[name] = value

    def __delitem__(self, name: str) -> None:
        self._factories.pop(name, None)
        del self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter({**dict.fromkeys(self._factories), **dict.fromkeys(self._values)})

    def __len__(self) -> int:
        return len(set(self._values) | set(self._factories))

    # -- factories -----------------------------------------------------------------------

    def factory(self, name: str) -> Callable[[F], F]:
        """Register a factory for ``name``, run once per worker process."""
        if not isinstance(name, str) or not name:
            raise InvalidInputError("a resource name must be a non-empty string")

        def register(fn: F) -> F:
            if not callable(fn):
                raise InvalidInputError(f"@q.resource({name!r}) must decorate a function")
            self._values.pop(name, None)
            self._factories[name] = fn
            return fn

        return register

    async def open(self) -> None:
        """Run the factories that have not run (a worker is starting)."""
        async with self._lock:
            self._users += 1
            for name, fn in self._factories.items():
                if name in self._values:
                    continue
                self._values[name] = await self._make(name, fn)

    async def _make(self, name: str, fn: Callable[[], Any]) -> Any:
        if inspect.isasyncgenfunction(fn):
            agen = fn()
            value = await agen.__anext__()
            self._cleanups.append((name, agen))
            return value
        if inspect.isgeneratorfunction(fn):
            gen = fn()
            value = next(gen)
            self._cleanups.append((name, gen))
            return value
        value = fn()
        if inspect.isawaitable(value):
            value = await value
        return value

    async def close(self) -> None:
        """Finish generator factories once the last worker using them stops."""
        async with self._lock:
            self._users = max(self._users - 1, 0)
            if self._users:
                return
            while self._cleanups:
                name, gen = self._cleanups.pop()
                try:  # run the code after the yield, as pytest does for fixtures
                    if inspect.isasyncgen(gen):
                        await _finish_async(gen)
                    else:
                        _finish(gen)
                except Exception as exc:  # a failing cleanup must not stop the others
                    logger.warning(
                        "resource cleanup failed", extra={"resource": name, "error": repr(exc)}
                    )
                for made in [n for n in self._factories if n == name]:
                    self._values.pop(made, None)
