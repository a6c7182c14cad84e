"""Install and uninstall touch only what pgq_nb owns: its own schema and the objects its SQL
creates. Other schemas, other objects and objects elsewhere that depend on pgq_nb's are left
alone, with an error that names them and says what to do."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

import pgq_nb
from pgq_nb import db, runtime, schema_install, sql
from tests.conftest import REPO, execute_sql, worker_env

SCHEMAS = (
    "safety_analytics",
    "safety_existing",
    "safety_empty",
    "safety_mixed",
    "safety_dep",
    "safety_legacy",
    "safety_never",
    "safety_other",
)
PUBLIC_TABLES = ("public.safety_customers", "public.safety_orders")


def _value(dsn: str, query: str, *args: Any) -> Any:
    async def run() -> Any:
        pool = await db.get_pool(dsn)
        return await pool.fetchval(query, *args)

    return runtime.run_sync(run())


def _exists(dsn: str, relation: str) -> bool:
    return bool(_value(dsn, "SELECT to_regclass($1) IS NOT NULL", relation))


def _schema_exists(dsn: str, schema: str) -> bool:
    return bool(
        _value(dsn, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema)
    )


def _uninstall(dsn: str, schema: str) -> bool:
    async def run() -> bool:
        return await schema_install.uninstall(await db.get_pool(dsn), schema)

    return runtime.run_sync(run())


def _install(dsn: str, schema: str) -> int:
    async def run() -> int:
        return await schema_install.install(await db.get_pool(dsn), schema)

    return runtime.run_sync(run())


def _install_legacy(dsn: str, schema: str) -> None:
    """What pgq_nb installed before the marker: version 1, no comment on the schema."""

    async def run() -> None:
        pool = await db.get_pool(dsn)
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(sql.migrations(schema)[0].sql)
            await conn.execute(sql.queries(schema)["set_schema_version"], 1)

    runtime.run_sync(run())


def _state(dsn: str, schema: str) -> schema_install.SchemaState:
    async def run() -> schema_install.SchemaState:
        pool = await db.get_pool(dsn)
        async with pool.acquire() as conn:
            return await schema_install.schema_state(conn, schema)

    return runtime.run_sync(run())


def _cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgq_nb.cli", "--dsn", dsn, *args],
        env=worker_env(dsn),
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def dsn_clean(installed: str, admin_dsn: str) -> Iterator[str]:
    """The test server (the application's DSN), with none of this module's schemas or public
    tables left over. (The application's role may not create tables in public: public's are
    made with admin_dsn.)"""

    def clean() -> None:
        execute_sql(
            admin_dsn,
            *(f"DROP TABLE IF EXISTS {t} CASCADE" for t in PUBLIC_TABLES),
            *(f"DROP SCHEMA IF EXISTS {s} CASCADE" for s in SCHEMAS),
        )

    clean()
    yield installed
    clean()


# -- schemas pgq_nb does not own ----------------------------------------------------------


def test_uninstall_refuses_a_schema_pgq_nb_never_installed(dsn_clean: str) -> None:
    dsn = dsn_clean
    execute_sql(
        dsn,
        "CREATE SCHEMA safety_analytics",
        "CREATE TABLE safety_analytics.revenue (day date, amount numeric)",
        "INSERT INTO safety_analytics.revenue VALUES ('2026-11-28', 9.5)",
    )
    with pytest.raises(pgq_nb.SchemaError) as err:
        _uninstall(dsn, "safety_analytics")
    message = str(err.value)
    assert "'safety_analytics' is not a pgq_nb schema" in message
    assert "drop it yourself" in message

    # the command line, with and without --yes, refuses the same way
    for args in (["uninstall", "--yes"], ["uninstall"]):
        done = _cli(dsn, "--schema", "safety_analytics", *args)
        assert done.returncode == 2, done
        assert "is not a pgq_nb schema" in done.stderr, done.stderr
        assert "dropped" not in done.stdout

    assert _value(dsn, "SELECT count(*) FROM safety_analytics.revenue") == 1


def test_public_is_refused_and_left_alone(dsn_clean: str, admin_dsn: str) -> None:
    dsn = dsn_clean
    execute_sql(admin_dsn, "CREATE TABLE public.safety_customers (id int PRIMARY KEY, name text)")
    execute_sql(admin_dsn, "INSERT INTO public.safety_customers VALUES (1, 'Ada')")
    execute_sql(admin_dsn, "GRANT SELECT ON public.safety_customers TO PUBLIC")

    with pytest.raises(pgq_nb.ConfigurationError) as err:
        pgq_nb.connect(dsn, schema="public")
    message = str(err.value)
    assert "will not install into schema 'public'" in message
    assert "for example 'pgq_nb'" in message
    assert not _exists(dsn, "public.schema_version")
    assert not _exists(dsn, "public.jobs")

    done = _cli(dsn, "--schema", "public", "install")
    assert done.returncode == 2 and "will not install into schema 'public'" in done.stderr, done
    assert not _exists(dsn, "public.schema_version")

    with pytest.raises(pgq_nb.SchemaError, match="not a pgq_nb schema"):
        _uninstall(dsn, "public")
    done = _cli(dsn, "--schema", "public", "uninstall", "--yes")
    assert done.returncode == 2 and "not a pgq_nb schema" in done.stderr, done
    assert _value(dsn, "SELECT name FROM public.safety_customers") == "Ada"
    assert _schema_exists(dsn, "public")


@pytest.mark.parametrize("name", ["information_schema", "pg_queue"])
def test_system_schemas_are_refused(dsn_clean: str, name: str) -> None:
    dsn = dsn_clean
    with pytest.raises(pgq_nb.ConfigurationError, match=f"will not install into schema {name!r}"):
        _install(dsn, name)


def test_install_into_an_existing_schema_with_objects_is_refused(dsn_clean: str) -> None:
    dsn = dsn_clean
    execute_sql(
        dsn,
        "CREATE SCHEMA safety_existing",
        "CREATE TABLE safety_existing.revenue (amount numeric)",
        "CREATE FUNCTION safety_existing.double(x int) RETURNS int LANGUAGE sql AS 'SELECT 2 * x'",
    )
    with pytest.raises(pgq_nb.SchemaError) as err:
        pgq_nb.connect(dsn, schema="safety_existing")
    message = str(err.value)
    assert "table safety_existing.revenue" in message
    assert "function safety_existing.double" in message
    assert "for example 'pgq_nb'" in message
    assert not _exists(dsn, "safety_existing.schema_version")
    assert not _exists(dsn, "safety_existing.jobs")
    assert _exists(dsn, "safety_existing.revenue")


def test_an_existing_empty_schema_is_taken_and_marked(dsn_clean: str) -> None:
    dsn = dsn_clean
    execute_sql(dsn, "CREATE SCHEMA safety_empty")
    assert _install(dsn, "safety_empty") == sql.latest_version()
    state = _state(dsn, "safety_empty")
    assert state.marked and state.version == sql.latest_version()
    assert _uninstall(dsn, "safety_empty") is True
    assert not _schema_exists(dsn, "safety_empty")


# -- pgq_nb's own schema --------------------------------------------------------------------


def test_uninstall_of_a_missing_schema_does_nothing_then_install_creates_it(dsn_clean: str) -> None:
    dsn = dsn_clean
    """What tests/conftest.py's `installed` fixture does on a new server."""
    assert _uninstall(dsn, "safety_never") is False
    done = _cli(dsn, "--schema", "safety_never", "upgrade")  # nothing to upgrade
    assert done.returncode == 2 and "run `pgq-nb install`" in done.stderr, done
    assert not _schema_exists(dsn, "safety_never")
    done = _cli(dsn, "--schema", "safety_never", "install")
    assert done.returncode == 0 and "installed at version" in done.stdout, done
    assert _install(dsn, "safety_never") == sql.latest_version()
    assert _install(dsn, "safety_never") == sql.latest_version()  # idempotent
    assert _state(dsn, "safety_never").marked
    assert _uninstall(dsn, "safety_never") is True
    assert _uninstall(dsn, "safety_never") is False
    done = _cli(dsn, "--schema", "safety_never", "uninstall", "--yes")
    assert done.returncode == 0, done
    assert "nothing to uninstall" in done.stdout


def test_uninstall_refuses_objects_pgq_nb_did_not_create(dsn_clean: str) -> None:
    dsn = dsn_clean
    q = pgq_nb.connect(dsn, schema="safety_mixed")
    q.entrypoint("keep")(lambda job: None)
    job_id = q.enqueue("keep")
    execute_sql(
        dsn,
        "CREATE TABLE safety_mixed.notes (note text)",
        "CREATE VIEW safety_mixed.queued AS SELECT id FROM safety_mixed.jobs",
        "CREATE SEQUENCE safety_mixed.counter",
        "CREATE FUNCTION safety_mixed.one() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE TYPE safety_mixed.mood AS ENUM ('ok', 'not ok')",
    )
    with pytest.raises(pgq_nb.SchemaError) as err:
        q.uninstall()
    message = str(err.value)
    for name in (
        "table safety_mixed.notes",
        "view safety_mixed.queued",
        "sequence safety_mixed.counter",
        "function safety_mixed.one",
        "enum type safety_mixed.mood",
    ):
        assert name in message
    for pgq_nb_table in ("jobs", "history", "schema_version"):
        assert f"safety_mixed.{pgq_nb_table}" not in message  # pgq_nb's own are not listed
    assert "move them to another schema" in message
    assert "drop them yourself" in message

    done = _cli(dsn, "--schema", "safety_mixed", "uninstall")  # without --yes: checks too
    assert done.returncode == 2 and "safety_mixed.notes" in done.stderr, done
    assert q.get_job(job_id).status is pgq_nb.JobStatus.QUEUED  # nothing was dropped

    execute_sql(
        dsn,
        "DROP VIEW safety_mixed.queued",
        "DROP TABLE safety_mixed.notes",
        "DROP SEQUENCE safety_mixed.counter",
        "DROP FUNCTION safety_mixed.one",
        "DROP TYPE safety_mixed.mood",
    )
    # an index of your own on pgq_nb's table is part of that table: it goes with it
    execute_sql(dsn, "CREATE INDEX safety_mixed_mine ON safety_mixed.jobs (created)")
    done = _cli(dsn, "--schema", "safety_mixed", "uninstall")
    assert done.returncode == 2, done
    assert "run again with --yes" in done.stdout
    assert _exists(dsn, "safety_mixed.jobs")
    done = _cli(dsn, "--schema", "safety_mixed", "uninstall", "--yes")
    assert done.returncode == 0, done
    assert "'safety_mixed' dropped" in done.stdout
    assert not _schema_exists(dsn, "safety_mixed")


def test_uninstall_refuses_when_objects_elsewhere_depend_on_pgq_nb(dsn_clean: str) -> None:
    dsn = dsn_clean
    q = pgq_nb.connect(dsn, schema="safety_dep")
    execute_sql(
        dsn,
        "CREATE SCHEMA safety_other",
        "CREATE TABLE safety_other.orders (id int, job_id bigint REFERENCES safety_dep.jobs)",
        "CREATE VIEW safety_other.done AS SELECT id, status FROM safety_dep.history",
    )
    with pytest.raises(pgq_nb.SchemaError) as err:
        q.uninstall()
    message = str(err.value)
    assert "view safety_other.done depends on table safety_dep.history" in message
    assert "on table safety_other.orders depends on table safety_dep.jobs" in message
    assert "drop or change those objects yourself" in message
    assert _exists(dsn, "safety_dep.jobs") and _exists(dsn, "safety_dep.history")
    assert _exists(dsn, "safety_other.done") and _exists(dsn, "safety_other.orders")

    execute_sql(dsn, "DROP VIEW safety_other.done", "DROP TABLE safety_other.orders")
    q.uninstall()
    assert not _schema_exists(dsn, "safety_dep")


def test_the_drop_itself_touches_only_pgq_nbs_objects(dsn_clean: str) -> None:
    """Uninstall checks, then drops by pgq_nb's names only: an object that appeared after the
    check (here: before, with the check skipped) is neither dropped nor dropped with the
    schema."""
    dsn = dsn_clean
    _install(dsn, "safety_mixed")
    execute_sql(dsn, "CREATE TABLE safety_mixed.late (id int)")
    queries = sql.queries("safety_mixed")

    async def drop_without_check() -> tuple[bool, bool]:
        pool = await db.get_pool(dsn)
        async with pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            try:
                await conn.fetchval(queries["set_owned_names"], *schema_install.owned_names())
                await conn.execute(queries["drop_schema_objects"])
                jobs = await conn.fetchval("SELECT to_regclass('safety_mixed.jobs') IS NOT NULL")
                late = await conn.fetchval("SELECT to_regclass('safety_mixed.late') IS NOT NULL")
                with pytest.raises(asyncpg.DependentObjectsStillExistError, match="late"):
                    await conn.execute(queries["drop_schema"])
                return jobs, late
            finally:
                await transaction.rollback()

    assert runtime.run_sync(drop_without_check()) == (False, True)


def test_the_drop_handles_every_kind_of_object_pgq_nb_may_own(dsn_clean: str) -> None:
    """Views, sequences, types and domains that a later migration may add: the drop takes
    them (when they are pgq_nb's names) in an order their dependencies allow."""
    dsn = dsn_clean
    _install(dsn, "safety_mixed")
    execute_sql(
        dsn,
        "CREATE TYPE safety_mixed.mood AS ENUM ('ok')",
        "CREATE TYPE safety_mixed.pair AS (a int, b int)",
        "CREATE DOMAIN safety_mixed.positive AS int CHECK (VALUE > 0)",
        "CREATE SEQUENCE safety_mixed.counter",
        "CREATE TABLE safety_mixed.moods (m safety_mixed.mood, p safety_mixed.positive)",
        "CREATE VIEW safety_mixed.recent AS SELECT id FROM safety_mixed.jobs",
        "CREATE MATERIALIZED VIEW safety_mixed.snapshot AS SELECT id FROM safety_mixed.recent",
        "CREATE VIEW safety_mixed.latest AS SELECT max(id) FROM safety_mixed.snapshot",
        "CREATE FUNCTION safety_mixed.mood_of(m safety_mixed.mood) RETURNS text "
        "LANGUAGE sql AS 'SELECT m::text'",
    )
    queries = sql.queries("safety_mixed")
    relations, routines = schema_install.owned_names()
    relations += ",mood,pair,positive,counter,moods,recent,snapshot,latest"
    routines += ",mood_of"

    async def drop() -> bool:
        pool = await db.get_pool(dsn)
        async with pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            try:
                await conn.fetchval(queries["set_owned_names"], relations, routines)
                await conn.execute(queries["drop_schema_objects"])
                await conn.execute(queries["drop_schema"])
                gone: bool = await conn.fetchval(
                    "SELECT NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                    "safety_mixed",
                )
                return gone
            finally:
                await transaction.rollback()

    assert runtime.run_sync(drop()) is True


# -- schemas installed before the marker -------------------------------------------------------


def test_an_install_without_marker_is_upgraded_marked_and_uninstalled(dsn_clean: str) -> None:
    dsn = dsn_clean
    _install_legacy(dsn, "safety_legacy")
    before = _state(dsn, "safety_legacy")
    assert before.version == 1 and not before.marked and before.is_pgq_nb

    # it uninstalls as it is ...
    assert _uninstall(dsn, "safety_legacy") is True
    assert not _schema_exists(dsn, "safety_legacy")

    # ... or upgrades (the marker comes with migration 2), by connect() or `pgq-nb upgrade`
    for upgrade in (
        lambda: pgq_nb.connect(dsn, schema="safety_legacy"),
        lambda: _cli(dsn, "--schema", "safety_legacy", "upgrade").check_returncode(),
    ):
        _install_legacy(dsn, "safety_legacy")
        upgrade()
        after = _state(dsn, "safety_legacy")
        assert after.version == sql.latest_version() and after.marked
        pgq_nb.connect(dsn, schema="safety_legacy").uninstall()
        assert not _schema_exists(dsn, "safety_legacy")


def test_an_install_without_marker_holding_other_objects_is_not_dropped(dsn_clean: str) -> None:
    dsn = dsn_clean
    _install_legacy(dsn, "safety_legacy")
    execute_sql(dsn, "CREATE TABLE safety_legacy.revenue (amount numeric)")
    with pytest.raises(pgq_nb.SchemaError, match=r"table safety_legacy\.revenue"):
        _uninstall(dsn, "safety_legacy")
    assert _install(dsn, "safety_legacy") == sql.latest_version()  # the upgrade still works
    with pytest.raises(pgq_nb.SchemaError, match=r"table safety_legacy\.revenue"):
        _uninstall(dsn, "safety_legacy")
    assert _exists(dsn, "safety_legacy.revenue") and _exists(dsn, "safety_legacy.jobs")


def test_an_old_install_in_public_keeps_public_and_its_tables(
    dsn_clean: str, admin_dsn: str
) -> None:
    """pgq_nb once installed into public when asked to (here as a superuser, who may create
    there). Such an install still upgrades; its uninstall refuses while public holds your
    tables, then drops pgq_nb's tables, not public."""
    dsn = admin_dsn

    async def objects_in_public() -> list[Any]:
        pool = await db.get_pool(dsn)
        return list(await pool.fetch(sql.queries("public")["schema_objects"], "public"))

    if runtime.run_sync(objects_in_public()):
        pytest.skip(
            "public is not empty on this server; run it on the suite's own embedded server "
            "(unset PGQ_NB_TEST_DSN) or on a server whose public schema is empty"
        )
    comment = _value(dsn, "SELECT obj_description('public'::regnamespace, 'pg_namespace')")
    execute_sql(dsn, "CREATE TABLE public.safety_customers (id int PRIMARY KEY)")
    _install_legacy(dsn, "public")
    try:
        q = pgq_nb.connect(dsn, schema="public")
        assert _state(dsn, "public").version == sql.latest_version()
        with pytest.raises(pgq_nb.SchemaError, match=r"table public\.safety_customers"):
            q.uninstall()
        assert _exists(dsn, "public.jobs") and _exists(dsn, "public.safety_customers")

        execute_sql(dsn, "DROP TABLE public.safety_customers")
        q.uninstall()
        assert runtime.run_sync(objects_in_public()) == []
        assert _schema_exists(dsn, "public")
        assert (
            _value(dsn, "SELECT obj_description('public'::regnamespace, 'pg_namespace')") == comment
        )
    finally:
        if _exists(dsn, "public.schema_version"):
            execute_sql(dsn, "DROP TABLE IF EXISTS public.safety_customers")
            _uninstall(dsn, "public")


def test_uninstall_refuses_a_routine_that_overloads_one_of_pgq_nbs(dsn_clean: str) -> None:
    dsn = dsn_clean
    q = pgq_nb.connect(dsn, schema="safety_mixed")
    execute_sql(
        dsn,
        "CREATE FUNCTION safety_mixed.count_finished(n int) RETURNS int LANGUAGE sql AS 'SELECT n'",
    )
    with pytest.raises(pgq_nb.SchemaError, match=r"safety_mixed\.count_finished \(one of 2"):
        q.uninstall()
    assert _exists(dsn, "safety_mixed.jobs")
    execute_sql(dsn, "DROP FUNCTION safety_mixed.count_finished(int)")
    q.uninstall()
    assert not _schema_exists(dsn, "safety_mixed")
