"""Connections: one asyncpg pool per DSN, schema install and upgrade, driver-error translation."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from pgq_nb import runtime, sql
from pgq_nb.errors import ConfigurationError, DatabaseUnavailableError, SchemaError

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


def _gave_up(dsn: str, exc: BaseException, attempts: int, seconds: float) -> str:
    where = describe_dsn(dsn)
    tried = f"{attempts} attempt{'s' if attempts != 1 else ''} in {seconds:.0f} s"
    error = f"{exc.__class__.__name__}: {exc}"
    if isinstance(exc, asyncpg.exceptions.InsufficientResourcesError):
        return (
            f"Postgres at {where} has no free connection slot ({error}; {tried}). If this "
            "persists: raise max_connections on the server (PGQ_NB_MAX_CONNECTIONS for the "
            "embedded one) or the role's CONNECTION LIMIT, lower the pool sizes and worker "
            "concurrency (pgq-nb worker --concurrency, fewer worker processes), or stop idle "
            "clients (see pg_stat_activity)"
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


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Results (jsonb) come back decoded.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.execute(SESSION_SETUP)


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
            dsn,
            lambda: asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=max_size,
                timeout=10,
                init=_init_connection,
                connection_class=PoolConnection,
            ),
            "opening the connection pool",
            retry_for,
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


async def connect_one(dsn: str, *, retry_for: float | None = None) -> asyncpg.Connection:
    """A single connection outside the pool (for LISTEN); retried like :func:`get_pool`.
    Pass ``retry_for=0`` for a single attempt (a loop that retries by itself)."""
    conn: asyncpg.Connection = await _connecting(
        dsn, lambda: asyncpg.connect(dsn, timeout=10), "opening a connection", retry_for
    )
    return conn


async def close_pool(dsn: str) -> None:
    """Close the shared pool of ``dsn`` if one is open; the next get_pool opens a new one."""
    pool = _pools.pop(dsn, None)
    if pool is not None:
        await pool.close()


async def close_pools() -> None:
    """Close every pool (at interpreter exit)."""
    pools = list(_pools.values())
    _pools.clear()
    await asyncio.gather(*(p.close() for p in pools), return_exceptions=True)


runtime.add_shutdown_hook(close_pools)


# -- install, upgrade, uninstall --------------------------------------------------------------

#: Schemas pgq_nb never installs into: they are shared with other objects (and names starting
#: with pg_ are the server's).
RESERVED_SCHEMAS = ("public", "information_schema")
_NAMING = "connect(schema=...), `pgq-nb --schema` or PGQ_NB_SCHEMA"


@dataclass(frozen=True)
class SchemaState:
    """What a schema is to pgq_nb: present, marked as pgq_nb's, at which version."""

    exists: bool
    marked: bool  # carries the comment pgq_nb writes (sql.SCHEMA_MARKER)
    version: int | None  # None: no schema_version table

    @property
    def is_pgq_nb(self) -> bool:
        """pgq_nb's: marked, or installed before the marker existed (has schema_version)."""
        return self.marked or self.version is not None


async def schema_state(conn: Any, schema: str) -> SchemaState:
    q = sql.queries(schema)
    row = await conn.fetchrow(q["schema_state"], schema)
    if row is None:
        return SchemaState(exists=False, marked=False, version=None)
    version = await conn.fetchval(q["read_schema_version"]) if row["versioned"] else None
    marked = (row["comment"] or "").startswith(f"{sql.SCHEMA_MARKER}:")
    return SchemaState(exists=True, marked=marked, version=version)


async def schema_version(conn: Any, schema: str) -> int | None:
    """The installed schema version, or None when pgq_nb is not installed in ``schema``."""
    return (await schema_state(conn, schema)).version


async def foreign_objects(conn: Any, schema: str) -> list[str]:
    """The objects in ``schema`` that pgq_nb did not create, as ``"table s.name"``."""
    owned = sql.owned_objects()
    rows = await conn.fetch(sql.queries(schema)["schema_objects"], schema)
    return [
        f"{r['kind']} {schema}.{r['name']}" for r in rows if (r["space"], r["name"]) not in owned
    ]


def _listing(names: list[str], limit: int = 10) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


async def _check_new_home(conn: Any, schema: str, state: SchemaState) -> None:
    """Refuse to install into a shared schema, or an existing one that holds anything."""
    other = "pgq_nb" if schema != "pgq_nb" else "pgq_nb_queue"
    if schema in RESERVED_SCHEMAS or schema.startswith("pg_"):
        raise ConfigurationError(
            f"pgq_nb will not install into schema {schema!r}: pgq_nb creates and owns a schema "
            f"of its own (uninstall drops it), and {schema!r} is shared with other objects. "
            f"Use a schema name of its own, for example {other!r}, with {_NAMING}"
        )
    if not state.exists:
        return
    rows = await conn.fetch(sql.queries(schema)["schema_objects"], schema)
    if rows:
        names = [f"{r['kind']} {schema}.{r['name']}" for r in rows]
        raise SchemaError(
            f"schema {schema!r} already exists and holds objects, but pgq_nb is not installed "
            f"there (no schema_version table): {_listing(names)}. pgq_nb installs only into a "
            "new or empty schema, which it then owns (uninstall drops it). Use another schema "
            f"name, for example {other!r}, with {_NAMING}; nothing was changed"
        )


@contextlib.contextmanager
def _installing(schema: str) -> Iterator[None]:
    try:
        yield
    except asyncpg.InsufficientPrivilegeError as exc:
        raise SchemaError(
            f"cannot install or upgrade pgq_nb in schema {schema!r}: {exc}. Run it (connect() or "
            "`pgq-nb install`/`upgrade`) as a role that may create schemas in this database and "
            "owns the schema"
        ) from None


async def install(pool: asyncpg.Pool, schema: str, *, upgrade: bool = True) -> int:
    """Install the schema if it is missing, migrate it if it is older; return the version.

    Idempotent and safe to run from several processes at once. A fresh install creates the
    schema (or takes an empty one) and marks it as pgq_nb's; it refuses ``public`` and any
    existing schema that holds objects (ConfigurationError, SchemaError).
    """
    latest = sql.latest_version()
    q = sql.queries(schema)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(q["lock_install"], schema)
        state = await schema_state(conn, schema)
        current = state.version
        if current is None:
            await _check_new_home(conn, schema, state)
            with _installing(schema):
                await conn.execute(sql.schema_sql(schema))
            await conn.execute(q["set_schema_version"], latest)
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
            with _installing(schema):
                await _migrate(conn, schema, current)
        return latest


async def _migrate(conn: Any, schema: str, current: int) -> None:
    q = sql.queries(schema)
    for migration in sql.migrations(schema):
        if migration.version > current:
            await conn.execute(migration.sql)
            await conn.execute(q["set_schema_version"], migration.version)
            logger.info("applied migration", extra={"migration": migration.name})


async def install_first_version_and_migrate(pool: asyncpg.Pool, schema: str) -> None:
    """Install migration 1 only, then migrate to the latest (used to test the migrations)."""
    q = sql.queries(schema)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(q["lock_install"], schema)
        await conn.execute(sql.migrations(schema)[0].sql)
        await conn.execute(q["set_schema_version"], 1)
        await _migrate(conn, schema, 1)


async def _check_uninstall(conn: Any, schema: str) -> bool:
    """False if ``schema`` does not exist; SchemaError unless it is pgq_nb's and holds only
    objects pgq_nb created."""
    state = await schema_state(conn, schema)
    if not state.exists:
        return False
    if not state.is_pgq_nb:
        raise SchemaError(
            f"schema {schema!r} is not a pgq_nb schema (it has neither pgq_nb's marker comment "
            "nor a schema_version table), so pgq_nb will not drop it or anything in it. Check "
            f"the schema name ({_NAMING}); to remove this schema, drop it yourself"
        )
    if state.version is not None and state.version > sql.latest_version():
        raise SchemaError(
            f"the pgq_nb schema {schema!r} is at version {state.version}, newer than this "
            f"pgq_nb knows ({sql.latest_version()}), so it cannot tell its objects from others; "
            "upgrade the package (pip install -U pgq_nb), then uninstall"
        )
    foreign = await foreign_objects(conn, schema)
    if foreign:
        raise SchemaError(
            f"schema {schema!r} holds objects pgq_nb did not create: {_listing(foreign)}. "
            "pgq_nb drops only what it installed: move them to another schema (ALTER TABLE ... "
            "SET SCHEMA ...) or drop them yourself, then uninstall again; nothing was dropped"
        )
    return True


def owned_names() -> tuple[str, str]:
    """The names of pgq_nb's relations and routines, comma-separated (for set_owned_names)."""
    owned = sql.owned_objects()
    relations = ",".join(sorted(name for space, name in owned if space == "relation"))
    return relations, ",".join(sorted(name for space, name in owned if space == "routine"))


async def can_uninstall(pool: asyncpg.Pool, schema: str) -> bool:
    """The checks of :func:`uninstall` without dropping anything: False when there is nothing
    to uninstall, SchemaError when uninstall would refuse."""
    async with pool.acquire() as conn:
        return await _check_uninstall(conn, schema)


async def uninstall(pool: asyncpg.Pool, schema: str) -> bool:
    """Drop pgq_nb's objects in ``schema`` and the schema (not ``public``); False if the
    schema does not exist. Refuses with SchemaError, dropping nothing, when the schema is not
    pgq_nb's, holds objects pgq_nb did not create, or has objects elsewhere depending on it.
    """
    q = sql.queries(schema)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(q["lock_install"], schema)
        if not await _check_uninstall(conn, schema):
            return False
        await conn.fetchval(q["set_owned_names"], *owned_names())
        try:
            await conn.execute(q["drop_schema_objects"])
            if schema not in RESERVED_SCHEMAS:
                await conn.execute(q["drop_schema"])
        except asyncpg.DependentObjectsStillExistError as exc:
            detail = "; ".join(line.strip() for line in (exc.detail or str(exc)).splitlines())
            raise SchemaError(
                f"cannot uninstall pgq_nb from schema {schema!r}: objects of yours are in it or "
                f"depend on it ({detail}). pgq_nb drops only what it installed: drop or change "
                "those objects yourself, then uninstall again; nothing was dropped"
            ) from None
    logger.info("uninstalled schema", extra={"schema": schema})
    return True


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
