"""A notebook's background workers (#16, item 1): ``q.start_worker()`` starts before any
handler is defined and serves the first one when it is; re-running its cell returns the
running worker rather than start a second whose handle would be lost."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator

import pytest

import pgq_nb
from pgq_nb.worker_notices import WorkerAlreadyRunning, WorkerWarning
from tests.conftest import REPO, SCHEMA, wait_until, worker_env


def said(record: list[warnings.WarningMessage], kind: type[WorkerWarning]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, kind)]


@pytest.fixture
def record() -> Iterator[list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        yield caught


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
    assert q.background_workers() == []


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


# -- trap 2: the cell of start_worker run again --------------------------------------------


def test_starting_again_returns_the_running_worker(
    q: pgq_nb.Queue, record: list[warnings.WarningMessage]
) -> None:
    q.entrypoint("job")(lambda job: 1)
    first = q.start_worker()
    try:
        assert said(record, WorkerAlreadyRunning) == []
        again = q.start_worker()  # the cell run again: before, a second worker, w lost
        assert again is first
        [line] = said(record, WorkerAlreadyRunning)
        assert line.startswith("a background worker of this queue is already running")
        assert "start_worker() returned it rather than start a second" in line
        assert "call its .stop() first" in line
        assert q.background_workers() == [first]
        registered(q, 1)
        q.entrypoint("job")(lambda job: 2)  # and it runs the new body
        job_id = q.enqueue("job")
        assert q.wait([job_id], timeout=30) == {job_id: "succeeded"}
        assert q.get_job(job_id).result == 2
        assert len(q.worker_list()) == 1
    finally:
        first.stop(timeout=30)
    assert q.background_workers() == []
    fresh = q.start_worker()  # once stopped, a new one
    try:
        assert fresh is not first and fresh.running
        assert len(said(record, WorkerAlreadyRunning)) == 1
    finally:
        fresh.stop(timeout=30)


def test_other_arguments_start_another_and_say_how_to_stop_the_first(
    q: pgq_nb.Queue, record: list[warnings.WarningMessage]
) -> None:
    q.entrypoint("job")(lambda job: None)
    first = q.start_worker()
    second = q.start_worker(concurrency=4)
    try:
        assert second is not first
        [line] = said(record, WorkerAlreadyRunning)
        assert line.startswith("1 other background worker of this queue still running")
        assert "concurrency=32, every handler" in line
        assert "q.background_workers()[0].stop()" in line
        assert q.background_workers() == [first, second]
        registered(q, 2)
        q.background_workers()[0].stop(timeout=30)  # the lost handle's worker, stopped
        assert not first.running and second.running
        assert q.background_workers() == [second]
        registered(q, 1)
    finally:
        second.stop(timeout=30)
        first.stop(timeout=30)  # stopping a stopped one again is harmless
    assert q.background_workers() == []
    assert q.worker_list() == []


def test_a_process_with_background_workers_running_exits(q: pgq_nb.Queue, installed: str) -> None:
    """A kernel shut down with its workers running: the process ends all the same."""
    script = textwrap.dedent(
        f"""
        import pgq_nb
        q = pgq_nb.connect({installed!r}, schema={SCHEMA!r})
        q.start_worker()
        q.start_worker()
        q.start_worker(concurrency=2)
        assert len(q.background_workers()) == 2
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=worker_env(installed),
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


# -- trap 3: pgq_nb.connect() run again (a re-run notebook) --------------------------------------


def _again(installed: str) -> pgq_nb.Queue:
    return pgq_nb.connect(installed, schema=SCHEMA, heartbeat_interval=0.5, poll_interval=0.2)


def test_a_queue_connected_again_replaces_the_earlier_queues_worker(
    q: pgq_nb.Queue, installed: str, record: list[warnings.WarningMessage]
) -> None:
    """Run All on a notebook: connect, define the handler, start a worker, twice. The first
    run's worker would go on running the first run's handler body next to the second's."""
    q.entrypoint("h")(lambda job: "old body")
    old = q.start_worker()
    again = _again(installed)
    again.entrypoint("h")(lambda job: "new body")
    new = again.start_worker()
    try:
        (line,) = said(record, WorkerAlreadyRunning)
        assert "from an earlier pgq_nb.connect() to this schema" in line
        wait_until(lambda: not old.running, 30, "the earlier queue's worker to stop")
        ids = again.enqueue(["h"] * 20)
        assert set(again.wait(ids, timeout=30).values()) == {"succeeded"}
        assert {again.get_job(i).result for i in ids} == {"new body"}
    finally:
        new.stop(timeout=30)
        old.stop(timeout=30)


def test_a_second_queue_with_other_handlers_keeps_its_worker(
    q: pgq_nb.Queue, installed: str, record: list[warnings.WarningMessage]
) -> None:
    q.entrypoint("a")(lambda job: "a")
    first = q.start_worker()
    other = _again(installed)
    other.entrypoint("b")(lambda job: "b")
    second = other.start_worker()
    try:
        assert said(record, WorkerAlreadyRunning) == []
        registered(q, 2)
        assert first.running and second.running
    finally:
        second.stop(timeout=30)
        first.stop(timeout=30)


def test_wait_says_the_background_workers_failures_under_its_own_cell(
    q: pgq_nb.Queue, record: list[warnings.WarningMessage]
) -> None:
    """A background worker gathers a second of failures into one line; a cell that waits for
    the jobs and ends sooner lost that line to whatever ran next (the shipped notebook 04
    showed it on one run and not the next). q.wait() says what is left when it returns."""
    from pgq_nb.worker_notices import JobsFailed

    @q.entrypoint("bad", retry=pgq_nb.RetryPolicy(max_attempts=1))
    def bad(job: pgq_nb.Job) -> None:
        raise ValueError("no")

    handle = q.start_worker()
    try:
        ids = q.enqueue(["bad"] * 3)
        assert set(q.wait(ids, timeout=30).values()) == {"failed"}
        told = [w.message for w in record if isinstance(w.message, JobsFailed)]
        # at once, not a second later (on a loaded machine the worker's own line may have
        # come first, for some of them): every failure told, each once
        assert sum(m.failed["bad"][0] for m in told) == 3
        time.sleep(1.5)
        assert len(said(record, JobsFailed)) == len(told)  # and never twice
    finally:
        handle.stop(timeout=30)
