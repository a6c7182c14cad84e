r"""The entrypoint registry: the handlers of this process, how to run them, and their record
in the database.

``@q.entrypoint(...)`` validates its options here (rate limits parsed by :func:`parse_rate`)
and adds an :class:`EntrypointSpec`; enqueue paths :meth:`Registry.sync` the names and
:meth:`Registry.check` the ones they write; a starting worker :meth:`Registry.register`\ s its
retry limits and global flow limits, which then hold for every worker. Schedules declared with
``@q.schedule`` are kept here too (their handlers are entrypoints).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pgq_nb import caching, executors, keys
from pgq_nb.errors import InvalidInputError, UnknownEntrypointError, did_you_mean
from pgq_nb.hooks import Hooks
from pgq_nb.models import Job, check_int, check_text
from pgq_nb.retry import RetryPolicy
from pgq_nb.snooze import DEFAULT_MAX_SNOOZES, check_max_snoozes

if TYPE_CHECKING:
    from pgq_nb.schedule.database import ScheduleSpec

Handler = Callable[[Job], Any]
H = TypeVar("H", bound=Handler)


@dataclasses.dataclass(frozen=True, kw_only=True)
class EntrypointSpec:
    """A registered handler and how to run it."""

    name: str
    handler: Handler
    is_async: bool
    concurrency: int | None
    retry: RetryPolicy
    timeout: float | None
    transactional: bool = False
    max_running: int | None = None
    rate_per_s: float | None = None
    #: where attempts run: None (the worker's choice), "thread" or "process" (pgq_nb.executors)
    executor: str | None = None
    #: bytes an attempt in a process may use (its address space); None: no limit
    memory_limit: int | None = None
    #: a payload field or a function of the payload: jobs of one key run at most
    #: ``max_per_key`` at once across workers (pgq_nb.keys); None: no per-key limit
    concurrency_key: keys.KeyOption | None = None
    max_per_key: int | None = None
    #: how many times a job may snooze (pgq_nb.snooze)
    max_snoozes: int = DEFAULT_MAX_SNOOZES
    #: cache=True: its TTL and handler version (pgq_nb.caching); None: not cached
    cache: caching.CacheOptions | None = None

    @property
    def limited(self) -> bool:
        """Has a limit that holds across workers (claims go through claim_limited, or
        claim_keyed with a per-key limit)."""
        return (
            self.max_running is not None
            or self.rate_per_s is not None
            or self.max_per_key is not None
        )


class Registry:
    """The entrypoints (and schedules) registered in this process."""

    def __init__(self, queries: dict[str, str], retry: RetryPolicy | None = None) -> None:
        self.queries = queries
        self.retry = retry or RetryPolicy()
        self.handlers: dict[str, EntrypointSpec] = {}
        self.schedule_specs: dict[str, ScheduleSpec] = {}
        self.unsynced_schedules: set[str] = set()
        self._known_remote: set[str] = set()
        #: what workers recorded of entrypoints without a handler here: {name: (max_per_key,
        #: key_field)}, read with the names (see :mod:`pgq_nb.keys`)
        self.remote_keys: dict[str, tuple[int | None, str | None]] = {}
        self._unsynced: set[str] = set()
        #: Counts registrations (entrypoints, and so schedules, whose handlers are entrypoints):
        #: a worker serving the whole registry compares it to see that a handler was added or
        #: re-defined (see :mod:`pgq_nb.worker_follow`).
        self.generation = 0
        #: ``@q.on(event)`` callbacks, run by this registry's workers (see :mod:`pgq_nb.hooks`)
        self.hooks = Hooks()

    def entrypoint(
        self,
        name: str,
        *,
        concurrency: int | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | dt.timedelta | None = None,
        transactional: bool = False,
        max_running: int | None = None,
        rate_limit: str | float | None = None,
        executor: str | None = None,
        memory_limit: str | int | None = None,
        concurrency_key: keys.KeyOption | None = None,
        max_per_key: int | None = None,
        max_snoozes: int = DEFAULT_MAX_SNOOZES,
        cache: bool = False,
        cache_ttl: float | dt.timedelta | str | None = None,
        version: str | None = None,
    ) -> Callable[[H], H]:
        """Validate the options now; the returned decorator registers the handler (see
        :meth:`pgq_nb.queue.AsyncQueue.entrypoint`)."""
        if not isinstance(name, str) or not name.strip():
            raise InvalidInputError("an entrypoint name must be a non-empty string")
        check_text("entrypoint name", name)
        snoozes = check_max_snoozes(max_snoozes)
        cached = caching.check_options(cache, cache_ttl, version, transactional=transactional)
        if concurrency is not None and (check_int("concurrency", concurrency) < 1):
            raise InvalidInputError("concurrency must be at least 1 (or None for no cap)")
        if max_running is not None and check_int("max_running", max_running) < 1:
            raise InvalidInputError("max_running must be at least 1 (or None for no limit)")
        per_s = parse_rate(rate_limit)
        key_option, per_key = keys.check_options(name, concurrency_key, max_per_key)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidInputError("retry must be a pgq_nb.RetryPolicy")
        seconds = timeout.total_seconds() if isinstance(timeout, dt.timedelta) else timeout
        if seconds is not None and (not isinstance(seconds, int | float) or seconds <= 0):
            raise InvalidInputError("timeout must be a positive number of seconds or None")
        executor = executors.check_executor(executor)
        memory = executors.parse_memory(memory_limit)
        if memory is not None and executor != "process":
            raise InvalidInputError(
                "memory_limit needs executor='process': a handler in a thread shares the "
                "worker's memory, so only a process of its own can be held to a limit"
            )
        if executor == "process" and transactional:
            raise InvalidInputError(
                "a transactional handler runs on the worker's connection, so it cannot run in "
                "a process: drop executor='process' or transactional=True"
            )

        def register(handler: H) -> H:
            if not callable(handler):
                raise InvalidInputError(f"@entrypoint({name!r}) must decorate a function")
            if executor == "process":
                executors.check_sendable(name, handler)  # in the cell, before any job runs
            is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
                getattr(handler, "__call__", None)  # noqa: B004 - async callable objects
            )
            self.handlers[name] = EntrypointSpec(
                name=name,
                handler=handler,
                is_async=is_async,
                concurrency=concurrency,
                retry=retry or self.retry,
                timeout=None if seconds is None else float(seconds),
                transactional=bool(transactional),
                max_running=max_running,
                rate_per_s=per_s,
                executor=executor,
                memory_limit=memory,
                concurrency_key=key_option,
                max_per_key=per_key,
                max_snoozes=snoozes,
                cache=None
                if cached is None
                else dataclasses.replace(
                    cached, version=cached.version or caching.handler_version(handler)
                ),
            )
            self._unsynced.add(name)
            self.generation += 1
            return handler

        return register

    def worker_specs(
        self, entrypoints: list[str] | None, *, may_wait: bool = False
    ) -> dict[str, EntrypointSpec]:
        """The specs a worker of ``entrypoints`` (None: every registered one) runs.
        ``may_wait``: a worker of every handler may start before there is one (it serves
        them as they are registered); otherwise none is an error."""
        names = list(self.handlers) if entrypoints is None else list(entrypoints)
        if not names and not (may_wait and entrypoints is None):
            raise UnknownEntrypointError(
                "this queue has no handlers; register one with @q.entrypoint('name') before "
                "starting a worker"
            )
        for name in names:
            if name not in self.handlers:
                raise UnknownEntrypointError(
                    f"no handler for entrypoint {name!r}{did_you_mean(name, self.handlers)}; "
                    f"register it with @q.entrypoint({name!r}) before starting a worker "
                    f"(registered: {sorted(self.handlers)})"
                )
        return {n: self.handlers[n] for n in names}

    async def sync(self, conn: Any) -> None:
        """Record the entrypoint names this process has handlers for (enqueue checks names
        against them), without touching what workers recorded about them."""
        if self._unsynced:
            names = sorted(self._unsynced)
            await conn.execute(self.queries["declare_entrypoints"], names)
            self._unsynced.difference_update(names)

    async def register(self, conn: Any, names: list[str]) -> None:
        """A starting worker records its entrypoints' retry limits and global flow limits,
        which then hold for every worker."""
        await self.sync(conn)
        limits = [self.handlers[n].retry.max_attempts for n in names]
        await conn.execute(self.queries["upsert_entrypoints"], names, limits)
        for name in names:
            spec = self.handlers[name]
            burst = rate_burst(spec.rate_per_s) if spec.rate_per_s else 1.0
            await conn.execute(
                self.queries["set_limits"], name, spec.max_running, spec.rate_per_s, burst
            )
            await keys.record(self.queries, conn, name, spec.concurrency_key, spec.max_per_key)

    async def check(self, names: set[str], conn: Any) -> None:
        """UnknownEntrypointError unless every name has a handler here or in some worker."""
        unknown = names - self.handlers.keys() - self._known_remote
        if not unknown:
            return
        rows = await conn.fetch(self.queries["entrypoint_keys"])
        self._known_remote = {r["name"] for r in rows}
        self.remote_keys = keys.remote(rows)
        unknown -= self._known_remote
        if unknown:
            name = sorted(unknown)[0]
            hint = did_you_mean(name, self.handlers.keys() | self._known_remote)
            raise UnknownEntrypointError(
                f"no handler is registered for entrypoint {name!r}{hint}; register it with "
                f"@q.entrypoint({name!r}) in this process, or start a worker that registers it, "
                f"before enqueueing (known: {sorted(self.handlers.keys() | self._known_remote)})"
            )

    async def prepare(self, names: set[str], conn: Any) -> None:
        """Before an enqueue of jobs of ``names``: :meth:`sync`, then :meth:`check`."""
        await self.sync(conn)
        await self.check(names, conn)


_RATE_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
}


def parse_rate(rate: object) -> float | None:
    """``"100/s"``, ``"30/min"``, ``"500/h"`` (or a number per second) as jobs per second."""
    if rate is None:
        return None
    if isinstance(rate, int | float) and not isinstance(rate, bool):
        per_s = float(rate)
    elif isinstance(rate, str) and "/" in rate:
        count, _, unit = rate.partition("/")
        try:
            per_s = float(count.strip()) / _RATE_UNITS[unit.strip().lower()]
        except (ValueError, KeyError):
            per_s = -1.0
    else:
        per_s = -1.0
    if not per_s > 0:
        raise InvalidInputError(
            f"rate_limit {rate!r} is not a rate: write it like '100/s', '30/min' or '500/h'"
        )
    return per_s


def rate_burst(per_s: float) -> float:
    """Tokens a bucket may hold: a tenth of a second's worth, at least one. So any one-second
    window sees at most ``rate + burst`` starts (10 % over, or one job for slow rates)."""
    return max(1.0, per_s * 0.1)
