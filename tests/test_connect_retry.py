"""Opening connections waits out failures that pass (every connection slot taken, a server
restarting) with a warning each time, gives up with a message that says what to do, and does
not wait on a wrong password or database."""

from __future__ import annotations

import logging
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import pgq_nb
from pgq_nb import db, runtime
from tests.conftest import execute_sql, wait_until

ROLE = "pgq_nb_retry_test"
PASSWORD = "retry-test-pw"
SCHEMA = "retry_test"
WAIT = 120  # generous: the machine may be loaded


def _with_login(dsn: str, user: str, password: str, database: str | None = None) -> str:
    url = urllib.parse.urlsplit(dsn)
    netloc = f"{user}:{urllib.parse.quote(password, safe='')}@{url.netloc.rpartition('@')[2]}"
    path = f"/{database}" if database is not None else url.path
    return urllib.parse.urlunsplit(url._replace(netloc=netloc, path=path))


@pytest.fixture
def limited(installed: str, admin_dsn: str) -> Iterator[str]:
    """The DSN of a role that may hold one connection at a time (CONNECTION LIMIT 1): the
    server-side check and error are those of max_connections (53300, too many connections)."""

    async def may_create_roles() -> bool:
        pool = await db.get_pool(admin_dsn)
        found: bool = await pool.fetchval(
            "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"
        )
        return found

    if not runtime.run_sync(may_create_roles()):
        pytest.skip(
            "the test server's user may not create roles; set PGQ_NB_TEST_ADMIN_DSN to a "
            "superuser's DSN, or unset PGQ_NB_TEST_DSN to use the embedded server"
        )

    def drop() -> None:
        execute_sql(
            admin_dsn,
            f"""DO $$ BEGIN
                IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
                    DROP OWNED BY {ROLE}; DROP ROLE {ROLE};
                END IF; END $$""",
        )

    drop()
    execute_sql(
        admin_dsn,
        f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}' NOSUPERUSER CONNECTION LIMIT 1",
        f"GRANT CREATE ON DATABASE {_database(installed)} TO {ROLE}",
    )
    role_dsn = _with_login(installed, ROLE, PASSWORD)
    yield role_dsn
    runtime.run_sync(_close_pool(role_dsn))
    drop()


async def _close_pool(dsn: str) -> None:
    """Close the shared pool of ``dsn`` if one is open; the next get_pool opens a new one."""
    pool = db._pools.pop(dsn, None)
    if pool is not None:
        await pool.close()


def _database(dsn: str) -> str:
    async def run() -> str:
        pool = await db.get_pool(dsn)
        name: str = await pool.fetchval("SELECT current_database()")
        return name

    return runtime.run_sync(run())


class _Slot:
    """The role's one connection, held until released."""

    def __init__(self, dsn: str) -> None:
        self.conn: asyncpg.Connection = runtime.run_sync(asyncpg.connect(dsn))

    def release(self) -> None:
        if not self.conn.is_closed():
            runtime.run_sync(self.conn.close())


def _in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _retry_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "pgq_nb" and r.levelno == logging.WARNING and "retrying in" in r.getMessage()
    ]


def test_connect_waits_for_a_free_slot_then_works(
    limited: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, logger="pgq_nb")
    monkeypatch.setattr(db, "CONNECT_RETRY_SECONDS", 600.0)  # never the limit here
    slot = _Slot(limited)
    try:
        thread, outcome = _in_thread(lambda: pgq_nb.connect(limited, schema=SCHEMA))
        wait_until(
            lambda: len(_retry_warnings(caplog)) >= 2 or outcome, WAIT, "connect() to retry twice"
        )
        assert thread.is_alive() and not outcome, outcome
    finally:
        slot.release()
    thread.join(WAIT)
    assert not thread.is_alive(), "connect() did not finish once the slot was free"
    assert "error" not in outcome, outcome.get("error")
    q: pgq_nb.Queue = outcome["value"]
    assert q.counts() == []
    warning = _retry_warnings(caplog)[0]
    assert "opening the connection pool: cannot connect to Postgres" in warning
    assert "TooManyConnectionsError" in warning
    assert PASSWORD not in warning


def test_connect_gives_up_with_what_to_do(
    limited: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, logger="pgq_nb")
    monkeypatch.setattr(db, "CONNECT_RETRY_SECONDS", 1.5)
    slot = _Slot(limited)
    try:
        with pytest.raises(pgq_nb.DatabaseUnavailableError) as err:
            pgq_nb.connect(limited, schema=SCHEMA)
    finally:
        slot.release()
    message = str(err.value)
    assert "has no free connection slot" in message
    assert "TooManyConnectionsError" in message
    for advice in ("raise max_connections", "lower the pool sizes", "stop idle clients"):
        assert advice in message
    assert PASSWORD not in message
    assert _retry_warnings(caplog), "no warning said it was retrying"


def test_connect_one_waits_too_and_can_be_told_not_to(
    limited: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pgq_nb")
    slot = _Slot(limited)
    try:
        with pytest.raises(pgq_nb.DatabaseUnavailableError, match="no free connection slot"):
            runtime.run_sync(db.connect_one(limited, retry_for=0))
        assert _retry_warnings(caplog) == []  # one attempt only

        thread, outcome = _in_thread(lambda: runtime.run_sync(db.connect_one(limited)))
        wait_until(lambda: _retry_warnings(caplog) or outcome, WAIT, "connect_one() to retry")
        assert thread.is_alive() and not outcome, outcome
    finally:
        slot.release()
    thread.join(WAIT)
    assert "error" not in outcome, outcome.get("error")
    conn: asyncpg.Connection = outcome["value"]
    assert runtime.run_sync(conn.fetchval("SELECT 1")) == 1
    runtime.run_sync(conn.close())


def test_a_wrong_password_or_database_is_not_retried(
    limited: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With the default deadline (a minute): an error at once, and no retry warning."""
    caplog.set_level(logging.WARNING, logger="pgq_nb")
    wrong_password = _with_login(limited, ROLE, "not-the-password")
    with pytest.raises(pgq_nb.DatabaseUnavailableError, match="refused the connection"):
        pgq_nb.connect(wrong_password, schema=SCHEMA)
    no_database = _with_login(limited, ROLE, PASSWORD, database="pgq_nb_no_such_database")
    with pytest.raises(pgq_nb.DatabaseUnavailableError, match="refused the connection"):
        runtime.run_sync(db.connect_one(no_database))
    assert _retry_warnings(caplog) == []


def test_connect_waits_for_a_server_that_restarts(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that is down (connection refused, or its socket gone) and comes back: the
    connect() that started meanwhile waits for it instead of failing."""
    from pgq_nb.embedded import temporary_home

    caplog.set_level(logging.WARNING, logger="pgq_nb")
    monkeypatch.setattr(db, "CONNECT_RETRY_SECONDS", 600.0)
    with temporary_home() as home:
        _restart_while_connecting(home, caplog)


def _restart_while_connecting(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    from pgq_nb.embedded import start_child_for_tests

    dsn, server = start_child_for_tests(home)
    server.terminate()
    server.wait(timeout=WAIT)
    thread = None
    try:
        thread, outcome = _in_thread(lambda: pgq_nb.connect(dsn, schema=SCHEMA))
        wait_until(lambda: _retry_warnings(caplog) or outcome, WAIT, "connect() to retry")
        assert thread.is_alive() and not outcome, outcome
        again, server = start_child_for_tests(home)
        assert again == dsn, "the restarted server moved; this test needs the same address"
        thread.join(WAIT)
        assert not thread.is_alive(), "connect() did not finish once the server was back"
        assert "error" not in outcome, outcome.get("error")
        assert outcome["value"].counts() == []
    finally:
        runtime.run_sync(_close_pool(dsn))
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=WAIT)


def test_which_failures_pass() -> None:
    passing: list[BaseException] = [
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        ConnectionRefusedError(111, "Connection refused"),
        FileNotFoundError(2, "No such file or directory"),
        TimeoutError(),
    ]
    final: list[BaseException] = [
        asyncpg.InvalidPasswordError("password authentication failed"),
        asyncpg.InvalidCatalogNameError('database "x" does not exist'),
        asyncpg.InvalidAuthorizationSpecificationError('role "x" does not exist'),
        ValueError("invalid DSN"),
    ]
    assert all(db._passes(e) for e in passing)
    assert not any(db._passes(e) for e in final)
    starting = db._gave_up("postgresql://u:secret@db:5432/app", passing[1], 7, 60.0)
    assert "starting up" in starting and "7 attempts in 60 s" in starting
    assert "secret" not in starting
