"""A worker in a notebook, live (#16, items 1 and 2): it serves handlers registered after it
started, and it runs delayed jobs when they are due rather than at its next poll."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections.abc import Iterator

import asyncpg
import pytest

import pgq_nb
from pgq_nb import Schedule, runtime
from tests.conftest import SCHEMA, wait_until

# -- item 1: handlers registered after the worker started -----------------------------------


def test_a_background_worker_serves_handlers_registered_after_it_started(
    q: pgq_nb.Queue,
) -> None:
    q.entrypoint("first")(lambda job: "first")
    handle = q.start_worker(concurrency=4)
    try:
        time.sleep(0.5)  # started, registered, polling

        @q.entrypoint("later", retry=pgq_nb.RetryPolicy(max_attempts=7), max_running=1)
        def later(job: pgq_nb.Job) -> int:
            return int(job.data) * 2

        ids = q.enqueue(["later"] * 3, [1, 2, 3])
        assert set(q.wait(ids, timeout=30).values()) == {"succeeded"}
        assert [q.get_job(i).result for i in ids] == [2, 4, 6]
        # registered in the database as by a starting worker: its retry limit and global
        # limit, and the worker's row names it
        (row,) = [f for f in q.flow() if f["entrypoint"] == "later"]
        assert row["max_running"] == 1
        (worker,) = q.worker_list()
        assert set(worker["entrypoints"]) == {"first", "later"}
        limit = runtime.run_sync(
            q.aio.pool.fetchval(
                f"SELECT max_attempts FROM {SCHEMA}.entrypoints WHERE name = 'later'"
            )
        )
        assert limit == 7
        # and a pause holds for it
        q.pause("later")
        paused = q.enqueue("later", 5)
        time.sleep(1.0)
        assert q.get_job(paused).status is pgq_nb.JobStatus.QUEUED
        q.resume("later")
        assert q.wait([paused], timeout=30) == {paused: "succeeded"}
    finally:
        handle.stop(timeout=30)


def test_a_handler_defined_again_runs_its_new_body(q: pgq_nb.Queue) -> None:
    q.entrypoint("version")(lambda job: 1)
    handle = q.start_worker()
    try:
        first = q.enqueue("version")
        assert q.wait([first], timeout=30) == {first: "succeeded"}
        q.entrypoint("version")(lambda job: 2)  # the cell run again, edited
        second = q.enqueue("version")
        assert q.wait([second], timeout=30) == {second: "succeeded"}
    finally:
        handle.stop(timeout=30)
    assert q.get_job(first).result == 1
    assert q.get_job(second).result == 2


def test_a_worker_whose_only_entrypoint_is_paused_takes_on_a_new_one(q: pgq_nb.Queue) -> None:
    q.entrypoint("held")(lambda job: None)
    q.pause("held")
    handle = q.start_worker()
    try:
        time.sleep(0.5)
        q.entrypoint("fresh")(lambda job: "ran")
        job_id = q.enqueue("fresh")
        assert q.wait([job_id], timeout=30) == {job_id: "succeeded"}
        held = q.enqueue("held")
        q.resume("held")
        assert q.wait([held], timeout=30) == {held: "succeeded"}
    finally:
        handle.stop(timeout=30)


def test_a_worker_whose_only_entrypoint_was_paused_at_its_start_runs_it_once_resumed(
    q: pgq_nb.Queue,
) -> None:
    q.entrypoint("held")(lambda job: None)
    q.pause("held")
    handle = q.start_worker()
    try:
        time.sleep(0.5)  # started with nothing to claim: it used to wait for a free slot
        job_id = q.enqueue("held")
        q.resume("held")
        assert q.wait([job_id], timeout=30) == {job_id: "succeeded"}
    finally:
        handle.stop(timeout=30)


def test_a_schedule_declared_after_the_worker_started_fires(q: pgq_nb.Queue) -> None:
    q.entrypoint("other")(lambda job: None)
    handle = q.start_worker()
    fired: list[dt.datetime] = []
    try:
        time.sleep(0.5)

        @q.schedule("every_second", "* * * * * *")
        def every_second(schedule: Schedule) -> None:
            fired.append(schedule.fire_time)

        wait_until(lambda: len(fired) >= 2, 30, "two ticks of a schedule declared late")
        listed = {s["name"]: s for s in q.schedule_list()}
        assert listed["every_second"]["live_workers"] == 1
    finally:
        handle.stop(timeout=30)


def test_a_worker_with_named_entrypoints_keeps_its_set(q: pgq_nb.Queue) -> None:
    q.entrypoint("mine")(lambda job: None)
    with pytest.raises(pgq_nb.UnknownEntrypointError, match="'missing'"):
        q.start_worker(entrypoints=["mine", "missing"])
    handle = q.start_worker(entrypoints=["mine"])
    try:
        q.entrypoint("theirs")(lambda job: None)
        q.entrypoint("mine")(lambda job: "new body")
        theirs = q.enqueue("theirs")
        mine = q.enqueue("mine")
        assert q.wait([mine], timeout=30) == {mine: "succeeded"}
        assert q.get_job(mine).result == "new body"
        time.sleep(1.0)
        assert q.get_job(theirs).status is pgq_nb.JobStatus.QUEUED
        (worker,) = q.worker_list()
        assert worker["entrypoints"] == ["mine"]
    finally:
        handle.stop(timeout=30)


# -- item 2: delays honoured when due --------------------------------------------------------


@pytest.fixture
def slow_poll(q: pgq_nb.Queue, installed: str) -> pgq_nb.Queue:
    """The queue of ``q`` (emptied) with the default poll interval, 1 s: on main, delayed jobs
    ran at the first poll after they were due."""
    return pgq_nb.connect(
        installed, schema=SCHEMA, heartbeat_interval=0.5, heartbeat_timeout=3.0, poll_interval=1.0
    )


def test_retries_come_back_after_their_delay_not_at_the_next_poll(slow_poll: pgq_nb.Queue) -> None:
    q = slow_poll
    starts: list[float] = []

    @q.entrypoint("flaky", retry=pgq_nb.RetryPolicy(max_attempts=3, base_delay=0.5, jitter=0))
    def flaky(job: pgq_nb.Job) -> None:
        starts.append(time.monotonic())
        raise ValueError("not yet")

    job_id = q.enqueue("flaky")
    q.run_until_idle(timeout=60)
    assert q.get_job(job_id).status is pgq_nb.JobStatus.FAILED
    assert len(starts) == 3
    first, second = starts[1] - starts[0], starts[2] - starts[1]
    # delays 0.5 s then 1.0 s; before, both gaps were about 1.0 s (the poll)
    assert 0.45 <= first < 0.8, (first, second)
    assert 0.95 <= second < 1.5, (first, second)


def test_a_delayed_job_runs_when_due(slow_poll: pgq_nb.Queue) -> None:
    q = slow_poll
    ran = threading.Event()
    started: list[float] = []

    @q.entrypoint("later")
    def later(job: pgq_nb.Job) -> None:
        started.append(time.monotonic())
        ran.set()

    handle = q.start_worker()
    try:
        time.sleep(0.5)
        began = time.monotonic()
        q.enqueue("later", execute_after=dt.timedelta(seconds=2.3))
        assert ran.wait(30)
    finally:
        handle.stop(timeout=30)
    waited = started[0] - began
    # before: near 3 s (the third poll after the enqueue's NOTIFY)
    assert 2.25 <= waited < 2.8, waited


@pytest.fixture
def notifications(q: pgq_nb.Queue, installed: str) -> Iterator[list[str]]:
    """Payloads of the NOTIFYs sent on the queue's channel while the test runs."""
    seen: list[str] = []

    async def listen() -> asyncpg.Connection:
        conn = await asyncpg.connect(installed)
        await conn.add_listener(q.aio.channel, lambda *args: seen.append(args[-1]))
        return conn

    conn = runtime.run_sync(listen())
    yield seen
    runtime.run_sync(conn.close())


def test_a_retry_tells_every_worker_when_it_is_due(
    q: pgq_nb.Queue, notifications: list[str]
) -> None:
    @q.entrypoint("flaky", retry=pgq_nb.RetryPolicy(max_attempts=2, base_delay=0.7, jitter=0))
    async def flaky(job: pgq_nb.Job) -> None:
        raise ValueError("not yet")

    ids = q.enqueue(["flaky"] * 20)
    q.run_until_idle(timeout=60)
    assert set(q.statuses(ids).values()) == {pgq_nb.JobStatus.FAILED}
    runtime.run_sync(asyncio.sleep(0.2))  # let the last notifications arrive
    due = [p for p in notifications if p.startswith("due:")]
    assert due and set(due) == {"due:0.7"}, notifications
    # one per statement that recorded retries, not one per job (the 20 fail together)
    assert len(due) <= 3, notifications
