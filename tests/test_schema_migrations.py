"""Schema install, upgrade and uninstall; a fresh install equals version 1 plus migrations."""

from __future__ import annotations

from typing import Any

import pytest

import pgq_nb
from pgq_nb import db, runtime, schema_install, sql

CATALOG_QUERIES = {
    "columns": """
        SELECT table_name, column_name, data_type, is_nullable, column_default, is_identity
        FROM information_schema.columns WHERE table_schema = $1
        ORDER BY table_name, column_name""",
    "indexes": """
        SELECT tablename, indexname, replace(indexdef, $1 || '.', 'S.') AS def
        FROM pg_indexes WHERE schemaname = $1 ORDER BY indexname""",
    "constraints": """
        SELECT conrelid::regclass::text AS rel, conname, pg_get_constraintdef(c.oid) AS def
        FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
        WHERE n.nspname = $1 ORDER BY conname""",
    "triggers": """
        SELECT tgname, replace(pg_get_triggerdef(t.oid), $1 || '.', 'S.') AS def
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND NOT t.tgisinternal ORDER BY tgname""",
    "functions": """
        SELECT proname, prosrc, proconfig
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = $1 ORDER BY proname""",
    "options": """
        SELECT relname, relkind, reloptions FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 ORDER BY relname""",
    "marker": """
        SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = $1""",
}


def _catalog(pool: Any, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    async def run() -> dict[str, list[tuple[Any, ...]]]:
        out = {}
        for name, query in CATALOG_QUERIES.items():
            rows = await pool.fetch(query, schema)
            out[name] = [
                tuple(str(v).replace(f'"{schema}"', "S").replace(schema, "S") for v in r)
                for r in rows
            ]
        return out

    return runtime.run_sync(run())


async def _install_first_version_and_migrate(pool: Any, schema: str) -> None:
    """Install migration 1 only, then migrate to the latest."""
    q = sql.queries(schema)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(q["lock_install"], schema)
        await conn.execute(sql.migrations(schema)[0].sql)
        await conn.execute(q["set_schema_version"], 1)
        await schema_install._migrate(conn, schema, 1)


def _pool(dsn: str) -> Any:
    return runtime.run_sync(db.get_pool(dsn))


def _drop(pool: Any, *schemas: str) -> None:
    async def run() -> None:
        for schema in schemas:
            await schema_install.uninstall(pool, schema)

    runtime.run_sync(run())


def test_fresh_install_equals_first_version_plus_migrations(installed: str) -> None:
    pool = _pool(installed)
    _drop(pool, "mig_fresh", "mig_stepwise")
    try:
        runtime.run_sync(schema_install.install(pool, "mig_fresh"))
        runtime.run_sync(_install_first_version_and_migrate(pool, "mig_stepwise"))
        fresh = _catalog(pool, "mig_fresh")
        stepwise = _catalog(pool, "mig_stepwise")
        assert fresh["columns"], "the catalog query found nothing"
        for part in CATALOG_QUERIES:
            assert fresh[part] == stepwise[part], part
        versions = [
            runtime.run_sync(schema_install.schema_version(pool, s))
            for s in ("mig_fresh", "mig_stepwise")
        ]
        assert versions == [sql.latest_version()] * 2
        assert fresh["marker"][0][0].startswith(f"{sql.SCHEMA_MARKER}:")
    finally:
        _drop(pool, "mig_fresh", "mig_stepwise")


def _objects(pool: Any, schema: str) -> set[tuple[str, str]]:
    async def run() -> set[tuple[str, str]]:
        rows = await pool.fetch(sql.queries(schema)["schema_objects"], schema)
        return {(r["space"], r["name"]) for r in rows}

    return runtime.run_sync(run())


def test_uninstall_knows_every_object_the_schema_and_migrations_create(installed: str) -> None:
    """The ownership check (what uninstall may drop) reads the objects off schema.sql and the
    migrations. If a migration creates an object in a way it cannot read (or creates one at
    all that it does not know), this test fails: the catalog holds an object it does not own."""
    pool = _pool(installed)
    _drop(pool, "mig_fresh", "mig_stepwise")
    try:
        runtime.run_sync(schema_install.install(pool, "mig_fresh"))
        runtime.run_sync(_install_first_version_and_migrate(pool, "mig_stepwise"))
        for schema in ("mig_fresh", "mig_stepwise"):
            found = _objects(pool, schema)
            assert ("relation", "jobs") in found, found
            assert found - sql.owned_objects() == set(), f"{schema}: not known to uninstall"

            async def foreign(schema: str = schema) -> list[str]:
                async with pool.acquire() as conn:
                    return await schema_install.foreign_objects(conn, schema)

            assert runtime.run_sync(foreign()) == []
        # what the latest schema creates is exactly what a fresh install holds
        latest = sql.objects_created_by(sql._read("schema.sql"))
        assert _objects(pool, "mig_fresh") == latest
    finally:
        _drop(pool, "mig_fresh", "mig_stepwise")


def test_a_create_the_ownership_check_cannot_read_fails_loudly() -> None:
    """A migration that creates an object in a form objects_created_by does not know is an
    error at load time, not an object that uninstall would refuse (or miss) later."""
    text = """
        -- CREATE TABLE in a comment is not code; nor is 'CREATE TABLE' in a string
        CREATE TABLE IF NOT EXISTS {schema}.a (id int);
        CREATE UNLOGGED TABLE {schema}.b (id int);
        CREATE OR REPLACE VIEW {schema}.c AS SELECT 1;
        CREATE MATERIALIZED VIEW {schema}.d AS SELECT 1;
        CREATE SEQUENCE {schema}.e;
        CREATE TYPE {schema}.f AS ENUM ('x');
        CREATE DOMAIN {schema}.g AS int;
        CREATE OR REPLACE FUNCTION {schema}.h() RETURNS int LANGUAGE sql AS $$
            CREATE TABLE not_here (id int) $$;
        CREATE PROCEDURE {schema}.i() LANGUAGE sql AS 'SELECT 1';
        CREATE UNIQUE INDEX a_idx ON {schema}.a (id);
        CREATE TRIGGER t AFTER INSERT ON {schema}.a EXECUTE FUNCTION {schema}.h();
        ALTER TABLE {schema}.b RENAME TO b2;
        ALTER TABLE {schema}.a RENAME COLUMN id TO key;
    """
    assert sql.objects_created_by(text) == {
        ("relation", "a"),
        ("relation", "b"),
        ("relation", "b2"),
        ("relation", "c"),
        ("relation", "d"),
        ("relation", "e"),
        ("relation", "f"),
        ("relation", "g"),
        ("routine", "h"),
        ("routine", "i"),
    }
    for unreadable in (
        "CREATE TABLE unqualified (id int);",
        'CREATE TABLE {schema}."Quoted" (id int);',
        "CREATE COLLATION {schema}.c (provider = icu, locale = 'und');",
        "CREATE TEMP TABLE {schema}.t (id int);",
    ):
        with pytest.raises(RuntimeError, match="objects_created_by"):
            sql.objects_created_by(unreadable, "9999_example.sql")


def test_install_is_idempotent_and_concurrent_safe(installed: str) -> None:
    pool = _pool(installed)
    _drop(pool, "mig_twice")
    try:

        async def many() -> list[int]:
            import asyncio

            return list(
                await asyncio.gather(*(schema_install.install(pool, "mig_twice") for _ in range(4)))
            )

        assert runtime.run_sync(many()) == [sql.latest_version()] * 4
        assert runtime.run_sync(schema_install.install(pool, "mig_twice")) == sql.latest_version()
    finally:
        _drop(pool, "mig_twice")


def test_newer_schema_than_code_is_a_clear_error(installed: str) -> None:
    pool = _pool(installed)
    _drop(pool, "mig_newer")
    try:
        runtime.run_sync(schema_install.install(pool, "mig_newer"))
        runtime.run_sync(pool.execute("UPDATE mig_newer.schema_version SET version = 999"))
        with pytest.raises(pgq_nb.SchemaError, match="pip install -U pgq_nb"):
            pgq_nb.connect(installed, schema="mig_newer")
        # nor will this version uninstall it: it cannot tell the newer objects from others
        with pytest.raises(pgq_nb.SchemaError, match="pip install -U pgq_nb"):
            _drop(pool, "mig_newer")
    finally:
        runtime.run_sync(
            pool.execute("UPDATE mig_newer.schema_version SET version = $1", sql.latest_version())
        )
        _drop(pool, "mig_newer")


def test_older_schema_is_upgraded_or_reported(installed: str) -> None:
    pool = _pool(installed)
    _drop(pool, "mig_old")
    try:
        runtime.run_sync(schema_install.install(pool, "mig_old"))
        runtime.run_sync(pool.execute("UPDATE mig_old.schema_version SET version = 0"))
        with pytest.raises(pgq_nb.SchemaError, match="pgq-nb upgrade"):
            pgq_nb.connect(installed, schema="mig_old", install=False)
    finally:
        _drop(pool, "mig_old")


def test_connect_without_install_on_a_missing_schema(installed: str) -> None:
    with pytest.raises(pgq_nb.SchemaError, match="pgq-nb install"):
        pgq_nb.connect(installed, schema="mig_missing", install=False)


def test_uninstall_drops_everything(installed: str) -> None:
    q = pgq_nb.connect(installed, schema="mig_gone")
    q.uninstall()

    async def exists() -> bool:
        found: bool = await q.aio.pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'mig_gone')"
        )
        return found

    assert runtime.run_sync(exists()) is False
