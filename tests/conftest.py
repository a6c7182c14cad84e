"""Test fixtures: one real Postgres for the whole session, a clean pgq_nb schema per test.

The server is the embedded one, started as a direct child of pytest (fsync off, and it dies
with pytest), unless PGQ_NB_TEST_DSN names an external server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

import pgq_nb
from pgq_nb import db, runtime, schema_install

SCHEMA = os.environ.get("PGQ_NB_TEST_SCHEMA", "pgq_nb_test")
REPO = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"


@pytest.fixture(scope="session")
def server_dsns() -> Iterator[tuple[str, str]]:
    """The application's DSN and a superuser's (for tests that create roles): the embedded
    server's two, or PGQ_NB_TEST_DSN (and PGQ_NB_TEST_ADMIN_DSN, by default the same)."""
    external = os.environ.get("PGQ_NB_TEST_DSN")
    if external:
        yield external, os.environ.get("PGQ_NB_TEST_ADMIN_DSN", external)
        return
    from pgq_nb.embedded import EmbeddedServer, start_child_for_tests, temporary_home

    with temporary_home() as home:  # as root, tmp_path is out of the postgres user's reach
        url, process = start_child_for_tests(home)
        yield url, EmbeddedServer(home).admin_dsn()
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def dsn(server_dsns: tuple[str, str]) -> str:
    """The DSN the application gets (on the embedded server: not a superuser)."""
    return server_dsns[0]


@pytest.fixture(scope="session")
def admin_dsn(server_dsns: tuple[str, str]) -> str:
    """A superuser's DSN on the same server, for test set-up only."""
    return server_dsns[1]


def _truncate(q: pgq_nb.Queue) -> None:
    async def run() -> None:
        await q.aio.pool.execute(
            f"TRUNCATE {SCHEMA}.jobs, {SCHEMA}.history, {SCHEMA}.workers, "
            f"{SCHEMA}.entrypoints, {SCHEMA}.finished_counts, {SCHEMA}.job_deps, "
            f"{SCHEMA}.workflows, {SCHEMA}.schedules, {SCHEMA}.schedule_ticks, "
            f"{SCHEMA}.entrypoint_slots, {SCHEMA}.rate_buckets, {SCHEMA}.dedupe_windows, "
            f"{SCHEMA}.payload_dtypes, "
            f"{SCHEMA}.retention_policies, "
            f"{SCHEMA}.notebooks, {SCHEMA}.notebook_outputs, "
            f"{SCHEMA}.workflow_maps, {SCHEMA}.workflow_map_sources, {SCHEMA}.workflow_map_deps "
            "RESTART IDENTITY"
        )

    runtime.run_sync(run())


@pytest.fixture(scope="session")
def installed(dsn: str) -> str:
    """A fresh test schema, installed once per session."""

    async def reinstall() -> None:
        pool = await db.get_pool(dsn)
        await schema_install.uninstall(pool, SCHEMA)
        await schema_install.install(pool, SCHEMA)

    runtime.run_sync(reinstall())
    return dsn


@pytest.fixture
def q(installed: str) -> pgq_nb.Queue:
    """A fresh queue on an empty schema, with quick heartbeats."""
    queue = pgq_nb.connect(
        installed,
        schema=SCHEMA,
        heartbeat_interval=0.5,
        heartbeat_timeout=3.0,
        poll_interval=0.2,
    )
    _truncate(queue)
    return queue


def worker_env(dsn: str, **extra: str) -> dict[str, str]:
    """Environment for a `pgq-nb worker` subprocess running one of tests/apps."""
    env = dict(os.environ)
    env.update(
        PGQ_NB_DSN=dsn,
        PGQ_NB_SCHEMA=SCHEMA,
        PGQ_NB_HEARTBEAT_INTERVAL="0.5",
        PGQ_NB_HEARTBEAT_TIMEOUT="3",
        PGQ_NB_POLL_INTERVAL="0.2",
        PYTHONPATH=os.pathsep.join([str(APPS), env.get("PYTHONPATH", "")]),
    )
    env.update(extra)
    return env


def start_worker_process(dsn: str, target: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """`pgq-nb worker TARGET` in a process of its own."""
    return subprocess.Popen(_worker_command(target, args), env=worker_env(dsn, **env), cwd=REPO)


def start_worker_writing(
    output: Path, dsn: str, target: str, *args: str, log_level: str = "WARNING", **env: str
) -> subprocess.Popen[bytes]:
    """Like :func:`start_worker_process`, its stdout and stderr appended to ``output``."""
    with output.open("ab") as sink:
        return subprocess.Popen(
            _worker_command(target, args, log_level),
            env=worker_env(dsn, **env),
            cwd=REPO,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def _worker_command(target: str, args: tuple[str, ...], log_level: str = "WARNING") -> list[str]:
    return [sys.executable, "-m", "pgq_nb.cli", "--log-level", log_level, "worker", target, *args]


def stop_processes(procs: list[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    """SIGTERM every worker still running (a graceful stop), then wait; kill stragglers."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def unavailable(reason: str, *, module_level: bool = False) -> NoReturn:
    """Skip for want of an optional part (``reason`` says how to install it), the whole module
    with ``module_level``; under CI=true, whose set-up installs every part the tests use, fail
    instead: a missing part there is a broken set-up, not a reason to test less."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true, so this fails instead of skipping", pytrace=False)
    pytest.skip(reason, allow_module_level=module_level)


DASK_MISSING = "dask.distributed is not installed ({}): pip install 'pgq_nb[dask]'"


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 0.1 s until it is true; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def execute_sql(dsn: str, *statements: str) -> None:
    """Run statements on the queue's pool for ``dsn`` (test set-up)."""

    async def run() -> None:
        pool = await db.get_pool(dsn)
        for statement in statements:
            await pool.execute(statement)

    runtime.run_sync(run())
