"""Crashes and outages: workers killed at random, a poison pill, Postgres restarted abruptly.

Every job must end in history exactly once, as succeeded; nothing lost, nothing doubled.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import pgq_nb
from pgq_nb import runtime
from pgq_nb.embedded import EmbeddedServer, temporary_home
from tests.conftest import SCHEMA, start_worker_process, stop_processes


def _history(q: pgq_nb.Queue) -> tuple[int, int, int]:
    async def run() -> tuple[int, int, int]:
        row = await q.aio.pool.fetchrow(
            f"SELECT count(*) AS n, count(DISTINCT id) AS d, "
            f"count(*) FILTER (WHERE status = 'succeeded') AS ok FROM {q.schema}.history"
        )
        return row["n"], row["d"], row["ok"]

    return runtime.run_sync(run())


def test_random_sigkills_lose_and_double_nothing(q: pgq_nb.Queue, installed: str) -> None:
    q.entrypoint("work")(lambda job: None)
    total = 5000
    q.enqueue(["work"] * total, list(range(total)), 0)
    rng = random.Random(7)

    def spawn() -> subprocess.Popen[bytes]:
        return start_worker_process(installed, "chaos_app:q", "--concurrency", "16")

    procs = [spawn() for _ in range(4)]
    kills = 0
    try:
        deadline = time.monotonic() + 240
        while _history(q)[0] < total and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.6, 1.4))
            victim = rng.randrange(len(procs))
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait(timeout=10)
            procs[victim] = spawn()
            kills += 1
    finally:
        stop_processes(procs)
    n, distinct, ok = _history(q)
    assert (n, distinct, ok) == (total, total, total), f"after {kills} kills"
    assert kills >= 3


def test_poison_pill_ends_failed_after_max_attempts(q: pgq_nb.Queue, installed: str) -> None:
    q.entrypoint("poison")(lambda job: None)
    job_id = q.enqueue("poison")
    deadline = time.monotonic() + 120
    restarts = 0
    while q.get_job(job_id).status is not pgq_nb.JobStatus.FAILED:
        assert time.monotonic() < deadline, "the poison pill was never given up"
        proc = start_worker_process(installed, "chaos_app:q")
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)  # it dies running the job, or lives on once it failed
        stop_processes([proc])
        restarts += 1
    info = q.get_job(job_id)
    assert info.attempts == 3
    assert info.error is not None
    assert "no attempts left" in info.error
    assert len(info.errors or []) == 3


@pytest.fixture
def own_server() -> Iterator[EmbeddedServer]:
    """A server of this test's own, since the test restarts it."""
    with temporary_home() as home:
        server = EmbeddedServer(home)
        server.ensure_running()
        yield server
        server.stop()


def test_postgres_restarted_abruptly_mid_run(own_server: EmbeddedServer, tmp_path: Path) -> None:
    dsn = own_server.ensure_running()
    q = pgq_nb.connect(dsn, schema=SCHEMA, heartbeat_interval=0.5, heartbeat_timeout=3.0)
    q.entrypoint("work")(lambda job: None)
    total = 3000
    q.enqueue(["work"] * total, list(range(total)), 0)
    procs = [start_worker_process(dsn, "chaos_app:q", "--concurrency", "16") for _ in range(4)]
    try:
        deadline = time.monotonic() + 60
        while _history(q)[0] < total // 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = own_server.status().pid
        assert pid is not None
        os.kill(pid, signal.SIGQUIT)  # immediate shutdown, as pg_ctl restart -m immediate
        time.sleep(1.0)
        own_server.ensure_running()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if _history(q)[0] >= total:
                    break
            except (pgq_nb.PgqError, OSError) as exc:  # the pool reconnects
                del exc
            time.sleep(0.2)
    finally:
        stop_processes(procs)
    assert _history(q) == (total, total, total)
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
