"""A notebook's background workers (#16, item 1): ``q.start_worker()`` starts before any
handler is defined and serves the first one when it is."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

import pgq_nb
from tests.conftest import REPO, SCHEMA, wait_until, worker_env


def registered(q: pgq_nb.Queue, count: int) -> None:
    wait_until(lambda: len(q.worker_list()) == count, 30, f"{count} registered workers")


# -- trap 1: a worker started before its first handler -----------------------------------------


def test_a_background_worker_starts_before_any_handler_and_serves_them_once_defined(
    q: pgq_nb.Queue,
) -> None:
    handle = q.start_worker()  # before: UnknownEntrypointError, "this queue has no handlers"
    try:
        registered(q, 1)
        (row,) = q.worker_list()
        assert list(row["entrypoints"]) == []
        # idle while it has nothing to serve: it waits, it does not spin (generous bound: a
        # spinning loop thread takes about all of a core's time)
        cpu = time.process_time()
        time.sleep(3.0)
        assert time.process_time() - cpu < 1.5
        assert handle.running

        @q.entrypoint("first")
        def first(job: pgq_nb.Job) -> int:
            return int(job.data) + 1

        ids = q.enqueue(["first"] * 3, [1, 2, 3])
        assert set(q.wait(ids, timeout=30).values()) == {"succeeded"}
        assert [q.get_job(i).result for i in ids] == [2, 3, 4]
        (row,) = q.worker_list()
        assert list(row["entrypoints"]) == ["first"]
    finally:
        handle.stop(timeout=30)
    assert q.worker_list() == []


def test_a_worker_of_named_entrypoints_still_needs_their_handlers(q: pgq_nb.Queue) -> None:
    with pytest.raises(pgq_nb.UnknownEntrypointError, match="'missing'"):
        q.start_worker(entrypoints=["missing"])


def test_run_until_idle_without_handlers_names_the_jobs_that_wait_for_one(
    q: pgq_nb.Queue, installed: str
) -> None:
    with pytest.raises(pgq_nb.UnknownEntrypointError, match="no handlers") as empty:
        q.run_until_idle()
    assert "@q.entrypoint('name')" in str(empty.value)
    q.entrypoint("score")(lambda job: None)
    q.enqueue(["score"] * 4)
    restarted = pgq_nb.connect(installed, schema=SCHEMA, poll_interval=0.2)  # no handler here
    with pytest.raises(pgq_nb.UnknownEntrypointError) as waiting:
        restarted.run_until_idle()
    line = str(waiting.value)
    assert "no handlers in this process, and 4 jobs wait for one: 'score' (4)" in line
    assert "@q.entrypoint('score')" in line and "run_until_idle() again" in line


def test_a_worker_process_without_handlers_still_refuses_to_start(
    q: pgq_nb.Queue, installed: str
) -> None:
    with pytest.raises(pgq_nb.UnknownEntrypointError, match="no handlers"):
        q.run_worker()
    done = subprocess.run(
        [sys.executable, "-m", "pgq_nb.cli", "worker", "empty_app:q"],
        env=worker_env(installed),
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "pgq-nb: error: this queue has no handlers" in done.stderr
    assert q.worker_list() == []
