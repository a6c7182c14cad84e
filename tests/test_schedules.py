"""Schedules in Postgres: register, fire each due tick exactly once however many workers try,
catch-up after an outage, pause/resume/run-now, the listing, and invalid input."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

import pgq_nb
from pgq_nb import runtime
from pgq_nb.errors import InvalidInputError
from pgq_nb.schedule import database, runner
from pgq_nb.schedule.cron import CronSpec, next_fire
from pgq_nb.schedule.database import ScheduleSpec
from tests.conftest import SCHEMA

T = TypeVar("T")
UTC = dt.UTC


def run(coro: Coroutine[Any, Any, T]) -> T:
    return runtime.run_sync(coro)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def rows(q: pgq_nb.Queue, query: str, *args: object) -> list[dict[str, Any]]:
    async def fetch() -> list[dict[str, Any]]:
        return [dict(r) for r in await q.aio.pool.fetch(query.format(s=SCHEMA), *args)]

    return run(fetch())


def execute(q: pgq_nb.Queue, query: str, *args: object) -> None:
    run(q.aio.pool.execute(query.format(s=SCHEMA), *args))


def schedule_row(q: pgq_nb.Queue, name: str) -> dict[str, Any]:
    return rows(q, "SELECT * FROM {s}.schedules WHERE name = $1", name)[0]


def db_now(q: pgq_nb.Queue) -> dt.datetime:
    now: dt.datetime = run(q.aio.pool.fetchval("SELECT now()"))
    return now


def register(q: pgq_nb.Queue, *specs: ScheduleSpec) -> None:
    run(database.register(q.aio.pool, q.aio.queries, list(specs)))


def fire(q: pgq_nb.Queue, *names: str, now: dt.datetime | None = None, **kw: Any) -> list[int]:
    return run(database.fire_due(q.aio.pool, q.aio.queries, list(names), now, **kw))


def set_next_run(q: pgq_nb.Queue, name: str, when: dt.datetime) -> None:
    execute(q, "UPDATE {s}.schedules SET next_run = $2 WHERE name = $1", name, when)


def tick_jobs(q: pgq_nb.Queue) -> list[dict[str, Any]]:
    return rows(
        q,
        "SELECT id, entrypoint, payload, schedule_name, fire_time FROM {s}.jobs "
        "UNION ALL SELECT id, entrypoint, payload, schedule_name, fire_time FROM {s}.history "
        "ORDER BY fire_time, id",
    )


def ticks(q: pgq_nb.Queue) -> list[dict[str, Any]]:
    return rows(q, "SELECT * FROM {s}.schedule_ticks ORDER BY schedule_name, fire_time")


# -- register --------------------------------------------------------------------------------


def test_register_creates_then_updates_keeping_enabled_and_last_run(q: pgq_nb.Queue) -> None:
    before = db_now(q)
    register(q, ScheduleSpec(name="report", expression="0 * * * *", tz="Europe/Oslo"))
    row = schedule_row(q, "report")
    assert (row["expression"], row["tz"], row["catch_up"], row["enabled"]) == (
        "0 * * * *",
        "Europe/Oslo",
        "latest",
        True,
    )
    assert row["next_run"] == next_fire(
        CronSpec(expression="0 * * * *", tz="Europe/Oslo"), row["created"]
    )
    assert before < row["next_run"] <= before + dt.timedelta(hours=1)

    marker, last = at("2031-01-01T00:00Z"), at("2030-12-31T23:00Z")
    execute(
        q,
        "UPDATE {s}.schedules SET enabled = false, last_run = $1, last_job_id = 7, "
        "next_run = $2 WHERE name = 'report'",
        last,
        marker,
    )
    again = ScheduleSpec(name="report", expression="0 * * * *", tz="Europe/Oslo", catch_up="all")
    register(q, again)
    row = schedule_row(q, "report")
    assert (row["catch_up"], row["enabled"], row["last_run"], row["last_job_id"]) == (
        "all",
        False,
        last,
        7,
    )
    assert row["next_run"] == marker  # same expression and zone: next_run kept
    assert row["last_registered"] > row["created"]

    register(q, ScheduleSpec(name="report", expression="*/5 * * * *", tz="Europe/Oslo"))
    row = schedule_row(q, "report")
    assert row["next_run"] != marker  # a new expression: its first tick after now
    assert row["next_run"] <= db_now(q) + dt.timedelta(minutes=5)
    assert (row["enabled"], row["last_run"]) == (False, last)

    set_next_run(q, "report", marker)
    register(q, ScheduleSpec(name="report", expression="*/5 * * * *", tz="America/New_York"))
    assert schedule_row(q, "report")["next_run"] != marker  # a new zone: recomputed too


def test_register_refuses_bad_input_and_writes_nothing(q: pgq_nb.Queue) -> None:
    good = ScheduleSpec(name="report", expression="0 * * * *")
    with pytest.raises(InvalidInputError, match="schedule 'report' is given twice"):
        register(q, good, ScheduleSpec(name="report", expression="*/5 * * * *"))
    with pytest.raises(InvalidInputError, match=r"specs\[1\] is a dict, not a ScheduleSpec"):
        run(database.register(q.aio.pool, q.aio.queries, [good, {"name": "x"}]))  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="field 2 \\(hour\\) '25' is out of range 0-23"):
        register(q, good, ScheduleSpec(name="nightly", expression="0 25 * * *"))
    with pytest.raises(InvalidInputError, match="unknown time zone 'Europe/Olso'"):
        register(q, ScheduleSpec(name="nightly", expression="0 2 * * *", tz="Europe/Olso"))
    register(q)  # nothing to do
    assert rows(q, "SELECT name FROM {s}.schedules") == []


# -- firing ----------------------------------------------------------------------------------


def test_a_due_tick_fires_one_job_and_moves_the_schedule_on(q: pgq_nb.Queue) -> None:
    register(q, ScheduleSpec(name="tick", expression="* * * * *"))
    set_next_run(q, "tick", at("2030-01-01T12:00Z"))
    assert fire(q, "tick", now=at("2030-01-01T11:59:59Z")) == []  # not due yet

    ids = fire(q, "tick", now=at("2030-01-01T12:00:30Z"))
    assert len(ids) == 1
    assert tick_jobs(q) == [
        {
            "id": ids[0],
            "entrypoint": "tick",
            "payload": None,
            "schedule_name": "tick",
            "fire_time": at("2030-01-01T12:00Z"),
        }
    ]
    assert [(t["schedule_name"], t["fire_time"], t["job_id"]) for t in ticks(q)] == [
        ("tick", at("2030-01-01T12:00Z"), ids[0])
    ]
    row = schedule_row(q, "tick")
    assert (row["next_run"], row["last_run"], row["last_job_id"]) == (
        at("2030-01-01T12:01Z"),
        at("2030-01-01T12:00Z"),
        ids[0],
    )
    assert fire(q, "tick", now=at("2030-01-01T12:00:30Z")) == []  # fired already
    assert fire(q, "other", now=at("2030-01-01T13:00Z")) == []  # not among the names
    assert len(tick_jobs(q)) == 1


def test_eight_concurrent_workers_fire_a_due_tick_once(q: pgq_nb.Queue) -> None:
    register(
        q,
        ScheduleSpec(name="tick", expression="* * * * *", catch_up="all"),
        ScheduleSpec(name="tock", expression="*/2 * * * *", catch_up="latest"),
    )
    set_next_run(q, "tick", at("2030-01-01T12:00Z"))
    set_next_run(q, "tock", at("2030-01-01T12:00Z"))

    async def race(now: dt.datetime) -> list[list[int]]:
        conns = [await q.aio.pool.acquire() for _ in range(8)]
        try:
            return await asyncio.gather(
                *(database.fire_due(c, q.aio.queries, ["tick", "tock"], now) for c in conns)
            )
        finally:
            for conn in conns:
                await q.aio.pool.release(conn)

    for minute in range(5):
        results = run(race(at(f"2030-01-01T12:0{minute}:10Z")))
        fired = sorted(i for ids in results for i in ids)
        assert len(fired) == (2 if minute % 2 == 0 else 1)
    assert [(j["schedule_name"], j["fire_time"].minute) for j in tick_jobs(q)] == [
        ("tick", 0),
        ("tock", 0),
        ("tick", 1),
        ("tick", 2),
        ("tock", 2),
        ("tick", 3),
        ("tick", 4),
        ("tock", 4),
    ]
    assert len(ticks(q)) == 8


def test_the_tick_record_refuses_a_second_fire_without_the_row_lock(q: pgq_nb.Queue) -> None:
    register(q, ScheduleSpec(name="tick", expression="* * * * *"))
    set_next_run(q, "tick", at("2030-01-01T12:00Z"))
    first = fire(q, "tick", now=at("2030-01-01T12:00:30Z"))
    # a worker that computed from a stale row (next_run not yet moved on) tries again
    set_next_run(q, "tick", at("2030-01-01T12:00Z"))
    assert fire(q, "tick", now=at("2030-01-01T12:00:40Z")) == []
    assert schedule_row(q, "tick")["next_run"] == at("2030-01-01T12:01Z")
    assert [j["id"] for j in tick_jobs(q)] == first

    # two transactions write the same tick at once: the second waits for the first, then
    # finds the key taken and writes nothing
    async def two_writers() -> tuple[list[Any], list[Any]]:
        query = q.aio.queries["fire_ticks"]
        tick = (["tick"], [at("2030-01-01T12:05Z")], ["tick"], [at("2030-01-01T12:06Z")])
        async with q.aio.pool.acquire() as a, q.aio.pool.acquire() as b:
            async with a.transaction():
                got_a = await a.fetch(query, *tick)
                second = asyncio.ensure_future(b.fetch(query, *tick))
                await asyncio.sleep(0.3)
                assert not second.done()  # blocked on the first writer's key
            got_b = await asyncio.wait_for(second, timeout=10)
        return got_a, got_b

    got_a, got_b = run(two_writers())
    assert len(got_a) == 1
    assert got_b == []
    assert len(tick_jobs(q)) == 2
    assert len(ticks(q)) == 2


def test_every_second_for_four_seconds_with_eight_workers_each_tick_once(
    q: pgq_nb.Queue,
) -> None:
    register(q, ScheduleSpec(name="second", expression="* * * * * *", catch_up="all"))
    start = db_now(q)

    async def worker(stop: float) -> int:
        fired = 0
        async with q.aio.pool.acquire() as conn:
            while asyncio.get_running_loop().time() < stop:
                fired += len(await database.fire_due(conn, q.aio.queries, ["second"]))
                await asyncio.sleep(random.uniform(0.0, 0.3))
        return fired

    async def workers() -> list[int]:
        stop = asyncio.get_running_loop().time() + 4.0
        return await asyncio.gather(*(worker(stop) for _ in range(8)))

    counts = run(workers())
    end = db_now(q)
    times = [t["fire_time"] for t in ticks(q)]
    jobs = tick_jobs(q)
    assert sum(counts) == len(jobs) == len(times)
    assert [j["fire_time"] for j in jobs] == times  # one job per tick
    assert times == [times[0] + dt.timedelta(seconds=i) for i in range(len(times))]  # no gaps
    assert times[0] <= start + dt.timedelta(seconds=1.5)
    assert times[-1] >= end - dt.timedelta(seconds=1.5)
    assert len(times) >= 3
    assert sum(1 for c in counts if c) >= 2  # the ticks were shared out, not all one worker's


# -- missed ticks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "now", "bound", "expected"),
    [
        ("latest", "12:35", 100, ["12:30"]),
        ("all", "12:35", 100, ["11:00", "11:10", "11:20", "11:30", "11:40", "11:50", "12:00",
                               "12:10", "12:20", "12:30"]),
        ("all", "12:35", 3, ["12:10", "12:20", "12:30"]),
        ("skip", "12:35", 100, []),
        ("skip", "12:30:20", 100, ["12:30"]),
    ],
)  # fmt: skip
def test_missed_ticks_after_an_outage(
    q: pgq_nb.Queue, policy: str, now: str, bound: int, expected: list[str]
) -> None:
    register(q, ScheduleSpec(name="report", expression="*/10 * * * *", catch_up=policy))
    set_next_run(q, "report", at("2030-01-01T11:00Z"))  # no worker ran since 11:00
    ids = fire(q, "report", now=at(f"2030-01-01T{now}Z"), max_catch_up=bound)
    assert [j["fire_time"] for j in tick_jobs(q)] == [at(f"2030-01-01T{t}Z") for t in expected]
    assert sorted(ids) == [j["id"] for j in tick_jobs(q)]
    row = schedule_row(q, "report")
    assert row["next_run"] == at("2030-01-01T12:40Z")  # dropped ticks are gone for good
    assert row["last_run"] == (at(f"2030-01-01T{expected[-1]}Z") if expected else None)
    assert fire(q, "report", now=at(f"2030-01-01T{now}Z")) == []


# -- pause, resume, run now --------------------------------------------------------------------


def test_pause_and_resume_do_not_replay_paused_ticks(q: pgq_nb.Queue) -> None:
    register(q, ScheduleSpec(name="report", expression="* * * * * *", catch_up="all"))
    run(database.pause(q.aio.pool, q.aio.queries, "report"))
    set_next_run(q, "report", db_now(q) - dt.timedelta(hours=1))  # an hour of ticks passes
    assert fire(q, "report") == []
    assert run(database.next_wakeup(q.aio.pool, q.aio.queries, ["report"])) is None

    resumed_at = db_now(q)
    next_run = run(database.resume(q.aio.pool, q.aio.queries, "report"))
    row = schedule_row(q, "report")
    assert row["enabled"]
    assert row["next_run"] == next_run
    assert resumed_at < next_run <= db_now(q) + dt.timedelta(seconds=1)
    fired = fire(q, "report", now=next_run)
    assert [j["fire_time"] for j in tick_jobs(q)] == [next_run]  # not the paused hour
    assert len(fired) == 1

    # resuming a schedule that is not paused changes nothing
    set_next_run(q, "report", at("2031-01-01T00:00Z"))
    assert run(database.resume(q.aio.pool, q.aio.queries, "report")) == at("2031-01-01T00:00Z")
    assert schedule_row(q, "report")["next_run"] == at("2031-01-01T00:00Z")


def test_run_now_queues_an_extra_run_that_leaves_the_ticks_alone(q: pgq_nb.Queue) -> None:
    register(q, ScheduleSpec(name="report", expression="* * * * *"))
    run(database.pause(q.aio.pool, q.aio.queries, "report"))
    before = schedule_row(q, "report")
    job_id = run(database.run_now(q.aio.pool, q.aio.queries, "report"))  # paused: still runs
    after = schedule_row(q, "report")
    (job,) = tick_jobs(q)
    assert (job["id"], job["entrypoint"], job["schedule_name"], job["payload"]) == (
        job_id,
        "report",
        "report",
        None,
    )
    assert abs(job["fire_time"] - db_now(q)) < dt.timedelta(seconds=5)
    assert ticks(q) == []  # not a cron tick
    assert (after["next_run"], after["last_run"]) == (before["next_run"], before["last_run"])
    assert after["last_job_id"] == job_id

    run(database.resume(q.aio.pool, q.aio.queries, "report"))
    due = schedule_row(q, "report")["next_run"]
    assert len(fire(q, "report", now=due)) == 1  # the next tick fires as planned
    assert len(tick_jobs(q)) == 2


@pytest.mark.parametrize("action", ["pause", "resume", "run_now"])
def test_unknown_schedule_names_the_known_ones_and_writes_nothing(
    q: pgq_nb.Queue, action: str
) -> None:
    call = getattr(database, action)
    with pytest.raises(InvalidInputError, match="no schedules are stored yet"):
        run(call(q.aio.pool, q.aio.queries, "report"))
    register(
        q,
        ScheduleSpec(name="report", expression="0 * * * *"),
        ScheduleSpec(name="cleanup", expression="0 3 * * *"),
    )
    before = rows(q, "SELECT * FROM {s}.schedules ORDER BY name")
    with pytest.raises(InvalidInputError, match="known schedules are 'cleanup', 'report'"):
        run(call(q.aio.pool, q.aio.queries, "reprot"))
    assert rows(q, "SELECT * FROM {s}.schedules ORDER BY name") == before
    assert tick_jobs(q) == []
    with pytest.raises(InvalidInputError, match="a schedule name is a str"):
        run(call(q.aio.pool, q.aio.queries, 42))


# -- views and helpers -------------------------------------------------------------------------


def test_list_schedules_shows_status_and_handlers_no_longer_registered(q: pgq_nb.Queue) -> None:
    register(
        q,
        ScheduleSpec(name="here", expression="0 * * * *"),
        ScheduleSpec(name="remote", expression="*/5 * * * *", tz="Europe/Oslo"),
        ScheduleSpec(name="orphan", expression="0 3 * * *", catch_up="skip"),
    )
    q.entrypoint("here")(lambda job: None)
    run(database.run_now(q.aio.pool, q.aio.queries, "here"))
    q.run_until_idle()  # the job succeeds; its worker deregisters when idle
    run(database.run_now(q.aio.pool, q.aio.queries, "orphan"))  # queued, nobody runs it
    execute(
        q,
        "INSERT INTO {s}.workers (host, pid, entrypoints, concurrency, heartbeat) VALUES "
        "('box', 1, '{{remote}}', 4, now()), ('box', 2, '{{orphan}}', 4, now() - interval '1 h')",
    )
    listed = run(database.list_schedules(q.aio.pool, q.aio.queries, {"here"}))
    by_name = {entry["name"]: entry for entry in listed}
    assert [entry["name"] for entry in listed] == ["here", "orphan", "remote"]
    assert by_name["here"]["last_status"] == "succeeded"
    assert (by_name["here"]["registered_here"], by_name["here"]["handler_registered"]) == (
        True,
        True,
    )
    assert by_name["remote"]["live_workers"] == 1
    assert by_name["remote"]["handler_registered"] is True
    assert by_name["remote"]["last_status"] is None
    assert by_name["remote"]["tz"] == "Europe/Oslo"
    orphan = by_name["orphan"]
    assert (orphan["live_workers"], orphan["registered_here"]) == (0, False)
    assert orphan["handler_registered"] is False  # only a dead worker had it: shown as such
    assert (orphan["last_status"], orphan["catch_up"], orphan["enabled"]) == (
        "queued",
        "skip",
        True,
    )
    assert set(orphan) >= {"expression", "next_run", "last_run", "last_job_id"}


def test_next_wakeup_is_the_earliest_enabled_next_run(q: pgq_nb.Queue) -> None:
    register(
        q,
        ScheduleSpec(name="a", expression="0 * * * *"),
        ScheduleSpec(name="b", expression="0 * * * *"),
        ScheduleSpec(name="c", expression="0 * * * *"),
    )
    set_next_run(q, "a", at("2030-01-01T10:00Z"))
    set_next_run(q, "b", at("2030-01-01T09:00Z"))
    set_next_run(q, "c", at("2030-01-01T08:00Z"))
    run(database.pause(q.aio.pool, q.aio.queries, "c"))
    wakeup = database.next_wakeup
    assert run(wakeup(q.aio.pool, q.aio.queries, ["a", "b", "c"])) == at("2030-01-01T09:00Z")
    assert run(wakeup(q.aio.pool, q.aio.queries, ["a"])) == at("2030-01-01T10:00Z")
    assert run(wakeup(q.aio.pool, q.aio.queries, ["nope"])) is None
    assert run(wakeup(q.aio.pool, q.aio.queries, [])) is None
    with pytest.raises(InvalidInputError, match="a list of schedule names"):
        run(wakeup(q.aio.pool, q.aio.queries, "a"))


def test_a_handler_gets_the_tick_and_the_one_fired_before_it(q: pgq_nb.Queue) -> None:
    register(
        q,
        ScheduleSpec(name="report", expression="0 * * * *", tz="America/New_York", catch_up="all"),
    )
    set_next_run(q, "report", at("2026-11-01T05:00Z"))
    fire(q, "report", now=at("2026-11-01T06:30Z"))  # 01:00 EDT and 01:00 EST
    first, second = (j["fire_time"] for j in tick_jobs(q))
    schedule = run(database.schedule_for_tick(q.aio.pool, q.aio.queries, "report", second))
    assert (schedule.name, schedule.expression, schedule.tz) == (
        "report",
        "0 * * * *",
        "America/New_York",
    )
    assert schedule.fire_time.isoformat() == "2026-11-01T01:00:00-05:00"
    assert schedule.last_fire_time is not None
    assert schedule.last_fire_time.isoformat() == "2026-11-01T01:00:00-04:00"
    earliest = run(database.schedule_for_tick(q.aio.pool, q.aio.queries, "report", first))
    assert earliest.last_fire_time is None


def test_prune_ticks_keeps_each_schedules_newest(q: pgq_nb.Queue) -> None:
    register(q, ScheduleSpec(name="report", expression="*/10 * * * *", catch_up="all"))
    set_next_run(q, "report", at("2020-01-01T11:00Z"))
    fire(q, "report", now=at("2020-01-01T11:35Z"))
    assert len(ticks(q)) == 4
    # a tick is forgotten by when it was fired (a backfilled old tick is remembered a week too)
    assert run(database.prune_ticks(q.aio.pool, q.aio.queries, dt.timedelta(days=1))) == 0
    execute(q, f"UPDATE {SCHEMA}.schedule_ticks SET fired = fire_time")
    assert run(database.prune_ticks(q.aio.pool, q.aio.queries, dt.timedelta(days=1))) == 3
    assert [t["fire_time"] for t in ticks(q)] == [at("2020-01-01T11:30Z")]
    assert run(database.prune_ticks(q.aio.pool, q.aio.queries)) == 0


_T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("wake_in_s", "listening", "sleep"),
    [
        (None, True, runner.MAX_SLEEP),  # no schedule: a NOTIFY wakes it when one is added
        (None, False, runner.POLL),  # no LISTEN: it polls, to see changes within a second
        (3600.0, True, runner.MAX_SLEEP),  # far off: bounded, in case a NOTIFY was missed
        (5.0, True, 5.0),
        (5.0, False, runner.POLL),
        (0.25, True, 0.25),
        (-10.0, True, runner.POLL),  # another worker is firing it, or this one cannot
    ],
)
def test_the_scheduler_sleeps_until_the_next_run_bounded(
    wake_in_s: float | None, listening: bool, sleep: float
) -> None:
    wake = None if wake_in_s is None else _T0 + dt.timedelta(seconds=wake_in_s)
    assert runner.sleep_for(wake, _T0, listening) == pytest.approx(sleep)
