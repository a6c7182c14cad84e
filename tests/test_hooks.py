"""Hooks (``@q.on(event)``): which events fire, once per attempt, after the outcome is
recorded; a hook that raises or blocks changes no job's outcome and stalls no worker."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import pgq_nb
from pgq_nb import hooks
from pgq_nb.hooks import EVENTS, Outcome
from tests.conftest import (
    APPS,
    REPO,
    start_worker_process,
    stop_processes,
    wait_until,
    worker_env,
)

FAST_RETRY = pgq_nb.RetryPolicy(max_attempts=2, base_delay=0.0, jitter=0.0)


def test_bad_event_is_refused_with_the_known_ones(q: pgq_nb.Queue) -> None:
    with pytest.raises(pgq_nb.InvalidInputError, match=r"did you mean 'failed'"):
        q.on("fail")
    with pytest.raises(pgq_nb.InvalidInputError, match=r"one of 'started'"):
        q.on(3)  # type: ignore[arg-type]
    with pytest.raises(pgq_nb.InvalidInputError, match="must decorate a function"):
        q.on("dead")(None)  # type: ignore[type-var]


@pytest.mark.parametrize(
    ("status", "events"),
    [
        ("succeeded", ("succeeded",)),
        ("retrying", ("failed", "retried")),
        ("failed", ("failed", "dead")),
    ],
)
def test_events_of_an_outcome(status: str, events: tuple[str, ...]) -> None:
    assert hooks._events(status) == events


def test_each_event_fires_once_per_attempt_after_it_is_recorded(q: pgq_nb.Queue) -> None:
    seen: list[tuple[str, int, int, str, str | None]] = []
    truth: list[tuple[str, str]] = []
    lock = threading.Lock()

    @q.entrypoint("flaky", retry=FAST_RETRY)
    def flaky(job: pgq_nb.Job) -> dict[str, int]:
        if job.attempts == 1:
            raise ValueError("first try fails")
        return {"n": job.attempts}

    @q.entrypoint("doomed", retry=FAST_RETRY)
    async def doomed(job: pgq_nb.Job) -> None:
        raise RuntimeError(f"attempt {job.attempts} fails")

    def watcher(event: str) -> Any:
        def hook(job: pgq_nb.Job, outcome: Outcome) -> None:
            with lock:
                seen.append((event, job.id, outcome.attempt, outcome.status, outcome.error))
            if event in ("succeeded", "dead"):  # recorded before the hook runs
                truth.append((event, str(q.get_job(job.id).status)))
            if event == "succeeded":
                assert outcome.result == {"n": 2}
                assert outcome.duration is not None
                assert outcome.duration >= 0

        return hook

    for event in EVENTS:
        q.on(event)(watcher(event))

    ok = q.enqueue("flaky")
    bad = q.enqueue("doomed")
    q.run_until_idle()
    wait_until(lambda: len(truth) == 2, 30, "the succeeded and dead hooks")
    with lock:
        of_ok = [(e, a, s) for e, j, a, s, _ in seen if j == ok]
        of_bad = [(e, a, s) for e, j, a, s, _ in seen if j == bad]
        errors = {e: err for e, j, _, _, err in seen if j == bad and err}
    assert sorted(of_ok) == sorted(
        [
            ("started", 1, "running"),
            ("failed", 1, "retrying"),
            ("retried", 1, "retrying"),
            ("started", 2, "running"),
            ("succeeded", 2, "succeeded"),
        ]
    )
    assert sorted(of_bad) == sorted(
        [
            ("started", 1, "running"),
            ("failed", 1, "retrying"),
            ("retried", 1, "retrying"),
            ("started", 2, "running"),
            ("failed", 2, "failed"),
            ("dead", 2, "failed"),
        ]
    )
    assert errors["dead"] == "RuntimeError: attempt 2 fails"
    assert sorted(truth) == [("dead", "failed"), ("succeeded", "succeeded")]


def test_a_hook_that_raises_or_blocks_changes_nothing(
    q: pgq_nb.Queue, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hooks, "ASYNC_TIMEOUT", 0.5)
    blocked: list[int] = []
    cancelled: list[int] = []

    @q.entrypoint("work", retry=FAST_RETRY)
    async def work(job: pgq_nb.Job) -> int:
        if job.data == "fail":
            raise ValueError("the job's own failure")
        return int(job.data)

    @q.on("started")
    def broken(job: pgq_nb.Job, outcome: Outcome) -> None:
        raise RuntimeError("a broken alert")

    @q.on("succeeded")
    async def also_broken(job: pgq_nb.Job, outcome: Outcome) -> None:
        raise KeyError("a broken async alert")

    @q.on("succeeded")
    def blocks(job: pgq_nb.Job, outcome: Outcome) -> None:
        time.sleep(1.0)  # a slow webhook
        blocked.append(job.id)

    @q.on("dead")
    async def hangs(job: pgq_nb.Job, outcome: Outcome) -> None:
        try:
            await asyncio.sleep(60)  # an async webhook that never answers: cut at the timeout
        except asyncio.CancelledError:
            cancelled.append(job.id)
            raise

    caplog.set_level(logging.WARNING, logger="pgq_nb.hooks")
    ids = q.enqueue(["work"] * 6, [1, 2, 3, 4, 5, "fail"])
    stats = q.run_until_idle()
    assert (stats.succeeded, stats.failed, stats.retried) == (5, 1, 1)
    statuses = {i: q.get_job(i) for i in ids}
    assert [str(statuses[i].status) for i in ids] == ["succeeded"] * 5 + ["failed"]
    assert [statuses[i].result for i in ids[:5]] == [1, 2, 3, 4, 5]
    wait_until(lambda: len(blocked) == 5, 30, "the blocking hook to finish its calls")
    wait_until(lambda: cancelled == [ids[5]], 30, "the hanging async hook to be cancelled")
    logged = [r.getMessage() for r in caplog.records if r.name == "pgq_nb.hooks"]
    # once per hook (not per job) within LOG_EVERY: broken, also_broken, hangs
    assert len(logged) == 3, logged
    assert any("'started' hook" in m and "a broken alert" in m for m in logged)
    assert any("also_broken" in m and "KeyError" in m for m in logged)
    assert any("hangs" in m and "0.5 s" in m for m in logged)
    assert all("the job's outcome stands" in m for m in logged)
    # the worker goes on: a later job runs and its hooks fire again
    later = q.enqueue("work", 7)
    q.run_until_idle()
    assert q.get_job(later).result == 7
    wait_until(lambda: later in blocked, 30, "the hook of a job run after the failures")


def test_process_worker_runs_the_hooks_of_the_modules_queue(
    dsn: str, q: pgq_nb.Queue, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    q.entrypoint("hooked")(lambda job: None)  # to enqueue it here; the process runs it
    job_id = q.enqueue("hooked", {"x": 1})
    proc = start_worker_process(dsn, "hooks_app:q", PGQ_NB_TEST_HOOK_FILE=str(notes))
    try:
        wait_until(
            lambda: notes.exists() and notes.read_text() == f"{job_id} 2\n",
            60,
            "the worker process's hook to write its note",
        )
    finally:
        stop_processes([proc])


HANGING_APP = """
import os, time
import pgq_nb

q = pgq_nb.connect()


@q.entrypoint("hooked")
def hooked(job):
    return 1


@q.on("succeeded")
def hang(job, outcome):
    with open(os.environ["PGQ_NB_TEST_HOOK_FILE"], "a") as f:
        f.write(f"{job.id}\\n")
    time.sleep(1000)  # a webhook that never answers
"""


def test_a_hung_def_hook_never_keeps_a_stopped_worker_process_alive(
    dsn: str, q: pgq_nb.Queue, tmp_path: Path
) -> None:
    (tmp_path / "hanging_app.py").write_text(HANGING_APP)
    notes = tmp_path / "notes.txt"
    q.entrypoint("hooked")(lambda job: None)  # to enqueue it here; the process runs it
    job_id = q.enqueue("hooked")
    path = os.pathsep.join([str(tmp_path), str(APPS), os.environ.get("PYTHONPATH", "")])
    proc = start_worker_process(
        dsn, "hanging_app:q", PGQ_NB_TEST_HOOK_FILE=str(notes), PYTHONPATH=path
    )
    try:
        wait_until(lambda: notes.exists() and notes.read_text() == f"{job_id}\n", 60, "the hook")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) is not None  # before: alive after any number of SIGTERMs
    finally:
        stop_processes([proc], timeout=5)
    # a script that starts a worker, runs a job, stops the worker and returns, exits
    script = (
        "import hanging_app, os, time\n"
        "q = hanging_app.q\n"
        "q.enqueue('hooked')\n"
        "w = q.start_worker()\n"
        "deadline = time.monotonic() + 60\n"
        "while not os.path.exists(os.environ['PGQ_NB_TEST_HOOK_FILE']):\n"
        "    assert time.monotonic() < deadline, 'the hook never ran'\n"
        "    time.sleep(0.1)\n"
        "w.stop()\n"
    )
    notes.unlink()
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=worker_env(dsn, PGQ_NB_TEST_HOOK_FILE=str(notes), PYTHONPATH=path),
        cwd=str(REPO),
        timeout=120,  # before: TimeoutExpired, the interpreter never exits
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert notes.exists(), "the hook never ran in the script"
