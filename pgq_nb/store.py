"""The handle SQL runs against: the pool, the DSN, the named queries of one schema, its
NOTIFY channel, the settings and the worker resources. Built once per queue by
:class:`pgq_nb.queue.AsyncQueue`; the worker, the enqueue paths, workflows, transactions and
the notebook layer take it (with the :class:`pgq_nb.registry.Registry`) instead of the queue.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

from pgq_nb import sql
from pgq_nb.config import Settings
from pgq_nb.resources import Resources

if TYPE_CHECKING:
    import asyncpg

    from pgq_nb.registry import Registry


@dataclasses.dataclass(frozen=True, eq=False)
class Store:
    """Where a queue's SQL runs; immutable once built."""

    pool: asyncpg.Pool
    dsn: str
    settings: Settings
    queries: dict[str, str]
    channel: str
    resources: Resources

    @classmethod
    def build(cls, pool: asyncpg.Pool, dsn: str, settings: Settings) -> Store:
        """The store of ``settings.schema`` on ``pool``."""
        return cls(
            pool=pool,
            dsn=dsn,
            settings=settings,
            queries=sql.queries(settings.schema),
            channel=sql.channel_name(settings.schema),
            resources=Resources(),
        )

    @property
    def schema(self) -> str:
        return self.settings.schema

    def connection(self, connection: Any = None) -> contextlib.AbstractAsyncContextManager[Any]:
        """``connection`` if given (the caller's), else one from the pool for the block."""
        return acquired(self.pool if connection is None else connection)


@contextlib.asynccontextmanager
async def acquired(source: Any) -> AsyncIterator[Any]:
    """A connection for the block: ``source`` itself if it is one (a caller's, a
    transaction's), else one acquired from ``source``, a pool, and released after."""
    acquire = getattr(source, "acquire", None)
    if acquire is None:
        yield source
    else:
        async with acquire() as conn:
            yield conn


class SqlTarget(Protocol):
    """Anything with a pool and named queries: a :class:`Store` (or a queue, which has both)."""

    @property
    def pool(self) -> Any: ...

    @property
    def queries(self) -> dict[str, str]: ...


class Backend(Protocol):
    """A store and a registry: what a :class:`pgq_nb.worker.Worker` runs on (``q.aio`` is one)."""

    @property
    def store(self) -> Store: ...

    @property
    def registry(self) -> Registry: ...
