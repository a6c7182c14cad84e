"""Connections: one asyncpg pool per DSN, schema install and upgrade, driver-error translation."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import urllib.parse
from collections.abc import Iterator
from typing import Any

import asyncpg

from pgq_nb import runtime, sql
from pgq_nb.errors import DatabaseUnavailableError, SchemaError

logger = logging.getLogger("pgq_nb")

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


@contextlib.contextmanager
def translate_errors(dsn: str) -> Iterator[None]:
    """Turn connection failures into DatabaseUnavailableError with a useful message."""
    try:
        yield
    except (TimeoutError, OSError, asyncpg.CannotConnectNowError) as exc:
        raise DatabaseUnavailableError(
            f"cannot reach Postgres at {describe_dsn(dsn)}: {exc.__class__.__name__}: {exc}. "
            "Check that the server is running and the DSN (PGQ_NB_DSN or connect(dsn=...)) "
            "is right; with no DSN pgq_nb starts its embedded server"
        ) from None
    except (
        asyncpg.InvalidPasswordError,
        asyncpg.InvalidAuthorizationSpecificationError,
        asyncpg.InvalidCatalogNameError,
    ) as exc:
        raise DatabaseUnavailableError(
            f"Postgres at {describe_dsn(dsn)} refused the connection: {exc}. "
            "Check the user, password and database name in the DSN"
        ) from None


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


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Results (jsonb) come back decoded.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.execute(SESSION_SETUP)


async def get_pool(dsn: str, *, max_size: int = 10) -> asyncpg.Pool:
    """The shared pool for ``dsn``, created on the pgq_nb loop on first use."""
    pool = _pools.get(dsn)
    if pool is not None and not pool.is_closing():
        return pool
    lock = _pool_locks.setdefault(dsn, asyncio.Lock())
    async with lock:
        pool = _pools.get(dsn)
        if pool is not None and not pool.is_closing():
            return pool
        with translate_errors(dsn):
            pool = await asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=max_size,
                timeout=10,
                init=_init_connection,
                connection_class=PoolConnection,
            )
        assert pool is not None
        version = await pool.fetchval("SELECT current_setting('server_version_num')::int")
        if version < MIN_SERVER_VERSION:
            await pool.close()
            raise DatabaseUnavailableError(
                f"Postgres at {describe_dsn(dsn)} is version {version // 10000}; pgq_nb needs "
                "14 or newer"
            )
        _pools[dsn] = pool
        return pool


async def connect_one(dsn: str) -> asyncpg.Connection:
    """A single connection outside the pool (for LISTEN)."""
    with translate_errors(dsn):
        conn: asyncpg.Connection = await asyncpg.connect(dsn, timeout=10)
    return conn


async def close_pools() -> None:
    """Close every pool (at interpreter exit)."""
    pools = list(_pools.values())
    _pools.clear()
    await asyncio.gather(*(p.close() for p in pools), return_exceptions=True)


runtime.add_shutdown_hook(close_pools)


async def schema_version(conn: Any, schema: str) -> int | None:
    """The installed schema version, or None when pgq_nb is not installed in ``schema``."""
    table = f'"{sql.validate_schema_name(schema)}".schema_version'
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
    if not exists:
        return None
    version: int = await conn.fetchval(f"SELECT version FROM {table}")
    return version


async def _lock_schema(conn: Any, schema: str) -> None:
    """Serialise installers of the same schema (several workers starting at once)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"pgq_nb install {schema}")


async def _set_version(conn: Any, schema: str, version: int) -> None:
    table = f'"{sql.validate_schema_name(schema)}".schema_version'
    await conn.execute(
        f"INSERT INTO {table} (version) VALUES ($1) "
        "ON CONFLICT (only_one) DO UPDATE SET version = excluded.version, installed = now()",
        version,
    )


async def install(pool: asyncpg.Pool, schema: str, *, upgrade: bool = True) -> int:
    """Install the schema if it is missing, migrate it if it is older; return the version.

    Idempotent and safe to run from several processes at once.
    """
    latest = sql.latest_version()
    async with pool.acquire() as conn, conn.transaction():
        await _lock_schema(conn, schema)
        current = await schema_version(conn, schema)
        if current is None:
            await conn.execute(sql.schema_sql(schema))
            await _set_version(conn, schema, latest)
            logger.info("installed schema", extra={"schema": schema, "version": latest})
            return latest
        if current > latest:
            raise SchemaError(
                f"the pgq_nb schema {schema!r} is at version {current}, newer than this pgq_nb "
                f"understands ({latest}); upgrade the package: pip install -U pgq_nb"
            )
        if current < latest:
            if not upgrade:
                raise SchemaError(
                    f"the pgq_nb schema {schema!r} is at version {current}, older than this "
                    f"pgq_nb needs ({latest}); run `pgq-nb upgrade`"
                )
            await _migrate(conn, schema, current)
        return latest


async def _migrate(conn: Any, schema: str, current: int) -> None:
    for migration in sql.migrations(schema):
        if migration.version > current:
            await conn.execute(migration.sql)
            await _set_version(conn, schema, migration.version)
            logger.info("applied migration", extra={"migration": migration.name})


async def install_first_version_and_migrate(pool: asyncpg.Pool, schema: str) -> None:
    """Install migration 1 only, then migrate to the latest (used to test the migrations)."""
    async with pool.acquire() as conn, conn.transaction():
        await _lock_schema(conn, schema)
        await conn.execute(sql.migrations(schema)[0].sql)
        await _set_version(conn, schema, 1)
        await _migrate(conn, schema, 1)


async def uninstall(pool: asyncpg.Pool, schema: str) -> None:
    """Drop the schema and everything in it."""
    async with pool.acquire() as conn, conn.transaction():
        await _lock_schema(conn, schema)
        await conn.execute(sql.uninstall_sql(schema))


async def require_installed(pool: asyncpg.Pool, schema: str) -> None:
    """Raise SchemaError unless the schema is installed at the version this code expects."""
    async with pool.acquire() as conn:
        current = await schema_version(conn, schema)
    if current is None:
        raise SchemaError(
            f"pgq_nb is not installed in schema {schema!r}; run `pgq-nb install` or "
            "connect(install=True)"
        )
    if current != sql.latest_version():
        await install(pool, schema, upgrade=False)  # raises with the right message
