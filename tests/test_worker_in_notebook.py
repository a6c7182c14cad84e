"""Workers inside this process: run_until_idle, start_worker, results, failures, shutdown."""

from __future__ import annotations

import asyncio
import datetime
import threading
import time

import pytest

import pgq_nb


def test_async_and_sync_handlers_store_results(q: pgq_nb.Queue) -> None:
    threads: set[str] = set()

    @q.entrypoint("double")
    async def double(job: pgq_nb.Job) -> dict[str, int]:
        return {"double": job.data["x"] * 2}

    @q.entrypoint("blocking")
    def blocking(job: pgq_nb.Job) -> list[int]:
        threads.add(threading.current_thread().name)
        time.sleep(0.01)
        return [job.data["x"], job.attempts]

    a = q.enqueue("double", {"x": 21})
    b = q.enqueue("blocking", {"x": 5})
    stats = q.run_until_idle()
    assert (stats.succeeded, stats.failed) == (2, 0)
    assert q.get_job(a).result == {"double": 42}
    assert q.get_job(b).result == [5, 1]
    assert all(name.startswith("pgq_nb-job") for name in threads)
    info = q.get_job(a)
    assert info.status is pgq_nb.JobStatus.SUCCEEDED
    assert info.started is not None and info.finished is not None
    assert info.created <= info.started <= info.finished


def test_failure_keeps_error_and_traceback(q: pgq_nb.Queue) -> None:
    @q.entrypoint("boom", retry=pgq_nb.RetryPolicy(max_attempts=2, base_delay=0.05))
    def boom(job: pgq_nb.Job) -> None:
        raise ValueError(f"bad row {job.data['row']} attempt {job.attempts}")

    job_id = q.enqueue("boom", {"row": 7})
    stats = q.run_until_idle()
    assert (stats.retried, stats.failed) == (1, 1)
    info = q.get_job(job_id)
    assert info.status is pgq_nb.JobStatus.FAILED
    assert info.error == "ValueError: bad row 7 attempt 2"
    assert info.traceback is not None and "in boom" in info.traceback
    assert info.attempts == 2
    assert [e["error"] for e in info.errors or []] == [
        "ValueError: bad row 7 attempt 1",
        "ValueError: bad row 7 attempt 2",
    ]


def test_result_that_is_not_json_fails_the_job_with_a_clear_error(q: pgq_nb.Queue) -> None:
    q.entrypoint("odd", retry=pgq_nb.RetryPolicy.none())(lambda job: object())
    job_id = q.enqueue("odd")
    q.run_until_idle()
    info = q.get_job(job_id)
    assert info.status is pgq_nb.JobStatus.FAILED
    assert info.error is not None and "cannot store as JSON" in info.error


def test_nan_in_results_becomes_null(q: pgq_nb.Queue) -> None:
    q.entrypoint("nan")(lambda job: {"mean": float("nan"), "n": 0})
    job_id = q.enqueue("nan")
    q.run_until_idle()
    assert q.get_job(job_id).result == {"mean": None, "n": 0}


def test_run_until_idle_handles_many_jobs_in_batches(q: pgq_nb.Queue) -> None:
    q.entrypoint("noop")(lambda job: None)
    ids = q.enqueue(["noop"] * 2000)
    stats = q.run_until_idle(concurrency=50)
    assert stats.succeeded == 2000
    assert set(q.wait(ids).values()) == {"succeeded"}


def test_entrypoint_concurrency_caps_jobs_in_this_process(q: pgq_nb.Queue) -> None:
    running = 0
    peak = 0

    @q.entrypoint("capped", concurrency=2)
    async def capped(job: pgq_nb.Job) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1

    q.enqueue(["capped"] * 12)
    q.run_until_idle(concurrency=10)
    assert peak == 2


def test_start_worker_runs_in_the_background_and_stops(q: pgq_nb.Queue) -> None:
    q.entrypoint("bg")(lambda job: job.data * 10)
    handle = q.start_worker(concurrency=4)
    try:
        ids = q.enqueue(["bg"] * 20, list(range(20)), 0)
        assert set(q.wait(ids, timeout=30).values()) == {"succeeded"}
        assert q.get_job(ids[3]).result == 30
        assert handle.running
        assert len(q.worker_list()) == 1
    finally:
        stats = handle.stop(timeout=30)
    assert not handle.running
    assert stats.succeeded == 20
    assert q.worker_list() == []


def test_stopping_interrupts_long_jobs_after_the_grace_period_and_requeues_them(
    q: pgq_nb.Queue,
) -> None:
    started = threading.Event()

    @q.entrypoint("long")
    async def long(job: pgq_nb.Job) -> None:
        started.set()
        await asyncio.sleep(60)

    job_id = q.enqueue("long")
    handle = q.start_worker(grace_period=0.2)
    assert started.wait(10)
    stats = handle.stop(timeout=30)
    assert stats.interrupted == 1
    info = q.get_job(job_id)
    assert info.status is pgq_nb.JobStatus.QUEUED
    assert info.attempts == 0  # a stopped worker is not the job's failure
    assert info.error is not None and "interrupted" in info.error


def test_worker_wait_timeout_and_unknown_entrypoint(q: pgq_nb.Queue) -> None:
    with pytest.raises(pgq_nb.UnknownEntrypointError, match="no handlers"):
        q.run_until_idle()
    q.entrypoint("slow")(lambda job: time.sleep(0.5))
    with pytest.raises(pgq_nb.UnknownEntrypointError, match="'other'"):
        q.run_until_idle(entrypoints=["other"])
    job_id = q.enqueue("slow")
    with pytest.raises(TimeoutError, match="1 of 1 jobs"):
        q.wait([job_id], timeout=0.1)


def test_run_until_idle_timeout_stops_early(q: pgq_nb.Queue) -> None:
    q.entrypoint("later")(lambda job: None)
    q.enqueue("later", execute_after=datetime.timedelta(seconds=30))
    began = time.monotonic()
    q.run_until_idle(timeout=0.5)
    assert time.monotonic() - began < 10


def test_static_html_renders_of_queue_job_and_info(q: pgq_nb.Queue) -> None:
    seen: list[str] = []

    @q.entrypoint("render", retry=pgq_nb.RetryPolicy.none())
    def render(job: pgq_nb.Job) -> None:
        seen.append(job._repr_html_())
        raise ValueError("x" * 1000)

    job_id = q.enqueue("render", {"a": 1})
    assert ">queued<" in q._repr_html_()
    q.run_until_idle()
    assert "render" in seen[0]
    assert "{&quot;a&quot;:1}" in seen[0]
    html = q.get_job(job_id)._repr_html_()
    assert "failed" in html
    assert "ValueError: " + "x" * 288 + " ..." in html
    assert "x" * 301 not in html
    table = q._repr_html_()
    assert 'data-entrypoint="render" data-status="failed">1<' in table
