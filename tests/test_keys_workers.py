"""Per-key limits across worker processes (issue #21, item 3): `pgq-nb worker` processes
running tests/apps/keys_app.py, each run's start and end written to a table by the database's
clock; two runs of one key must never overlap, and a SIGKILLed worker's key comes back."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

import pgq_nb
from pgq_nb import runtime
from tests.conftest import SCHEMA, execute_sql, start_worker_process, stop_processes, wait_until

RUNS = f"{SCHEMA}_keys.runs"


@pytest.fixture
def runs_table(q: pgq_nb.Queue) -> str:
    execute_sql(
        q.aio.dsn,
        f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}_keys",
        f"DROP TABLE IF EXISTS {RUNS}",
        f"CREATE TABLE {RUNS} (job_id bigint, key text, pid int, attempt int, "
        "started timestamptz, ended timestamptz)",
    )
    return RUNS


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    stop_processes(started)


def _fetch(q: pgq_nb.Queue, sql: str) -> list[Any]:
    return list(runtime.run_sync(q.aio.pool.fetch(sql.replace("S.", f"{SCHEMA}."))))


def _value(q: pgq_nb.Queue, sql: str) -> Any:
    return _fetch(q, sql)[0][0]


def _start(q: pgq_nb.Queue, procs: list[subprocess.Popen[bytes]], n: int) -> None:
    for _ in range(n):
        procs.append(
            start_worker_process(q.aio.dsn, "keys_app:q", "--concurrency", "4", KEYS_RUN_TABLE=RUNS)
        )


def _register(q: pgq_nb.Queue) -> None:
    q.entrypoint("keyed", concurrency_key="customer", max_per_key=1)(lambda job: None)


OVERLAPS = f"""
    SELECT count(*) FROM {RUNS} AS a JOIN {RUNS} AS b
        ON a.key = b.key AND (a.job_id, a.attempt) < (b.job_id, b.attempt)
       AND a.started < coalesce(b.ended, 'infinity') AND b.started < coalesce(a.ended, 'infinity')
"""


def test_three_worker_processes_never_run_two_jobs_of_one_key_at_once(
    q: pgq_nb.Queue, runs_table: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    _register(q)
    _start(q, procs, 3)
    wait_until(lambda: len(q.worker_list()) == 3, 90, "the three workers to register")
    # key by key (10 of c0, then 10 of c1...): without the limit a claim takes several of one
    q.enqueue(["keyed"] * 200, [{"customer": f"c{i // 10}"} for i in range(200)])
    wait_until(
        lambda: _value(q, "SELECT count(*) FROM S.history") == 200,
        180,
        "the 200 jobs to finish",
    )
    assert _value(q, "SELECT count(*) FROM S.history WHERE status = 'succeeded'") == 200
    assert _value(q, f"SELECT count(*) FROM {RUNS}") == 200  # each ran exactly once
    assert _value(q, f"SELECT count(DISTINCT job_id) FROM {RUNS}") == 200
    assert _value(q, f"SELECT count(DISTINCT pid) FROM {RUNS}") == 3  # all three took part
    assert _value(q, OVERLAPS) == 0
    # keys ran side by side: the whole took far less than the sum of the runs
    assert (
        _value(
            q,
            f"SELECT count(*) FROM {RUNS} AS a JOIN {RUNS} AS b ON a.key <> b.key "
            "AND a.started < b.ended AND b.started < a.ended",
        )
        > 0
    )


def test_a_killed_workers_key_comes_back(
    q: pgq_nb.Queue, runs_table: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    _register(q)
    first = q.enqueue("keyed", {"customer": "k", "first": 600})  # its first run hangs
    second = q.enqueue("keyed", {"customer": "k"})
    _start(q, procs, 1)
    wait_until(
        lambda: _value(q, f"SELECT count(*) FROM {RUNS} WHERE job_id = {first}") == 1,
        90,
        "the first job to start",
    )
    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait(timeout=30)
    # while nobody has noticed the death, the dead worker's job still holds the key
    assert _value(q, f"SELECT count(*) FROM S.jobs WHERE id = {first} AND status = 'picked'") == 1
    _start(q, procs, 1)  # its heartbeat sweep reclaims the dead worker's job
    wait_until(
        lambda: _value(q, "SELECT count(*) FROM S.history WHERE status = 'succeeded'") == 2,
        120,
        "both jobs of the key to succeed",
    )
    assert _value(q, f"SELECT count(*) FROM {RUNS} WHERE job_id = {second}") == 1
    assert _value(q, f"SELECT attempts FROM S.history WHERE id = {first}") == 2
    assert _value(q, OVERLAPS) == 2  # the killed run (never ended) with each later one
    assert _value(q, f"{OVERLAPS} WHERE a.ended IS NOT NULL AND b.ended IS NOT NULL") == 0
