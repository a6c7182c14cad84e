"""PgQueuer's side: imported lazily (``pip install -e '.[bench]'``), one fresh database per run.

PgQueuer is used the way its documentation and ``pgq run`` do: ``PgQueuer`` over an
``AsyncpgDriver`` on one asyncpg connection, ``run()`` with its defaults (batch_size=10,
dequeue_timeout=30 s, no max_concurrent_tasks) unless a scenario says "tuned". Its tables are
installed with ``Queries(...).install()`` (what ``pgq install`` runs) in a database created for
the run (with PostgreSQL's default search_path) and dropped after it, so every run starts from
empty tables and fresh statistics.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg

from benchmarks.common import STOP_TIMEOUT, log, with_database

INSTALL_HINT = "pip install -e '.[bench]'"
PINNED = "1.6.0"
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class MissingPgQueuer(RuntimeError):
    """PgQueuer is not installed in this environment."""


def load() -> Any:
    """The ``pgqueuer`` module, or MissingPgQueuer with the command that installs it."""
    try:
        return importlib.import_module("pgqueuer")
    except ImportError:
        raise MissingPgQueuer(
            f"PgQueuer is not installed; the side-by-side benchmarks need it: {INSTALL_HINT} "
            f"(adds pgqueuer=={PINNED})"
        ) from None


def version(pgqueuer: Any) -> str:
    return str(getattr(pgqueuer, "__version__", "unknown"))


async def _drop(admin: asyncpg.Connection, name: str) -> None:
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _stock_search_path(admin: asyncpg.Connection, name: str) -> None:
    """Give this role PostgreSQL's default search_path in database ``name`` (dropped with it).

    PgQueuer creates its tables unqualified, in the first schema of the search_path; the
    embedded server's superuser searches ``pg_catalog`` first (a hardening of pgq_nb's), where
    nothing may be created. A role without the right to set it keeps its own path.
    """
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        await admin.execute(
            f'ALTER ROLE CURRENT_USER IN DATABASE "{name}" SET search_path = "$user", public'
        )


@contextlib.asynccontextmanager
async def fresh_database(pgqueuer: Any, dsn: str, name: str) -> AsyncIterator[str]:
    """Create database ``name``, install PgQueuer's tables in it, yield its DSN, drop it."""
    if not _DB_NAME.fullmatch(name):
        raise ValueError(f"bad database name {name!r}")
    admin = await asyncpg.connect(dsn)
    try:
        await _drop(admin, name)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.InsufficientPrivilegeError:
            raise RuntimeError(
                "the benchmark user may not CREATE DATABASE; PgQueuer runs in a fresh database "
                "per repeat: give the role CREATEDB or use --dsn with a role that has it"
            ) from None
        await _stock_search_path(admin, name)
    finally:
        await admin.close()
    db_dsn = with_database(dsn, name)
    try:
        conn = await asyncpg.connect(db_dsn)
        try:
            await queries_on(pgqueuer, conn).install()
        finally:
            await conn.close()
        yield db_dsn
    finally:
        admin = await asyncpg.connect(dsn)
        try:
            await _drop(admin, name)
        finally:
            await admin.close()


def queries_on(pgqueuer: Any, conn: asyncpg.Connection) -> Any:
    """PgQueuer's ``Queries`` over one asyncpg connection."""
    return pgqueuer.Queries(pgqueuer.AsyncpgDriver(conn))


@dataclasses.dataclass(kw_only=True)
class Settings:
    """Arguments of ``PgQueuer.run``; None leaves PgQueuer's default in place."""

    batch_size: int | None = None
    max_concurrent_tasks: int | None = None

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.batch_size is not None:
            out["batch_size"] = self.batch_size
        if self.max_concurrent_tasks is not None:
            out["max_concurrent_tasks"] = self.max_concurrent_tasks
        return out

    def describe(self) -> str:
        if self.batch_size is None and self.max_concurrent_tasks is None:
            return "defaults (batch_size=10, unlimited tasks)"
        tasks = self.max_concurrent_tasks
        cap = "unlimited tasks" if tasks is None else f"max_concurrent_tasks={tasks}"
        return f"batch_size={self.batch_size}, {cap}"


class Worker:
    """A PgQueuer worker on its own connection, running as a task in the current loop."""

    def __init__(self, pgqueuer: Any, dsn: str, settings: Settings | None = None) -> None:
        self._pgqueuer = pgqueuer
        self._dsn = dsn
        self._settings = settings or Settings()
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[Any] | None = None
        self.pgq: Any = None

    async def open(self, handlers: dict[str, Callable[[Any], Any]]) -> None:
        """Connect and register the handlers (not started yet)."""
        self._conn = await asyncpg.connect(self._dsn)
        self.pgq = self._pgqueuer.PgQueuer(self._pgqueuer.AsyncpgDriver(self._conn))
        for name, handler in handlers.items():
            self.pgq.entrypoint(name)(handler)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.pgq.run(**self._settings.kwargs()))

    async def stop(self) -> None:
        """Set PgQueuer's shutdown event, wait for ``run()`` to return, close the connection."""
        try:
            if self._task is not None:
                self.pgq.shutdown.set()
                try:
                    await asyncio.wait_for(self._task, timeout=STOP_TIMEOUT)
                except TimeoutError:
                    log(
                        f"  (the PgQueuer worker did not stop within {STOP_TIMEOUT:g} s; cancelled)"
                    )
        finally:
            if self._conn is not None:
                await self._conn.close()


async def queue_empty(conn: asyncpg.Connection) -> bool:
    """True once PgQueuer's queue table is empty (finished jobs are deleted from it)."""
    return bool(await conn.fetchval("SELECT NOT EXISTS (SELECT 1 FROM pgqueuer)"))


async def succeeded(conn: asyncpg.Connection) -> int:
    """Jobs PgQueuer logged as successful."""
    sql = "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'"
    return int(await conn.fetchval(sql))


async def enqueue_noops(queries: Any, entrypoint: str, n: int, chunk: int = 10_000) -> None:
    """Queue ``n`` jobs with no payload through PgQueuer's enqueue (setup, untimed)."""
    for start in range(0, n, chunk):
        k = min(chunk, n - start)
        await queries.enqueue([entrypoint] * k, [None] * k, [0] * k)
