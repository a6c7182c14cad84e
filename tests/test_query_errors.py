"""A server gone since connect(): the next call says so, or (the embedded one) starts it again.

Real servers in temporary homes, really stopped (``pgq-nb db stop``, ``EmbeddedServer.stop``)
and started. Before (issue #16, item 6) every one of these calls raised the driver's error:
FileNotFoundError (the socket was gone), ConnectionRefusedError, AdminShutdownError.
"""

from __future__ import annotations

import inspect
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest

import pgq_nb
from pgq_nb import db, query_errors, runtime
from pgq_nb.embedded import EmbeddedServer, temporary_home
from pgq_nb.models import JobStatus
from pgq_nb.query_errors import Failure, classify, message, worth_retrying
from pgq_nb.queue import AsyncQueue
from pgq_nb.workflow_run import AsyncWorkflowRun
from tests.conftest import REPO, wait_until

pytestmark = pytest.mark.timeout(180)

WAIT = 60.0


async def _drop_pools(dsns: list[str]) -> None:
    for dsn in dsns:
        pool = db._pools.pop(dsn, None)
        if pool is not None:
            pool.terminate()


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The embedded server's home for ``pgq_nb.connect()`` without a DSN: a temporary one
    (PGQ_NB_HOME), its server stopped and its pools dropped afterwards."""
    for name in ("PGQ_NB_DSN", "PGQ_NB_SCHEMA", "PGQ_NB_MAX_CONNECTIONS"):
        monkeypatch.delenv(name, raising=False)
    with temporary_home() as path:
        monkeypatch.setenv("PGQ_NB_HOME", str(path))
        try:
            yield path
        finally:
            server = EmbeddedServer(path)
            if server.status().initialised:
                dsns = [server.dsn(), server.dsn(tcp=True)]
                runtime.run_sync(_drop_pools(dsns))


def _queue(dsn: str | None = None) -> pgq_nb.Queue:
    q = pgq_nb.connect(dsn)

    @q.entrypoint("score")
    def score(job: pgq_nb.Job) -> None:
        return None

    return q


def _db_stop(home: Path) -> None:
    """``pgq-nb db stop``, as a user runs it."""
    env = dict(os.environ, PGQ_NB_HOME=str(home))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "pgq_nb.cli", "db", "stop"],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert done.returncode == 0 and "stopped" in done.stdout, done.stderr


def test_the_embedded_server_stopped_between_two_calls_is_started_again(home: Path) -> None:
    q = _queue()
    server = EmbeddedServer(home)
    first = q.enqueue("score", {"n": 1})
    _db_stop(home)
    assert not server.status().running
    assert q.get_job(first).status is JobStatus.QUEUED  # a read: started again, run once more
    assert server.status().running
    assert server.stop()
    # a write that reached no server (its connection could not be opened): run once more
    second = q.enqueue("score", {"n": 2})
    assert server.status().running
    assert q.statuses([first, second]) == {first: JobStatus.QUEUED, second: JobStatus.QUEUED}
    assert q.counts() == [("score", "queued", 2)]


def test_a_workflow_after_a_stop_starts_the_embedded_server_again(home: Path) -> None:
    q = _queue()
    server = EmbeddedServer(home)
    assert server.stop()
    wf = q.workflow("etl")
    wf.step("score", {"n": 1})
    run = wf.submit()  # nothing of it reached a server: started again, submitted once
    assert server.status().running
    assert server.stop()
    assert run.state() == "running"
    assert run.counts()["queued"] == 1
    assert q.counts() == [("score", "queued", 1)]


def test_a_queue_on_a_dsn_whose_server_stopped_says_what_to_do(home: Path) -> None:
    pgq_nb.connect()  # starts the server in the temporary home
    server = EmbeddedServer(home)
    dsn = server.dsn(tcp=True)
    q = _queue(dsn)
    q.enqueue("score", {"n": 1})
    assert server.stop()
    with pytest.raises(pgq_nb.DatabaseUnavailableError) as read:
        q.counts()
    text = str(read.value)
    port = server.status().port
    assert f"host '127.0.0.1' port {port}" in text
    assert "ConnectionRefusedError" in text and "pgq-nb db start" in text
    assert (home / "app_secret").read_text().strip() not in text
    with pytest.raises(pgq_nb.DatabaseUnavailableError, match="cannot reach Postgres"):
        q.enqueue("score", {"n": 2})
    assert not server.status().running  # a DSN's server is not pgq_nb's to start
    server.start()
    # the pool reconnects by itself; the refused write left nothing behind
    assert q.counts() == [("score", "queued", 1)]


def test_a_pool_whose_server_stopped_logs_nothing_while_idle(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """asyncpg 0.32 keeps a pool's floor of connections (min_size) with a background task that,
    while the server is down, logged "Failed to restore the pool connection floor" and a
    traceback every few seconds, for ever: in a notebook after `pgq-nb db stop`, under
    whichever cell ran next. pgq_nb's pools keep no floor."""
    pgq_nb.connect()
    server = EmbeddedServer(home)
    q = _queue(server.dsn(tcp=True))
    q.enqueue("score", {"n": 1})
    assert server.stop()
    caplog.set_level(logging.DEBUG, logger="asyncpg")
    time.sleep(4.0)  # asyncpg retried the floor after 1 s, then 2 s, ...
    assert not [r for r in caplog.records if r.name.startswith("asyncpg")], caplog.text
    server.start()
    assert q.counts() == [("score", "queued", 1)]


def test_a_server_restarted_under_a_live_pool(home: Path) -> None:
    pgq_nb.connect()
    server = EmbeddedServer(home)
    q = _queue(server.dsn(tcp=True))
    with ThreadPoolExecutor(4) as threads:  # several connections in the pool
        assert list(threads.map(lambda _: q.counts(), range(8))) == [[]] * 8
    assert server.stop()
    server.start()
    assert q.counts() == []
    assert q.enqueue("score", {"n": 1}) > 0


def test_a_wait_across_a_restart_of_the_embedded_server(home: Path) -> None:
    """q.wait() polls while the server is stopped and started again: it waits on."""
    q = _queue()
    server = EmbeddedServer(home)
    job = q.enqueue("score", {"n": 1})
    with ThreadPoolExecutor(1) as threads:
        waiting = threads.submit(q.wait, job, timeout=WAIT)
        assert server.stop()
        wait_until(
            lambda: server.status().running or waiting.done(), WAIT, "the wait to start it again"
        )
        server.start()
        assert q.cancel(job) == {job: "cancelled"}
        assert waiting.result(WAIT) == {job: "cancelled"}


def _count(conn: asyncpg.Connection, query: str) -> int:
    n: int = runtime.run_sync(conn.fetchval(query))
    return n


#: A trigger that holds every insert into jobs under way (with the table locked, so reads of it
#: wait too) until the server ends it: an enqueue that cannot commit before the stop.
_STALL = """
CREATE FUNCTION {schema}.stall() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE {schema}.jobs IN ACCESS EXCLUSIVE MODE;
    PERFORM pg_sleep(600);
    RETURN NEW;
END $$;
CREATE TRIGGER stall BEFORE INSERT ON {schema}.jobs
    FOR EACH ROW EXECUTE FUNCTION {schema}.stall();
"""


def test_calls_in_flight_when_the_embedded_server_stops(home: Path) -> None:
    """A read under way is run once more on the server started again; a write under way may
    have been done, so it is never run again: it says so."""
    q = _queue()
    server = EmbeddedServer(home)
    q.enqueue("score", {"n": 1})
    watcher: asyncpg.Connection = runtime.run_sync(asyncpg.connect(server.dsn()))
    try:
        runtime.run_sync(watcher.execute(_STALL.format(schema=q.schema)))
        with ThreadPoolExecutor(2) as threads:
            write = threads.submit(q.enqueue, "score", {"n": 2})
            stalled = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
            wait_until(lambda: _count(watcher, stalled) == 1, WAIT, "the enqueue to stall")
            read = threads.submit(q.counts)
            waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted"
            wait_until(lambda: _count(watcher, waiting) >= 1, WAIT, "the read to wait")
            assert server.stop()
            assert read.result(WAIT) == [("score", "queued", 1)]
            with pytest.raises(pgq_nb.DatabaseUnavailableError) as lost:
                write.result(WAIT)
    finally:
        runtime.run_sync(watcher.close(timeout=5))
    assert "may or may not have been done" in str(lost.value)
    assert "during enqueue()" in str(lost.value)
    assert server.status().running
    assert q.counts() == [("score", "queued", 1)]  # the lost write was not run again


# -- the decisions, without a server ----------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "failure"),
    [
        (FileNotFoundError(2, "No such file or directory"), Failure.DOWN),
        (ConnectionRefusedError(111, "Connect call failed"), Failure.DOWN),
        (asyncpg.CannotConnectNowError("the database system is shutting down"), Failure.DOWN),
        (ConnectionResetError(104, "Connection reset by peer"), Failure.LOST),
        (
            asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
            Failure.LOST,
        ),
        (asyncpg.AdminShutdownError("terminating connection"), Failure.LOST),
        (
            asyncpg.InterfaceError("cannot call Connection.fetch(): connection is closed"),
            Failure.LOST,
        ),
        (asyncpg.exceptions.InternalClientError("cannot switch to state 12"), Failure.LOST),
        (asyncpg.TooManyConnectionsError("sorry, too many clients already"), Failure.FULL),
        (asyncpg.InvalidPasswordError("password authentication failed"), Failure.LOGIN),
        (asyncpg.InvalidCatalogNameError('database "x" does not exist'), Failure.LOGIN),
        # not connection failures: q.wait's deadline, the caller's mistakes, query errors
        (TimeoutError("3 of 3 jobs had not finished"), None),
        (asyncpg.DataError("invalid input for query argument $1"), None),
        (
            asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
            None,
        ),
        (asyncpg.QueryCanceledError("canceling statement due to statement timeout"), None),
        (asyncpg.UniqueViolationError("duplicate key"), None),
        (ValueError("bad"), None),
    ],
)
def test_which_errors_are_connection_failures(exc: BaseException, failure: Failure | None) -> None:
    assert classify(exc) is failure


@pytest.mark.parametrize(
    ("failure", "embedded", "retry_safe", "acquired", "retried"),
    [
        # the server is not there: only the embedded one can be started
        (Failure.DOWN, True, False, False, True),  # a write that reached nothing
        (Failure.DOWN, True, False, True, False),  # a write that may have committed before
        (Failure.DOWN, True, True, True, True),  # a read
        (Failure.DOWN, False, True, False, False),  # a DSN's server: not ours to start
        # a connection broke: only a call that may run twice runs again
        (Failure.LOST, True, True, True, True),
        (Failure.LOST, False, True, True, True),  # fresh connections, once
        (Failure.LOST, True, False, True, False),  # its COMMIT may have been done
        (Failure.LOST, False, False, False, False),
        (Failure.FULL, True, True, False, False),
        (Failure.LOGIN, True, True, False, False),
    ],
)
def test_when_a_call_runs_once_more(
    failure: Failure, embedded: bool, retry_safe: bool, acquired: bool, retried: bool
) -> None:
    assert (
        worth_retrying(failure, embedded=embedded, retry_safe=retry_safe, acquired=acquired)
        is retried
    )


def test_messages_say_what_to_do_and_keep_the_password() -> None:
    dsn = "postgresql://app:s3cret@db.example:6543/jobs"
    refused = ConnectionRefusedError(111, "Connect call failed")
    external = message(Failure.DOWN, refused, dsn=dsn, what="stats()", embedded=False)
    assert "host 'db.example' port 6543 database 'jobs'" in external
    assert "Check that the server is running" in external and "s3cret" not in external
    embedded = message(Failure.DOWN, refused, dsn=dsn, what="stats()", embedded=True)
    assert "started again by the next call" in embedded and "pgq-nb db start" in embedded
    lost = asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")
    write = message(Failure.LOST, lost, dsn=dsn, what="enqueue()", embedded=False, sent=True)
    assert "may or may not have been done" in write and "q.get_job" in write
    twice = message(Failure.LOST, lost, dsn=dsn, what="jobs()", embedded=False, twice=True)
    assert "again when tried once more" in twice
    full = asyncpg.TooManyConnectionsError("sorry, too many clients already")
    assert "max_connections" in message(Failure.FULL, full, dsn=dsn, what="x()", embedded=True)


def test_every_public_call_is_guarded_and_the_retry_table_names_real_calls() -> None:
    guarded_code = query_errors._guarded("x", AsyncQueue.counts).__code__
    names: set[str] = set()
    for cls in (AsyncQueue, AsyncWorkflowRun):
        for name, member in inspect.getmembers(cls, inspect.iscoroutinefunction):
            if name.startswith("_"):
                continue
            names.add(name)
            guarded = member.__code__ is guarded_code
            assert guarded is (name not in query_errors.UNGUARDED), f"{cls.__name__}.{name}"
    assert not query_errors.RETRY_SAFE - names, "names no public call"
    assert not query_errors.WRITES - names, "names no public call"
    decided = query_errors.RETRY_SAFE | query_errors.WRITES | query_errors.UNGUARDED
    assert not names - decided, "say whether these may run twice: RETRY_SAFE or WRITES"
    assert not query_errors.RETRY_SAFE & query_errors.WRITES
    assert not query_errors.UNGUARDED - names, "names no public call"
