"""Separate worker processes on one Postgres: drain, crash recovery, graceful shutdown."""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
from pathlib import Path

import pgq_nb
from pgq_nb import runtime
from tests.conftest import (
    REPO,
    SCHEMA,
    start_worker_process,
    stop_processes,
    wait_until,
    worker_env,
)


def _history_count(q: pgq_nb.Queue) -> tuple[int, int]:
    async def run() -> tuple[int, int]:
        row = await q.aio.pool.fetchrow(
            f"SELECT count(*) AS n, count(DISTINCT id) AS d FROM {SCHEMA}.history"
        )
        return row["n"], row["d"]

    return runtime.run_sync(run())


def test_four_processes_drain_20000_jobs_each_exactly_once(
    q: pgq_nb.Queue, installed: str, tmp_path: Path
) -> None:
    q.entrypoint("noop")(lambda job: None)
    ids = q.enqueue(["noop"] * 20_000)
    procs = [
        start_worker_process(
            installed, "drain_app:q", "--concurrency", "16", RUN_LOG_DIR=str(tmp_path)
        )
        for _ in range(4)
    ]
    try:
        wait_until(lambda: _history_count(q)[0] >= 20_000, 240, "20,000 jobs in history")
    finally:
        stop_processes(procs)
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
    total, distinct = _history_count(q)
    assert total == distinct == 20_000
    assert set(q.statuses(ids).values()) == {pgq_nb.JobStatus.SUCCEEDED}

    runs: dict[int, list[tuple[float, float, int]]] = collections.defaultdict(list)
    for log in tmp_path.glob("runs-*.log"):
        for line in log.read_text().splitlines():
            job_id, start, end, pid = line.split()
            runs[int(job_id)].append((float(start), float(end), int(pid)))
    assert set(runs) == set(ids)
    assert all(len(r) == 1 for r in runs.values()), "a job ran twice"
    assert len({r[0][2] for r in runs.values()}) == 4, "every process took part"


def test_sigkilled_worker_job_is_reclaimed_and_finished(
    q: pgq_nb.Queue, installed: str, tmp_path: Path
) -> None:
    q.entrypoint("slow")(lambda job: None)
    job_id = q.enqueue("slow", {"seconds": 1.0})
    first = start_worker_process(installed, "drain_app:q", RUN_LOG_DIR=str(tmp_path))
    try:
        wait_until(lambda: any(tmp_path.glob(f"started-{job_id}-*")), 60, "the job to start")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        assert q.get_job(job_id).status is pgq_nb.JobStatus.PICKED
        second = start_worker_process(installed, "drain_app:q", RUN_LOG_DIR=str(tmp_path))
        try:
            # the dead worker's heartbeat goes stale (3 s in tests); the job runs again
            q.wait([job_id], timeout=60)
        finally:
            stop_processes([second])
    finally:
        if first.poll() is None:
            first.kill()
    info = q.get_job(job_id)
    assert info.status is pgq_nb.JobStatus.SUCCEEDED
    assert info.attempts == 2
    assert info.result == {"pid": second.pid, "attempt": 2}
    total, _ = _history_count(q)
    assert total == 1


def test_sigterm_lets_running_jobs_finish(q: pgq_nb.Queue, installed: str, tmp_path: Path) -> None:
    q.entrypoint("slow")(lambda job: None)
    job_id = q.enqueue("slow", {"seconds": 1.0})
    proc = start_worker_process(installed, "drain_app:q", RUN_LOG_DIR=str(tmp_path))
    try:
        wait_until(lambda: any(tmp_path.glob(f"started-{job_id}-*")), 60, "the job to start")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    info = q.get_job(job_id)
    assert info.status is pgq_nb.JobStatus.SUCCEEDED
    assert info.result == {"pid": proc.pid, "attempt": 1}
    assert q.worker_list() == []


def test_sigterm_after_grace_period_returns_the_job_to_the_queue(
    q: pgq_nb.Queue, installed: str, tmp_path: Path
) -> None:
    q.entrypoint("slow")(lambda job: None)
    job_id = q.enqueue("slow", {"seconds": 60})
    proc = start_worker_process(
        installed, "drain_app:q", "--grace-period", "0.5", RUN_LOG_DIR=str(tmp_path)
    )
    try:
        wait_until(lambda: any(tmp_path.glob(f"started-{job_id}-*")), 60, "the job to start")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    info = q.get_job(job_id)
    assert info.status is pgq_nb.JobStatus.QUEUED
    assert info.worker_id is None


def test_worker_cli_errors_are_clear(installed: str, tmp_path: Path) -> None:
    for target, message in [
        ("no_colon", "is not MODULE:ATTR"),
        ("missing_module_xyz:q", "cannot import module 'missing_module_xyz'"),
        ("drain_app:nothing", "not a pgq_nb Queue"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "pgq_nb.cli", "worker", target],
            env=worker_env(installed, RUN_LOG_DIR=str(tmp_path)),
            cwd=str(REPO),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, (target, done.stderr)
        assert message in done.stderr, done.stderr


def test_fan_in_of_2000_parents_across_four_processes(
    q: pgq_nb.Queue, installed: str, tmp_path: Path
) -> None:
    q.entrypoint("part")(lambda job: None)
    q.entrypoint("total")(lambda job: None)
    wf = q.workflow("fan_in")
    parts = wf.map("part", range(2000))
    wf.step("total", depends_on=parts)
    run = wf.submit()
    procs = [
        start_worker_process(
            installed, "drain_app:q", "--concurrency", "16", RUN_LOG_DIR=str(tmp_path)
        )
        for _ in range(4)
    ]
    try:
        assert run.wait(timeout=240, progress=False) == "succeeded"
    finally:
        stop_processes(procs)
    assert run.results()["total"] == {"sum": sum(range(2000)), "parents": 2000}
    assert len(list(tmp_path.glob("total-*"))) == 1, "the fan-in step ran more than once"
    steps = run.steps()
    child = next(s for s in steps if s["step_name"] == "total")
    last_parent = max(s["finished"] for s in steps if s["step_name"] == "part")
    assert child["attempts"] == 1
    assert child["started"] >= last_parent
