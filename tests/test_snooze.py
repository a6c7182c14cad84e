"""Snooze (issue #21, item 2): ``raise pgq_nb.Snooze(seconds)`` puts the job back, due later,
without using up an attempt; the snoozes are counted and capped (``max_snoozes=``).

Table tests of the pure parts (pgq_nb.snooze), then real workers on the real Postgres of the
fixtures: async, def, process and transactional handlers.
"""

from __future__ import annotations

import datetime as dt
import math
import pickle
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import pgq_nb
from pgq_nb import runtime
from pgq_nb.hooks import Outcome
from pgq_nb.snooze import (
    DEFAULT_MAX_SNOOZES,
    after_snooze,
    check_max_snoozes,
    snooze_seconds,
)
from pgq_nb.worker_notices import JobsFailed
from tests.conftest import SCHEMA

TABLE = f"{SCHEMA}_snooze.writes"


def _rows(q: pgq_nb.Queue, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        return [dict(r) for r in await q.aio.pool.fetch(sql, *args)]

    return runtime.run_sync(run())


def _history(q: pgq_nb.Queue, job_id: int) -> dict[str, Any]:
    rows = _rows(
        q,
        f"SELECT status, attempts, snoozes, errors, error FROM {SCHEMA}.history WHERE id = $1",
        job_id,
    )
    assert len(rows) == 1, f"job {job_id} is not in history"
    return rows[0]


# -- pure parts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delay", "seconds"),
    [
        (0, 0.0),
        (5, 5.0),
        (0.25, 0.25),
        (dt.timedelta(minutes=5), 300.0),
        (dt.timedelta(0), 0.0),
    ],
)
def test_snooze_delays(delay: Any, seconds: float) -> None:
    assert snooze_seconds(delay) == seconds
    assert pgq_nb.Snooze(delay).delay == seconds


@pytest.mark.parametrize(
    ("delay", "message"),
    [
        (-1, "not a non-negative number"),
        (dt.timedelta(seconds=-3), "not a non-negative number"),
        (math.nan, "not a non-negative number"),
        (math.inf, "more than a year"),
        (400 * 86400, "more than a year"),
        (True, "not bool"),
        ("5", "not str"),
        (None, "not NoneType"),
    ],
)
def test_bad_snooze_delays_say_what_to_give(delay: Any, message: str) -> None:
    with pytest.raises(pgq_nb.InvalidInputError, match=message):
        pgq_nb.Snooze(delay)


def test_a_snooze_pickles_back_from_a_process() -> None:
    again = pickle.loads(pickle.dumps(pgq_nb.Snooze(dt.timedelta(seconds=90))))
    assert isinstance(again, pgq_nb.Snooze) and again.delay == 90.0
    assert str(again) == "snoozed for 90 s"


@pytest.mark.parametrize(
    ("snoozes", "cap", "snooze"),
    [(0, 1, True), (4, 5, True), (5, 5, False), (0, 0, False), (99, 100, True), (100, 100, False)],
)
def test_the_snooze_beyond_the_cap_fails(snoozes: int, cap: int, snooze: bool) -> None:
    choice = after_snooze("poll", snoozes, cap, 2.5)
    assert choice.snooze is snooze
    if snooze:
        assert (choice.delay, choice.error) == (2.5, None)
    else:
        assert choice.error is not None
        assert f"snoozed {snoozes} time" in choice.error
        assert f"max_snoozes={cap}" in choice.error
        assert "@q.entrypoint('poll', max_snoozes=N)" in choice.error


@pytest.mark.parametrize("value", [-1, 1.5, "3", None, True, 2**31])
def test_bad_max_snoozes(value: Any) -> None:
    with pytest.raises(pgq_nb.InvalidInputError, match="max_snoozes"):
        check_max_snoozes(value)
    assert check_max_snoozes(0) == 0
    assert DEFAULT_MAX_SNOOZES == 100


def test_entrypoint_refuses_a_bad_max_snoozes(q: pgq_nb.Queue) -> None:
    with pytest.raises(pgq_nb.InvalidInputError, match="max_snoozes must be an int"):
        q.entrypoint("x", max_snoozes=2.0)  # type: ignore[arg-type]
    with pytest.raises(pgq_nb.InvalidInputError, match=r"give 0 \(never snooze\) or more"):
        q.entrypoint("x", max_snoozes=-1)


# -- real workers -------------------------------------------------------------------------


def test_a_job_snoozes_five_times_then_succeeds_with_one_attempt(q: pgq_nb.Queue) -> None:
    seen: list[tuple[int, int]] = []
    events: list[tuple[str, str]] = []
    lock = threading.Lock()

    @q.entrypoint("poll", retry=pgq_nb.RetryPolicy(max_attempts=1))
    async def poll(job: pgq_nb.Job) -> dict[str, int]:
        seen.append((job.attempts, job.snoozes))
        if job.snoozes < 5:
            raise pgq_nb.Snooze(0.05)
        return {"after": job.snoozes}

    for event in ("started", "succeeded", "failed", "retried", "dead", "snoozed"):

        def hook(job: pgq_nb.Job, outcome: Outcome, event: str = event) -> None:
            with lock:
                events.append((event, outcome.status))

        q.on(event)(hook)

    job_id = q.enqueue("poll", {"x": 1})
    stats = q.run_until_idle(timeout=120)
    assert seen == [(1, n) for n in range(6)]  # the same attempt each time
    row = _history(q, job_id)
    assert (row["status"], row["attempts"], row["snoozes"]) == ("succeeded", 1, 5)
    assert row["errors"] is None and row["error"] is None  # a snooze is no failure
    assert (stats.snoozed, stats.succeeded, stats.failed, stats.retried) == (5, 1, 0, 0)
    assert q.get_job(job_id).result == {"after": 5}
    history = q.history()
    assert history.loc[history["job_id"] == job_id, "snoozes"].tolist() == [5]

    deadline = time.monotonic() + 30  # hooks run after the outcome is recorded, in threads
    while len(events) < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(events) == sorted(
        [("started", "running")] * 6 + [("snoozed", "snoozed")] * 5 + [("succeeded", "succeeded")]
    )


def test_a_snoozed_job_waits_its_delay_and_shows_in_the_live_queue(q: pgq_nb.Queue) -> None:
    calls: list[float] = []

    @q.entrypoint("later")
    def later(job: pgq_nb.Job) -> str:
        calls.append(time.monotonic())
        if job.snoozes == 0:
            raise pgq_nb.Snooze(dt.timedelta(seconds=1.5))
        return "done"

    job_id = q.enqueue("later")
    handle = q.start_worker()
    try:
        deadline = time.monotonic() + 60
        live: list[Any] = []
        while time.monotonic() < deadline:
            jobs = q.jobs()
            live = jobs.loc[jobs["job_id"] == job_id, "snoozes"].tolist()
            if live == [1] or q.get_job(job_id).status.is_final:
                break
            time.sleep(0.02)
        info = q.get_job(job_id)
        while not info.status.is_final and time.monotonic() < deadline:
            time.sleep(0.05)
            info = q.get_job(job_id)
    finally:
        handle.stop(timeout=30)
    assert info.status is pgq_nb.JobStatus.SUCCEEDED and info.attempts == 1
    assert len(calls) == 2
    assert calls[1] - calls[0] >= 1.4  # due after its delay (the database's clock), not before
    # seen queued with its snooze, unless the machine was slow enough to miss the window
    assert live in ([1], [])


def test_the_snooze_beyond_max_snoozes_fails_the_job_for_good(q: pgq_nb.Queue) -> None:
    @q.entrypoint("stubborn", max_snoozes=2)
    def stubborn(job: pgq_nb.Job) -> None:
        raise pgq_nb.Snooze(0)

    @q.entrypoint("never", max_snoozes=0)
    async def never(job: pgq_nb.Job) -> None:
        raise pgq_nb.Snooze(0)

    dead: list[str | None] = []
    q.on("dead")(lambda job, outcome: dead.append(outcome.error))
    capped = q.enqueue("stubborn")
    zero = q.enqueue("never")
    with pytest.warns(JobsFailed, match="2 jobs failed for good"):  # the notebook's notice
        q.run_until_idle(timeout=120)
    row = _history(q, capped)
    assert (row["status"], row["attempts"], row["snoozes"]) == ("failed", 1, 2)
    assert "snoozed 2 times already" in row["error"]
    assert "max_snoozes=2" in row["error"]
    assert "@q.entrypoint('stubborn', max_snoozes=N)" in row["error"]
    row = _history(q, zero)
    assert (row["status"], row["attempts"], row["snoozes"]) == ("failed", 1, 0)
    assert "max_snoozes=0" in row["error"]
    deadline = time.monotonic() + 30
    while len(dead) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(dead) == 2


def _snooze_once(job: pgq_nb.Job) -> dict[str, int]:
    """A handler for a process (module level: it pickles by reference)."""
    import os

    if job.snoozes == 0:
        raise pgq_nb.Snooze(0.05)
    return {"pid": os.getpid(), "snoozes": job.snoozes}


def test_a_handler_in_a_process_snoozes(q: pgq_nb.Queue) -> None:
    import os

    q.entrypoint("outside", executor="process")(_snooze_once)
    ids = q.enqueue(["outside"] * 3)
    stats = q.run_until_idle(processes=1, timeout=180)
    assert (stats.snoozed, stats.succeeded) == (3, 3)
    for job_id in ids:
        row = _history(q, job_id)
        assert (row["status"], row["attempts"], row["snoozes"]) == ("succeeded", 1, 1)
        result = q.get_job(job_id).result
        assert result["snoozes"] == 1 and result["pid"] != os.getpid()


@pytest.fixture
def writes(q: pgq_nb.Queue) -> Iterator[pgq_nb.Queue]:
    async def create() -> None:
        await q.aio.pool.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}_snooze")
        await q.aio.pool.execute(f"DROP TABLE IF EXISTS {TABLE}")
        await q.aio.pool.execute(f"CREATE TABLE {TABLE} (snoozes int)")

    runtime.run_sync(create())
    yield q
    runtime.run_sync(q.aio.pool.execute(f"DROP SCHEMA IF EXISTS {SCHEMA}_snooze CASCADE"))


def test_a_transactional_handler_that_snoozes_loses_its_writes(writes: pgq_nb.Queue) -> None:
    q = writes

    @q.entrypoint("tx", transactional=True)
    async def tx(job: pgq_nb.Job) -> int:
        await job.tx.execute(f"INSERT INTO {TABLE} VALUES ($1)", job.snoozes)
        if job.snoozes < 2:
            raise pgq_nb.Snooze(0.05)
        return job.snoozes

    job_id = q.enqueue("tx")
    q.run_until_idle(timeout=120)
    row = _history(q, job_id)
    assert (row["status"], row["attempts"], row["snoozes"]) == ("succeeded", 1, 2)
    assert _rows(q, f"SELECT snoozes FROM {TABLE}") == [{"snoozes": 2}]  # only the last run's
