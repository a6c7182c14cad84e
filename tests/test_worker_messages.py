"""What a notebook's worker says (pgq_nb.worker_notices): queued jobs that no handler here can
run (issue #16, item 4), jobs that failed for good (item 5); and a BlockingCallError is not
retried. Against the real Postgres, and once in a real kernel."""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Iterator

import pytest

import pgq_nb
from pgq_nb.worker_notices import (
    JobsFailed,
    JobsPaused,
    JobsWithoutHandler,
    WorkerWarning,
    failed_message,
)
from tests.conftest import SCHEMA, execute_sql, wait_until


def restarted(installed: str) -> pgq_nb.Queue:
    """The same queue as the ``q`` fixture's, with no handler registered: a kernel restarted
    and its handler cells not run again."""
    return pgq_nb.connect(
        installed, schema=SCHEMA, heartbeat_interval=0.5, heartbeat_timeout=3.0, poll_interval=0.2
    )


def said(record: list[warnings.WarningMessage], kind: type[WorkerWarning]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, kind)]


@pytest.fixture
def record() -> Iterator[list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        yield caught


# -- item 4: jobs without a handler -----------------------------------------------------------


def test_run_until_idle_names_the_entrypoints_it_has_no_handler_for(
    q: pgq_nb.Queue, installed: str, record: list[warnings.WarningMessage]
) -> None:
    q.entrypoint("score")(lambda job: job.data)
    q.entrypoint("load")(lambda job: None)
    q.enqueue(["score", "score", "load"])
    fresh = restarted(installed)
    fresh.entrypoint("other")(lambda job: None)

    stats = fresh.run_until_idle(wait_for_scheduled=0)
    assert stats.processed == 0
    [line] = said(record, JobsWithoutHandler)
    assert line == (
        "run_until_idle() stopped, but 3 queued jobs cannot run: no handler in this process and "
        "no live worker serves their entrypoints: 'load' (1), 'score' (2); define the handlers "
        "with @q.entrypoint('load') here (in a notebook: run the cell that defines it), then "
        "call run_until_idle() again"
    )
    assert "@q.entrypoint('load')" in line and "call run_until_idle() again" in line
    [warning] = [w.message for w in record if isinstance(w.message, JobsWithoutHandler)]
    assert warning.waiting == {"load": 1, "score": 2}

    # said once per call, every call (not once per place, as warnings usually are)
    fresh.run_until_idle(wait_for_scheduled=0)
    assert len(said(record, JobsWithoutHandler)) == 2

    # the fix it names: define the handlers here, run again
    fresh.entrypoint("score")(lambda job: job.data)
    fresh.entrypoint("load")(lambda job: None)
    assert fresh.run_until_idle(wait_for_scheduled=0).succeeded == 3
    assert len(said(record, JobsWithoutHandler)) == 2


def test_paused_served_elsewhere_and_not_due_are_not_missing_a_handler(
    q: pgq_nb.Queue, installed: str, record: list[warnings.WarningMessage]
) -> None:
    for name in ("paused", "elsewhere", "later", "ours"):
        q.entrypoint(name)(lambda job: None)
    q.enqueue(["paused", "elsewhere"])
    q.enqueue("later", execute_after=dt.timedelta(hours=1))
    q.pause("paused")
    # a live worker of another process serves "elsewhere"
    execute_sql(
        installed,
        f"INSERT INTO {SCHEMA}.workers (host, pid, entrypoints, concurrency) "
        "VALUES ('elsewhere', 1, '{elsewhere}', 1)",
    )
    fresh = restarted(installed)
    fresh.entrypoint("ours")(lambda job: None)
    fresh.enqueue("ours")
    assert fresh.run_until_idle(wait_for_scheduled=1).succeeded == 1
    assert said(record, JobsWithoutHandler) == []

    # the other worker's heartbeat goes stale: now nobody serves "elsewhere"
    execute_sql(installed, f"UPDATE {SCHEMA}.workers SET heartbeat = now() - interval '1 hour'")
    fresh.run_until_idle(wait_for_scheduled=1)
    [line] = said(record, JobsWithoutHandler)
    assert "'elsewhere' (1)" in line and "'paused'" not in line and "'later'" not in line


def test_start_worker_says_its_worker_runs_them_once_defined(
    q: pgq_nb.Queue, installed: str, record: list[warnings.WarningMessage]
) -> None:
    q.entrypoint("score")(lambda job: None)
    q.enqueue(["score"] * 4)
    fresh = restarted(installed)
    fresh.entrypoint("other")(lambda job: None)
    handle = fresh.start_worker()
    try:
        [line] = said(record, JobsWithoutHandler)
        assert line.startswith("4 queued jobs cannot run: no handler in this process")
        assert "'score' (4)" in line and "@q.entrypoint('score')" in line
        assert line.endswith("and this worker runs their jobs as soon as it is defined")
    finally:
        handle.stop(timeout=60)
    # a worker of given entrypoints= serves only those: start one for the rest
    handle = fresh.start_worker(entrypoints=["other"])
    try:
        assert "then start a worker for them" in said(record, JobsWithoutHandler)[-1]
    finally:
        handle.stop(timeout=60)


# -- item 5: failures -------------------------------------------------------------------------


def test_run_until_idle_says_in_one_line_what_failed_and_where_to_look(
    q: pgq_nb.Queue, record: list[warnings.WarningMessage]
) -> None:
    @q.entrypoint("score", retry=pgq_nb.RetryPolicy(max_attempts=2, base_delay=0.05))
    def score(job: pgq_nb.Job) -> None:
        if job.data["amount"] < 0:
            raise ValueError("bad amount")

    q.enqueue(["score"] * 3, [{"amount": -1}, {"amount": -2}, {"amount": 5}])
    stats = q.run_until_idle()
    assert (stats.succeeded, stats.failed, stats.retried) == (1, 2, 2)
    assert said(record, JobsFailed) == [
        "2 jobs of 'score' failed for good (ValueError: bad amount); see q.failed('score')"
    ]
    assert len(q.failed("score")) == 2  # where it says to look

    # nothing failed: nothing said
    q.enqueue("score", {"amount": 1})
    q.run_until_idle()
    assert len(said(record, JobsFailed)) == 1


def test_a_blocking_call_in_an_async_handler_is_not_retried(
    q: pgq_nb.Queue, record: list[warnings.WarningMessage]
) -> None:
    @q.entrypoint("nested", retry=pgq_nb.RetryPolicy(max_attempts=5, base_delay=0.05))
    async def nested(job: pgq_nb.Job) -> None:
        q.enqueue("nested")  # blocks: must be `await q.aio.enqueue(...)` here

    job_id = q.enqueue("nested")
    stats = q.run_until_idle()
    assert (stats.failed, stats.retried) == (1, 0)
    info = q.get_job(job_id)
    assert info.attempts == 1
    assert info.error is not None and info.error.startswith("BlockingCallError: enqueue() blocks")
    [line] = said(record, JobsFailed)
    assert line.startswith("1 job of 'nested' failed for good (BlockingCallError: enqueue()")


def test_a_background_worker_says_its_failures(
    q: pgq_nb.Queue, record: list[warnings.WarningMessage]
) -> None:
    q.entrypoint("score", retry=pgq_nb.RetryPolicy.none())(lambda job: 1 / 0)
    handle = q.start_worker()
    try:
        q.enqueue(["score", "score"])
        # said while it works (a second after a failure), not only when it stops
        wait_until(lambda: said(record, JobsFailed), 60, "the background worker's line")
        wait_until(lambda: handle.stats.failed == 2, 60, "both jobs to fail")
    finally:
        handle.stop(timeout=60)  # says what is not said yet
    lines = said(record, JobsFailed)
    assert all(line.startswith("the background worker: ") for line in lines)
    assert all(
        "of 'score' failed for good (ZeroDivisionError: division by zero)" in x for x in lines
    )
    # every failure told, once: one line for both, or one each
    assert sum(int(line.split()[3]) for line in lines) == 2


def test_the_failure_line_of_several_entrypoints() -> None:
    failed = {
        "a": (1, "KeyError: 'x'"),
        "b": (3, "ValueError: " + "long " * 40 + "\nsecond line"),
        "c": (1, ""),
        "d": (2, "OSError: gone"),
    }
    line = failed_message(failed)
    assert "\n" not in line
    assert line.startswith("7 jobs failed for good: 3 of 'b' (ValueError: long long")
    assert "…), 2 of 'd' (OSError: gone), 1 of 'a' (KeyError: 'x'), and 1 more; see q.failed()" in (
        line
    )


# -- in a real kernel --------------------------------------------------------------------------

KERNEL_CELLS = (
    """
import pgq_nb
q = pgq_nb.connect({dsn!r}, schema={schema!r})

@q.entrypoint("score", retry=pgq_nb.RetryPolicy(max_attempts=2, base_delay=0.05))
def score(job):
    raise ValueError("bad amount")

q.entrypoint("load")(lambda job: None)
q.enqueue(["score", "score"])
""",
    "q.run_until_idle()",
    "q.enqueue(['score', 'score']); q.run_until_idle()",  # the same line again, in another cell
    """
q.enqueue("load")
restarted = pgq_nb.connect({dsn!r}, schema={schema!r})
restarted.entrypoint("other")(lambda job: None)
restarted.run_until_idle(wait_for_scheduled=0)
""",
)


def test_a_notebook_shows_each_line_under_the_cell_that_ran_the_worker(
    q: pgq_nb.Queue, installed: str
) -> None:
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3", startup_timeout=60)
    shown: list[str] = []
    try:
        for code in KERNEL_CELLS:
            msg_id = client.execute(code.format(dsn=installed, schema=SCHEMA))
            text = ""
            while True:
                msg = client.get_iopub_msg(timeout=60)
                kind, content = msg["msg_type"], msg["content"]
                mine = msg["parent_header"].get("msg_id") == msg_id
                if kind == "error":
                    raise AssertionError("\n".join(content["traceback"]))
                if kind == "stream" and content["name"] == "stderr" and mine:
                    text += content["text"]
                if kind == "status" and content["execution_state"] == "idle" and mine:
                    break
            shown.append(text)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    failed = "2 jobs of 'score' failed for good (ValueError: bad amount); see q.failed('score')"
    assert shown[0] == ""
    assert shown[1].count(failed) == 1 and "no handler" not in shown[1]
    assert shown[2].count(failed) == 1
    assert "failed for good" not in shown[3]
    assert shown[3].count("1 queued job cannot run: no handler in this process") == 1
    assert "'load' (1)" in shown[3] and "@q.entrypoint('load')" in shown[3]


def test_run_until_idle_stops_beside_a_paused_entrypoints_jobs_and_says_so(
    q: pgq_nb.Queue, record: list[warnings.WarningMessage]
) -> None:
    """Queued jobs of a paused entrypoint do not keep run_until_idle() waiting for ever (found
    in review: it never returned); it says what waits and how to let it run."""
    q.entrypoint("a")(lambda job: 1)
    q.entrypoint("b")(lambda job: 2)
    q.enqueue(["a", "b", "b"])
    q.pause("b")
    stats = q.run_until_idle()
    assert stats.succeeded == 1
    [line] = said(record, JobsPaused)
    assert line == (
        "run_until_idle() stopped, but 2 queued jobs of a paused entrypoint wait: 'b' (2); "
        "q.resume('b') lets them run, then call run_until_idle() again"
    )
    q.resume("b")
    assert q.run_until_idle().succeeded == 2
