"""Connections: one asyncpg pool per DSN, session setup, connect retry, driver-error translation."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import json
import logging
import random
import socket
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import asyncpg

from pgq_nb import runtime
from pgq_nb.errors import DatabaseUnavailableError

logger = logging.getLogger("pgq_nb")
T = TypeVar("T")

MIN_SERVER_VERSION = 140000

#: Errors that pass: the connection dropped, the server is restarting or busy, a lock or
#: serialization conflict. Workers retry these with backoff; anything else is a bug or a
#: schema mismatch and is raised.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.TransactionRollbackError,
    asyncpg.exceptions.LockNotAvailableError,
    # asyncpg 0.32 raises this ("cannot switch to state 12; another operation is in progress")
    # when the server ends a connection in the middle of an operation: measured with a
    # SIGKILLed postmaster, whose backends then fail every client at once
    asyncpg.exceptions.InternalClientError,
    DatabaseUnavailableError,
)
_pools: dict[str, asyncpg.Pool] = {}
_pool_locks: dict[str, asyncio.Lock] = {}


def describe_dsn(dsn: str) -> str:
    """Host, port and database of a DSN, for messages; never the password."""
    try:
        url = urllib.parse.urlsplit(dsn)
        query = urllib.parse.parse_qs(url.query)
        host = url.hostname or query.get("host", ["localhost"])[0]
        port = url.port or int(query.get("port", ["5432"])[0])
        database = url.path.lstrip("/") or query.get("dbname", [""])[0] or "(default)"
    except ValueError:
        return "the configured server (the DSN could not be parsed)"
    return f"host {host!r} port {port} database {database!r}"


#: How long get_pool and connect_one keep trying to open a connection while the failure is one
#: that passes (no free connection slot, the server starting or restarting), in seconds.
CONNECT_RETRY_SECONDS = 60.0
#: The first pause between those attempts, doubled after each one up to the cap (±20 % jitter,
#: so that workers started together do not retry together).
CONNECT_BACKOFF_FIRST = 0.25
CONNECT_BACKOFF_MAX = 5.0

#: Failures to open a connection that pass on their own: every connection slot taken (53300,
#: and the rest of class 53), the server starting up, shutting down or restarted (class 57,
#: class 08), nothing listening yet or the connection reset (OSError), a timeout.
_PASSING_CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)


def _passes(exc: BaseException) -> bool:
    """Whether a failure to connect is worth retrying (a wrong password or database is not;
    nor a TLS failure or a host name that does not resolve)."""
    if isinstance(exc, ssl.SSLError):
        return False
    if isinstance(exc, socket.gaierror):
        return exc.errno == socket.EAI_AGAIN  # "temporary failure in name resolution"
    return isinstance(exc, _PASSING_CONNECT_ERRORS)


@contextlib.contextmanager
def translate_errors(dsn: str) -> Iterator[None]:
    """Turn a refused login (user, password, database) into DatabaseUnavailableError."""
    try:
        yield
    except (
        asyncpg.InvalidPasswordError,
        asyncpg.InvalidAuthorizationSpecificationError,
        asyncpg.InvalidCatalogNameError,
    ) as exc:
        raise DatabaseUnavailableError(
            f"Postgres at {describe_dsn(dsn)} refused the connection: {exc}. "
            "Check the user, password and database name in the DSN"
        ) from None


#: What to do about a server with no free connection slot (at connect and at query time).
NO_FREE_SLOT_ADVICE = (
    "If this persists: raise max_connections on the server (PGQ_NB_MAX_CONNECTIONS for the "
    "embedded one) or the role's CONNECTION LIMIT, lower the pool sizes and worker "
    "concurrency (pgq-nb worker --concurrency, fewer worker processes), or stop idle "
    "clients (see pg_stat_activity)"
)


def _gave_up(dsn: str, exc: BaseException, attempts: int, seconds: float) -> str:
    where = describe_dsn(dsn)
    tried = f"{attempts} attempt{'s' if attempts != 1 else ''} in {seconds:.0f} s"
    error = f"{exc.__class__.__name__}: {exc}"
    if isinstance(exc, asyncpg.exceptions.InsufficientResourcesError):
        return f"Postgres at {where} has no free connection slot ({error}; {tried}). " + (
            NO_FREE_SLOT_ADVICE
        )
    if isinstance(exc, asyncpg.exceptions.OperatorInterventionError):
        return (
            f"Postgres at {where} does not accept connections: it is starting up, shutting "
            f"down or in recovery ({error}; {tried}). If this persists, look at the server's "
            "log and wait for it to finish starting, or start it"
        )
    return (
        f"cannot reach Postgres at {where}: {error} ({tried}). Check that the server is "
        "running and the DSN (PGQ_NB_DSN or connect(dsn=...)) is right; with no DSN pgq_nb "
        "starts its embedded server"
    )


async def _connecting(
    dsn: str, attempt: Callable[[], Awaitable[T]], what: str, retry_for: float | None
) -> T:
    """``attempt()``, tried again with capped exponential backoff while it fails in a way that
    passes, for up to ``retry_for`` seconds (CONNECT_RETRY_SECONDS by default); then
    DatabaseUnavailableError saying what to do."""
    loop = asyncio.get_running_loop()
    seconds = CONNECT_RETRY_SECONDS if retry_for is None else retry_for
    started = loop.time()
    delay = CONNECT_BACKOFF_FIRST
    attempts = 0
    while True:
        attempts += 1
        try:
            with translate_errors(dsn):
                return await attempt()
        except Exception as exc:
            if not _passes(exc):
                raise
            left = started + seconds - loop.time()
            if left <= 0:
                elapsed = loop.time() - started
                raise DatabaseUnavailableError(_gave_up(dsn, exc, attempts, elapsed)) from None
            pause = min(delay * random.uniform(0.8, 1.2), left)
            logger.warning(
                f"{what}: cannot connect to Postgres at {describe_dsn(dsn)} "
                f"({exc.__class__.__name__}: {exc}); retrying in {pause:.1f} s "
                f"(attempt {attempts}, giving up after {seconds:.0f} s)",
                extra={"error": exc.__class__.__name__, "retry_in_s": round(pause, 2)},
            )
            await asyncio.sleep(pause)
            delay = min(delay * 2, CONNECT_BACKOFF_MAX)


#: Session settings of every pooled connection: claims and completions are short, so none may
#: wait forever on a lock.
SESSION_SETUP = "SET lock_timeout = '30s'"


class PoolConnection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg has no type hints
    """A pooled connection released without asyncpg's RESET round trip: pgq_nb's statements
    leave no session state behind (measured: the reset was about 7 % of a drain's time, and its
    RESET ALL also undid SESSION_SETUP). A user transaction resets the session itself
    (:func:`reset_session`), since user SQL may have changed it."""

    def get_reset_query(self) -> str:
        return ""


async def reset_session(conn: asyncpg.Connection) -> None:
    """asyncpg's default session reset (advisory locks, cursors, LISTEN, settings), then ours."""
    default = asyncpg.Connection.get_reset_query(conn)
    await conn.execute(f"{default}\n{SESSION_SETUP}")


@dataclasses.dataclass
class Call:
    """A public call under way (see :mod:`pgq_nb.query_errors`): whether it has taken a
    connection from a pool yet, that is, whether anything of it may have reached the server."""

    acquired: bool = False


#: The public call this task works for, if any; every task it starts shares the record.
CALL: contextvars.ContextVar[Call | None] = contextvars.ContextVar("pgq_nb_call", default=None)


async def _note_acquire(conn: asyncpg.Connection) -> None:
    """The pools' ``setup``, run at each acquire: the call under way has reached the server
    (one context-variable look-up; no round trip)."""
    call = CALL.get()
    if call is not None:
        call.acquired = True


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Results (jsonb) come back decoded.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.execute(SESSION_SETUP)


async def _open_pool(dsn: str, max_size: int) -> asyncpg.Pool:
    """A new pool for ``dsn``, its server's version checked. ``min_size=0``: asyncpg keeps no
    floor of connections, so while the server is down it does not log a traceback every few
    seconds from a background task trying to restore one (asyncpg 0.32); the connection the
    check opens stays in the pool for the first call."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=max_size,
        timeout=10,
        init=_init_connection,
        setup=_note_acquire,
        connection_class=PoolConnection,
    )
    try:
        version = await pool.fetchval("SELECT current_setting('server_version_num')::int")
    except BaseException:
        await pool.close()
        raise
    if version < MIN_SERVER_VERSION:
        await pool.close()
        raise DatabaseUnavailableError(
            f"Postgres at {describe_dsn(dsn)} is version {version // 10000}; pgq_nb needs "
            "14 or newer"
        )
    return pool


async def get_pool(dsn: str, *, max_size: int = 10, retry_for: float | None = None) -> asyncpg.Pool:
    """The shared pool for ``dsn``, created on the pgq_nb loop on first use. While the server
    has no free connection slot or is (re)starting, opening it is retried for ``retry_for``
    seconds (CONNECT_RETRY_SECONDS by default), with a warning each time."""
    pool = _pools.get(dsn)
    if pool is not None and not pool.is_closing():
        return pool
    lock = _pool_locks.setdefault(dsn, asyncio.Lock())
    async with lock:
        pool = _pools.get(dsn)
        if pool is not None and not pool.is_closing():
            return pool
        pool = await _connecting(
            dsn, lambda: _open_pool(dsn, max_size), "opening the connection pool", retry_for
        )
        _pools[dsn] = pool
        return pool


async def connect_one(dsn: str, *, retry_for: float | None = None) -> asyncpg.Connection:
    """A single connection outside the pool (for LISTEN); retried like :func:`get_pool`.
    Pass ``retry_for=0`` for a single attempt (a loop that retries by itself)."""
    conn: asyncpg.Connection = await _connecting(
        dsn, lambda: asyncpg.connect(dsn, timeout=10), "opening a connection", retry_for
    )
    return conn


async def close_pools() -> None:
    """Close every pool (at interpreter exit)."""
    pools = list(_pools.values())
    _pools.clear()
    await asyncio.gather(*(p.close() for p in pools), return_exceptions=True)


runtime.add_shutdown_hook(close_pools)
