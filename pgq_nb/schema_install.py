"""The schema pgq_nb owns: install, upgrade, ownership-checked uninstall."""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg

from pgq_nb import sql
from pgq_nb.errors import ConfigurationError, SchemaError

logger = logging.getLogger("pgq_nb")

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
    # pgq_nb defines each routine once: a second one of the same name (an overload) is not its
    routines = Counter(r["name"] for r in rows if r["space"] == "routine")
    foreign = []
    for r in rows:
        described = f"{r['kind']} {schema}.{r['name']}"
        if (r["space"], r["name"]) not in owned:
            foreign.append(described)
        elif r["space"] == "routine" and routines[r["name"]] > 1:
            foreign.append(f"{described} (one of {routines[r['name']]} of that name)")
    return list(dict.fromkeys(foreign))


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
