"""Schedules inside workers: the seed's example as written, exactly-once ticks on many
processes, run-now, pause and resume, listing."""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import signal
import statistics
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

import pgq_nb
from pgq_nb import Schedule, runtime
from tests.conftest import SCHEMA, start_worker_process


def test_the_seed_example_runs_as_written(q: pgq_nb.Queue) -> None:
    pgq = q  # the seed names its queue object `pgq`
    reports: list[tuple[dt.datetime, dt.datetime | None]] = []

    @pgq.schedule("hourly_report", "0 * * * *")  # Every hour
    async def generate_hourly_report(schedule: Schedule) -> None:
        """Generate hourly analytics report."""
        from datetime import datetime, timedelta

        now = datetime.now()
        hour_ago = now - timedelta(hours=1)
        print(f"Generating report for {hour_ago} to {now}")
        reports.append((schedule.fire_time, schedule.last_fire_time))

    job_id = q.run_schedule_now("hourly_report")
    q.run_until_idle()
    assert q.get_job(job_id).status is pgq_nb.JobStatus.SUCCEEDED
    assert len(reports) == 1
    listed = q.schedules()
    row = listed.set_index("name").loc["hourly_report"]
    assert row["expression"] == "0 * * * *"
    assert row["tz"] == "UTC"
    assert row["last_status"] == "succeeded"
    assert bool(row["enabled"])
    assert row["next_run"] > pd.Timestamp.now(tz="UTC")
    assert row["next_run"].minute == 0


def test_per_second_schedule_in_a_notebook_worker(q: pgq_nb.Queue) -> None:
    seen: list[Schedule] = []

    @q.schedule("tick", "* * * * * *", tz="Europe/Oslo")
    def tick(schedule: Schedule) -> str:
        seen.append(schedule)
        return schedule.fire_time.isoformat()

    handle = q.start_worker()
    try:
        time.sleep(3.5)
    finally:
        handle.stop(timeout=30)
    times = [s.fire_time for s in seen]
    assert len(times) >= 3
    assert len(set(times)) == len(times)
    assert all(b - a == dt.timedelta(seconds=1) for a, b in itertools.pairwise(times))
    assert str(seen[0].fire_time.tzinfo) == "Europe/Oslo"
    assert all(s.last_fire_time == times[i] for i, s in enumerate(seen[1:]))


def test_pause_resume_and_unregistered_handlers(q: pgq_nb.Queue, installed: str) -> None:
    @q.schedule("paused_one", "* * * * * *")
    def paused_one(schedule: Schedule) -> None:
        raise AssertionError("a paused schedule fired")

    handle = q.start_worker()
    try:
        q.pause_schedule("paused_one")
        time.sleep(0.5)
        before = len(q.history(entrypoint="paused_one"))
        time.sleep(1.5)
        assert len(q.history(entrypoint="paused_one")) == before
        assert not bool(q.schedules().set_index("name").loc["paused_one", "enabled"])
    finally:
        handle.stop(timeout=30)
    other = pgq_nb.connect(installed, schema=q.schema)  # a process without the handler
    row = other.schedules().set_index("name").loc["paused_one"]
    assert not bool(row["handler_registered"])
    with pytest.raises(pgq_nb.InvalidInputError, match="paused_one"):
        other.pause_schedule("no_such_schedule")


@pytest.mark.parametrize(
    ("expression", "tz", "message"),
    [
        ("0 25 * * *", "UTC", r"field 2 \(hour\)"),
        ("* * *", "UTC", "field"),
        ("0 * * * *", "Europe/Olso", "unknown time zone 'Europe/Olso'"),
    ],
)
def test_invalid_schedules_are_refused(
    q: pgq_nb.Queue, expression: str, tz: str, message: str
) -> None:
    with pytest.raises(pgq_nb.InvalidInputError, match=message):
        q.schedule("bad", expression, tz=tz)


def test_schedule_name_must_not_clash_with_an_entrypoint(q: pgq_nb.Queue) -> None:
    q.entrypoint("report")(lambda job: None)
    with pytest.raises(pgq_nb.InvalidInputError, match="already an entrypoint"):
        q.schedule("report", "0 * * * *")


def test_every_tick_fires_exactly_once_on_four_processes(
    q: pgq_nb.Queue, installed: str, tmp_path: Path
) -> None:
    procs = [
        start_worker_process(installed, "cron_app:q", RUN_LOG_DIR=str(tmp_path)) for _ in range(4)
    ]
    began = dt.datetime.now(dt.UTC)
    try:
        time.sleep(20)
    finally:
        ended = dt.datetime.now(dt.UTC)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    fired: collections.Counter[dt.datetime] = collections.Counter()
    lateness: list[float] = []
    for log in tmp_path.glob("ticks-*.log"):
        for line in log.read_text().splitlines():
            when, late, _ = line.split()
            fired[dt.datetime.fromisoformat(when)] += 1
            lateness.append(float(late))
    assert max(fired.values()) == 1, "a tick fired twice"
    # every second of the window, except the first (workers starting) and the last (stopping)
    start = (began + dt.timedelta(seconds=3)).replace(microsecond=0)
    wanted = [
        start + dt.timedelta(seconds=i) for i in range(int((ended - start).total_seconds()) - 1)
    ]
    missing = [t for t in wanted if t not in fired]
    assert not missing, f"ticks never fired: {missing}"
    assert len(wanted) >= 15
    print(
        f"tick lateness: median {statistics.median(lateness) * 1000:.1f} ms, "
        f"worst {max(lateness) * 1000:.1f} ms over {len(lateness)} ticks"
    )


def _quiet(dsn: str) -> pgq_nb.Queue:
    """A queue whose workers beat and poll once a minute: all else they do is the scheduler's."""
    return pgq_nb.connect(
        dsn, schema=SCHEMA, heartbeat_interval=60, heartbeat_timeout=300, poll_interval=60
    )


def _schedule_reads(q: pgq_nb.Queue) -> int:
    """How often the server has scanned the schedules table (every look of a scheduler does)."""
    value: int = runtime.run_sync(
        q.aio.pool.fetchval(
            "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables "
            "WHERE schemaname = $1 AND relname = 'schedules'",
            SCHEMA,
        )
    )
    return value


def _until(check: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not callable(check) or not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_an_idle_worker_with_no_schedules_leaves_the_schedules_table_alone(
    q: pgq_nb.Queue, installed: str
) -> None:
    """The scheduler sleeps until a schedule is due (here: none), not a second at a time. The
    count is the server's own (pg_stat_user_tables): a busy session reports its scans every
    second, an idle one within 10 s (so the start's are left to be counted first)."""
    quiet = _quiet(installed)
    quiet.entrypoint("idle")(lambda job: None)
    handle = quiet.start_worker()
    try:
        time.sleep(15)  # started, and the start's scans reported
        before = _schedule_reads(q)
        time.sleep(8)
        after = _schedule_reads(q)
    finally:
        handle.stop(timeout=30)
    # a scheduler looking every second made ~16 (two a look, each scanning the table)
    assert after - before <= 2


def test_a_schedule_added_or_resumed_while_the_worker_sleeps_fires_its_first_tick(
    q: pgq_nb.Queue, installed: str
) -> None:
    """The NOTIFY of add_schedule and resume_schedule wakes the sleeping scheduler: the first
    tick fires (with catch_up='latest', a look a minute later would fire a later one)."""
    quiet = _quiet(installed)
    fired: list[dt.datetime] = []
    quiet.entrypoint("report")(lambda job: fired.append(job.fire_time))
    handle = quiet.start_worker()
    try:
        time.sleep(2)  # the scheduler found no schedule: it sleeps a minute
        first = q.add_schedule("soon", "*/2 * * * * *", entrypoint="report")
        _until(lambda: fired, timeout=30)
        assert fired[0] == first
        q.pause_schedule("soon")
        time.sleep(3)  # it woke at the paused schedule's next run, found none due: sleeps long
        resumed = q.resume_schedule("soon")
        _until(lambda: resumed in fired, timeout=30)
    finally:
        handle.stop(timeout=30)
