"""Schedules as data (#18, item 1): q.add_schedule / update_schedule / remove_schedule of any
registered entrypoint with a payload, fired by every worker that has the entrypoint, without a
restart; the CLI's `pgq-nb schedules add|update|remove`; bad input refused with nothing
written."""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

import pgq_nb
from pgq_nb import db, runtime, schema_install, sql
from pgq_nb.errors import InvalidInputError, PayloadError, UnknownEntrypointError
from tests.conftest import REPO, SCHEMA, start_worker_process, stop_processes, wait_until

NAME = "region_every_second"


def fetch(q: pgq_nb.Queue, query: str, *args: object) -> list[dict[str, Any]]:
    return [dict(r) for r in runtime.run_sync(q.aio.pool.fetch(query, *args))]


def db_now(q: pgq_nb.Queue) -> dt.datetime:
    now: dt.datetime = runtime.run_sync(q.aio.pool.fetchval("SELECT now()"))
    return now


def tick_jobs(q: pgq_nb.Queue, name: str) -> list[dict[str, Any]]:
    """Every job (live or finished) of schedule ``name``, by fire time."""
    return fetch(
        q,
        f"SELECT id, fire_time, entrypoint, payload FROM {SCHEMA}.jobs WHERE schedule_name = $1 "
        f"UNION ALL SELECT id, fire_time, entrypoint, payload FROM {SCHEMA}.history "
        "WHERE schedule_name = $1 ORDER BY fire_time",
        name,
    )


def stored(q: pgq_nb.Queue) -> list[dict[str, Any]]:
    return fetch(q, f"SELECT * FROM {SCHEMA}.schedules ORDER BY name")


def test_three_workers_fire_a_schedule_added_changed_and_removed_by_another_process(
    q: pgq_nb.Queue, installed: str
) -> None:
    procs = [start_worker_process(installed, "region_app:q") for _ in range(3)]
    try:
        wait_until(lambda: len(q.worker_list()) == 3, 60, "three workers to start")
        # this process has no handler: the entrypoint is known from the workers' registration
        first = q.add_schedule(
            NAME,
            "* * * * * *",
            entrypoint="region_report",
            payload={"region": "eu"},
            catch_up="all",
        )
        wait_until(lambda: len(tick_jobs(q, NAME)) >= 3, 60, "three ticks")
        q.update_schedule(NAME, payload={"region": "us"})
        changed = db_now(q)
        wait_until(
            lambda: sum(t["fire_time"] > changed for t in tick_jobs(q, NAME)) >= 2, 60, "2 more"
        )
        q.remove_schedule(NAME)
        removed = db_now(q)
        assert NAME not in {s["name"] for s in q.schedule_list()}
        time.sleep(2.5)  # time for a tick after the removal to fire, if one could
        jobs = tick_jobs(q, NAME)
        statuses = q.wait([j["id"] for j in jobs], timeout=60)
    finally:
        stop_processes(procs)

    times = [j["fire_time"] for j in jobs]
    counts = collections.Counter(times)
    assert max(counts.values()) == 1, "a tick fired twice"
    assert times[0] == first
    assert all(b - a == dt.timedelta(seconds=1) for a, b in itertools.pairwise(times)), (
        f"a tick was missed: {times}"
    )
    assert times[-1] <= removed, "a tick fired after the schedule was removed"
    assert set(statuses.values()) == {"succeeded"}
    results = [q.get_job(j["id"]).result for j in jobs]
    assert {r["schedule"] for r in results} == {NAME}
    assert [r["fire_time"] for r in results] == [t.isoformat() for t in times]
    regions = [r["region"] for r in results]
    switch = regions.index("us")
    assert regions == ["eu"] * switch + ["us"] * (len(regions) - switch)
    assert switch >= 3
    # its history stays
    assert len(q.history(entrypoint="region_report")) == len(jobs)


def test_a_data_schedule_runs_its_entrypoint_with_its_payload(q: pgq_nb.Queue) -> None:
    seen: list[pgq_nb.Job] = []

    @q.entrypoint("report")
    def report(job: pgq_nb.Job) -> str:
        seen.append(job)
        return str(job.data["region"])

    # many schedules of one entrypoint, each with its own payload
    for region in ("eu", "us"):
        q.add_schedule(
            f"report_{region}", "0 * * * *", entrypoint="report", payload={"region": region}
        )
    ids = {region: q.run_schedule_now(f"report_{region}") for region in ("eu", "us")}
    q.run_until_idle()
    assert {j.id: (j.schedule_name, j.data) for j in seen} == {
        ids["eu"]: ("report_eu", {"region": "eu"}),
        ids["us"]: ("report_us", {"region": "us"}),
    }
    assert all(j.fire_time is not None and j.entrypoint == "report" for j in seen)
    listed = q.schedules().set_index("name")
    assert list(listed.index) == ["report_eu", "report_us"]
    assert set(listed["entrypoint"]) == {"report"}
    assert set(listed["source"]) == {"data"}
    assert listed["handler_registered"].all()
    assert listed.loc["report_eu", "last_status"] == "succeeded"

    # pause and resume work on them; a new expression moves the next run
    q.pause_schedule("report_eu")
    assert not bool(q.schedules().set_index("name").loc["report_eu", "enabled"])
    q.resume_schedule("report_eu")
    next_run = q.update_schedule("report_eu", cron="30 6 * * *", tz="Europe/Oslo")
    assert next_run.astimezone(dt.timezone(dt.timedelta(hours=1))).strftime("%H:%M") == "06:30"
    row = {s["name"]: s for s in stored(q)}["report_eu"]
    assert (row["expression"], row["tz"], row["enabled"]) == ("30 6 * * *", "Europe/Oslo", True)
    assert json.loads(row["payload"]) == {"region": "eu"}  # kept
    q.update_schedule("report_eu", payload=None)
    assert {s["name"]: s for s in stored(q)}["report_eu"]["payload"] is None
    q.remove_schedule("report_eu")
    assert [s["name"] for s in stored(q)] == ["report_us"]


def test_a_worker_fires_a_schedule_added_after_it_started(q: pgq_nb.Queue) -> None:
    q.entrypoint("beat")(lambda job: job.fire_time.isoformat())
    handle = q.start_worker()
    try:
        q.add_schedule("beat_every_second", "* * * * * *", entrypoint="beat", catch_up="all")
        wait_until(lambda: len(tick_jobs(q, "beat_every_second")) >= 2, 60, "two ticks")
    finally:
        handle.stop(timeout=30)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"entrypoint": "reprot"}, UnknownEntrypointError, "did you mean 'report'"),
        ({}, InvalidInputError, "needs the entrypoint"),
        ({"entrypoint": "report", "payload": {"x": object()}}, PayloadError, "cannot be stored"),
        ({"entrypoint": "report", "payload": float("nan")}, PayloadError, "NaN"),
        ({"entrypoint": "report", "cron": "0 25 * * *"}, InvalidInputError, r"field 2 \(hour\)"),
        ({"entrypoint": "report", "tz": "Europe/Olso"}, InvalidInputError, "Europe/Oslo"),
        ({"entrypoint": "report", "catch_up": "some"}, InvalidInputError, "catch_up must be"),
        ({"entrypoint": "report", "name": " padded"}, InvalidInputError, "surrounding spaces"),
        ({"entrypoint": "report", "name": "a\x00b"}, InvalidInputError, "NUL"),
        ({"entrypoint": "report", "name": "n" * 5000}, InvalidInputError, "schedule name"),
        ({"entrypoint": "report", "name": "taken"}, InvalidInputError, "already exists"),
        ({"entrypoint": "report", "name": "hourly"}, InvalidInputError, "@q.schedule"),
        ({"entrypoint": "hourly"}, InvalidInputError, "takes a Schedule, not a Job"),
    ],
)
def test_bad_input_is_refused_with_nothing_written(
    q: pgq_nb.Queue, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    q.entrypoint("report")(lambda job: None)
    q.schedule("hourly", "0 * * * *")(lambda schedule: None)
    q.add_schedule("taken", "0 * * * *", entrypoint="report")
    q.schedule_list()  # stores the @q.schedule one
    before = stored(q)
    args = {"name": "new", "cron": "0 * * * *", **kwargs}
    with pytest.raises(error, match=message):
        q.add_schedule(args.pop("name"), args.pop("cron"), **args)
    assert stored(q) == before
    assert fetch(q, f"SELECT * FROM {SCHEMA}.jobs") == []


def test_updating_and_removing_what_cannot_be_is_refused(q: pgq_nb.Queue) -> None:
    q.entrypoint("report")(lambda job: None)
    q.schedule("hourly", "0 * * * *")(lambda schedule: None)
    q.add_schedule("daily", "0 6 * * *", entrypoint="report")
    q.schedule_list()  # stores the @q.schedule one
    before = stored(q)
    with pytest.raises(
        InvalidInputError, match=r"no schedule named 'dialy' \(did you mean 'daily'"
    ):
        q.remove_schedule("dialy")
    with pytest.raises(InvalidInputError, match="no schedule named 'nope'"):
        q.update_schedule("nope", cron="0 7 * * *")
    with pytest.raises(InvalidInputError, match=r"declared in code with @q\.schedule"):
        q.remove_schedule("hourly")
    with pytest.raises(InvalidInputError, match=r"declared in code with @q\.schedule"):
        q.update_schedule("hourly", cron="0 7 * * *")
    with pytest.raises(InvalidInputError, match=r"field 1 \(minute\)"):
        q.update_schedule("daily", cron="61 * * * *")
    with pytest.raises(UnknownEntrypointError, match="did you mean 'report'"):
        q.update_schedule("daily", entrypoint="reprot")
    with pytest.raises(PayloadError):
        q.update_schedule("daily", payload={1, 2})
    assert stored(q) == before


def test_a_decorator_cannot_take_the_name_of_a_data_schedule(q: pgq_nb.Queue) -> None:
    q.entrypoint("report")(lambda job: None)
    q.add_schedule("nightly", "0 2 * * *", entrypoint="report", payload=[1])
    q.schedule("nightly", "0 3 * * *")(lambda schedule: None)
    with pytest.raises(InvalidInputError, match=r"added with q\.add_schedule"):
        q.schedule_list()
    row = {s["name"]: s for s in stored(q)}["nightly"]
    assert (row["source"], row["entrypoint"], row["expression"]) == ("data", "report", "0 2 * * *")


def _cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), PGQ_NB_DSN=dsn, PGQ_NB_SCHEMA=SCHEMA)
    return subprocess.run(
        [sys.executable, "-m", "pgq_nb.cli", *args],
        env=env,
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_cli_adds_updates_and_removes_schedules(q: pgq_nb.Queue, installed: str) -> None:
    q.entrypoint("report")(lambda job: None)
    q.enqueue("report")  # records the entrypoint, as a worker would
    done = _cli(installed, "schedules", "add", "eu", "0 * * * *", "--entrypoint", "report",
                "--payload", '{"region": "eu"}', "--tz", "Europe/Oslo")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "schedule 'eu' added" in done.stdout
    # the handler is in this test's process, and no worker runs: the shell is told, in a line
    (warned,) = [line for line in done.stderr.splitlines() if "ScheduleWithoutWorker" in line]
    assert warned.endswith(
        "schedule 'eu' added, but no live worker runs 'report' and this process has no handler "
        "of it: its ticks will wait queued until one runs (a handler here (q.start_worker()), "
        "or `pgq-nb worker app:q`)"
    )
    row = stored(q)[0]
    assert (row["name"], row["entrypoint"], row["tz"]) == ("eu", "report", "Europe/Oslo")
    assert json.loads(row["payload"]) == {"region": "eu"}
    done = _cli(installed, "schedules", "update", "eu", "--cron", "15 * * * *", "--no-payload")
    assert done.returncode == 0, done.stderr
    assert (stored(q)[0]["expression"], stored(q)[0]["payload"]) == ("15 * * * *", None)
    nothing = _cli(installed, "schedules", "update", "eu")
    assert nothing.returncode == 2
    assert "nothing to change in schedule 'eu': give --cron" in nothing.stderr
    listed = _cli(installed, "schedules")
    assert "eu" in listed.stdout and "report" in listed.stdout
    bad = _cli(installed, "schedules", "add", "x", "0 * * * *", "--entrypoint", "report",
               "--payload", "{region: eu}")  # fmt: skip
    assert bad.returncode == 2
    assert "is not JSON" in bad.stderr
    unknown = _cli(installed, "schedules", "add", "x", "0 * * * *", "--entrypoint", "reprt")
    assert unknown.returncode == 2
    assert "did you mean 'report'" in unknown.stderr
    done = _cli(installed, "schedules", "remove", "eu")
    assert done.returncode == 0, done.stderr
    assert stored(q) == []
    again = _cli(installed, "schedules", "remove", "eu")
    assert again.returncode == 2
    assert "no schedule named 'eu'" in again.stderr


def test_migration_5_keeps_existing_schedules_as_decorator_ones(installed: str) -> None:
    schema = "mig_sched_data"
    pool = runtime.run_sync(db.get_pool(installed))
    q = sql.queries(schema)

    async def at_version_4_with_a_schedule_then_migrate() -> dict[str, Any]:
        await schema_install.uninstall(pool, schema)
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(q["lock_install"], schema)
            for migration in sql.migrations(schema)[:4]:
                await conn.execute(migration.sql)
            await conn.execute(q["set_schema_version"], 4)
            await conn.execute(
                f"INSERT INTO {schema}.schedules (name, expression, tz, catch_up, next_run) "
                "VALUES ('hourly', '0 * * * *', 'UTC', 'latest', now())"
            )
            await schema_install._migrate(conn, schema, 4)
            row = await conn.fetchrow(f"SELECT * FROM {schema}.schedules")
        await schema_install.uninstall(pool, schema)
        return dict(row)

    row = runtime.run_sync(at_version_4_with_a_schedule_then_migrate())
    assert (row["name"], row["entrypoint"], row["source"], row["payload"]) == (
        "hourly",
        "hourly",
        "code",
        None,
    )
