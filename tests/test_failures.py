"""Failures in the queue: retries with backoff, timeouts, dead letters, requeue, cancel."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import subprocess
import sys
import threading
import time

import pytest

import pgq_nb
from tests.conftest import REPO, worker_env


def test_fails_twice_then_succeeds_spaced_by_the_policy(q: pgq_nb.Queue) -> None:
    policy = pgq_nb.RetryPolicy(max_attempts=3, base_delay=0.4, factor=2.0, jitter=0.1)
    seen: list[float] = []

    @q.entrypoint("flaky", retry=policy)
    async def flaky(job: pgq_nb.Job) -> str:
        seen.append(time.monotonic())
        if job.attempts < 3:
            raise ConnectionError(f"upstream down (attempt {job.attempts})")
        return "ok"

    job_id = q.enqueue("flaky")
    stats = q.run_until_idle()
    assert (stats.retried, stats.succeeded) == (2, 1)
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    # 0.4 s then 0.8 s, within 10 % jitter, plus a poll interval (0.2 s in tests) of lateness
    assert 0.36 <= gaps[0] <= 0.44 + 0.3, gaps
    assert 0.72 <= gaps[1] <= 0.88 + 0.3, gaps
    info = q.get_job(job_id)
    assert info.status is pgq_nb.JobStatus.SUCCEEDED
    assert info.attempts == 3
    assert info.result == "ok"
    assert [e["error"] for e in info.errors or []] == [
        "ConnectionError: upstream down (attempt 1)",
        "ConnectionError: upstream down (attempt 2)",
    ]


def test_give_up_on_and_retry_on(q: pgq_nb.Queue) -> None:
    @q.entrypoint(
        "picky",
        retry=pgq_nb.RetryPolicy(retry_on=(TimeoutError,), base_delay=0.05, max_attempts=4),
    )
    def picky(job: pgq_nb.Job) -> None:
        raise (TimeoutError if job.data == "slow" else KeyError)("boom")

    @q.entrypoint(
        "strict",
        retry=pgq_nb.RetryPolicy(give_up_on=(ValueError,), base_delay=0.05, max_attempts=4),
    )
    def strict(job: pgq_nb.Job) -> None:
        raise ValueError("bad input")

    @q.entrypoint("decides")
    def decides(job: pgq_nb.Job) -> None:
        if job.data == "give up":
            raise pgq_nb.GiveUp("nothing to do for this row")
        if job.attempts == 1:
            raise pgq_nb.RetryLater(0.05, "rate limited")

    slow = q.enqueue("picky", "slow")
    other = q.enqueue("picky", "other")
    bad = q.enqueue("strict")
    give_up = q.enqueue("decides", "give up")
    later = q.enqueue("decides", "later")
    q.run_until_idle()
    assert q.get_job(slow).attempts == 4  # retried until exhausted
    assert q.get_job(other).attempts == 1  # KeyError is not in retry_on
    assert q.get_job(bad).attempts == 1
    assert q.get_job(give_up).attempts == 1
    assert q.get_job(give_up).error == "GiveUp: nothing to do for this row"
    assert q.get_job(later).status is pgq_nb.JobStatus.SUCCEEDED
    assert q.get_job(later).attempts == 2
    failed = {j.id for j in q.failed_jobs()}
    assert failed == {slow, other, bad, give_up}


def test_timeouts_fail_the_attempt_async_and_sync(q: pgq_nb.Queue) -> None:
    cancelled = threading.Event()

    @q.entrypoint("slow_async", timeout=0.2, retry=pgq_nb.RetryPolicy.none())
    async def slow_async(job: pgq_nb.Job) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    @q.entrypoint("slow_sync", timeout=0.2, retry=pgq_nb.RetryPolicy.none())
    def slow_sync(job: pgq_nb.Job) -> str:
        time.sleep(0.6)
        return "too late"

    a = q.enqueue("slow_async")
    b = q.enqueue("slow_sync")
    began = time.monotonic()
    q.run_until_idle()
    assert time.monotonic() - began < 5
    assert cancelled.is_set()
    for job_id in (a, b):
        info = q.get_job(job_id)
        assert info.status is pgq_nb.JobStatus.FAILED
        assert info.error is not None
        assert info.error.startswith(
            "JobTimeoutError: the handler ran longer than its timeout of 0.2 s"
        )
    assert q.get_job(b).result is None  # the thread's late result is discarded


def test_requeue_failed_gives_fresh_attempts_and_keeps_ids(q: pgq_nb.Queue) -> None:
    state = {"broken": True}

    @q.entrypoint("fragile", retry=pgq_nb.RetryPolicy.none())
    def fragile(job: pgq_nb.Job) -> str:
        if state["broken"]:
            raise RuntimeError("still broken")
        return "fixed"

    @q.entrypoint("other", retry=pgq_nb.RetryPolicy.none())
    def other(job: pgq_nb.Job) -> None:
        raise RuntimeError("other")

    ids = q.enqueue(["fragile", "fragile", "other"])
    q.run_until_idle()
    assert len(q.failed_jobs()) == 3
    assert len(q.failed_jobs("fragile")) == 2
    state["broken"] = False
    assert q.requeue_failed(entrypoint="fragile") == 2
    assert q.requeue_failed([ids[0]]) == 0  # already requeued
    info = q.get_job(ids[0])
    assert info.status is pgq_nb.JobStatus.QUEUED
    assert info.attempts == 0
    q.run_until_idle()
    info = q.get_job(ids[0])
    assert info.status is pgq_nb.JobStatus.SUCCEEDED
    assert info.result == "fixed"
    assert [e["error"] for e in info.errors or []] == ["RuntimeError: still broken"]
    assert [j.id for j in q.failed_jobs()] == [ids[2]]
    counts = {(e, s): n for e, s, n in q.counts()}
    assert counts[("fragile", "succeeded")] == 2
    assert counts.get(("fragile", "failed"), 0) == 0


def test_cancel_queued_running_and_finished(q: pgq_nb.Queue) -> None:
    started = threading.Event()

    @q.entrypoint("long")
    async def long(job: pgq_nb.Job) -> None:
        started.set()
        await asyncio.sleep(60)

    q.entrypoint("quick")(lambda job: None)
    done = q.enqueue("quick")
    q.run_until_idle()
    running = q.enqueue("long")
    handle = q.start_worker()
    try:
        assert started.wait(10)
        queued = q.enqueue("quick", execute_after=datetime.timedelta(hours=1))
        outcome = q.cancel([queued, running, done, 999_999])
        assert outcome == {
            queued: "cancelled",
            running: "cancelling",
            done: "already succeeded",
            999_999: "not found",
        }
        assert q.wait([running], timeout=10) == {running: "cancelled"}
    finally:
        handle.stop(timeout=30)
    assert q.get_job(queued).status is pgq_nb.JobStatus.CANCELLED
    assert q.get_job(running).error == "cancelled while running"


def test_cli_failed_and_requeue(q: pgq_nb.Queue, installed: str) -> None:
    q.entrypoint("bad", retry=pgq_nb.RetryPolicy.none())(lambda job: 1 / 0)
    ids = q.enqueue(["bad", "bad"])
    q.run_until_idle()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pgq_nb.cli", *args],
            env=worker_env(installed),
            cwd=str(REPO),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    listed = cli("failed")
    assert listed.returncode == 0, listed.stderr
    assert "ZeroDivisionError: division by zero" in listed.stdout
    assert str(ids[0]) in listed.stdout
    assert cli("requeue").returncode == 2  # nothing named: refuses to requeue everything
    again = cli("requeue", str(ids[0]))
    assert again.stdout.strip() == "requeued 1 failed job"
    assert cli("requeue", "--all").stdout.strip() == "requeued 1 failed job"
    assert {q.get_job(i).status for i in ids} == {pgq_nb.JobStatus.QUEUED}
    status = cli("status")
    assert "bad" in status.stdout
    assert status.returncode == 0


@pytest.mark.parametrize("bad", [[1.5], ["x"], "nope"])
def test_cancel_refuses_bad_ids(q: pgq_nb.Queue, bad: object) -> None:
    with pytest.raises(pgq_nb.InvalidInputError, match="job ids"):
        q.cancel(bad)  # type: ignore[arg-type]
