"""Backfill (#18, item 2): q.backfill / `pgq-nb backfill` enqueue every tick of a range that
has not fired, exactly once even from two processes at once, in time order; handlers see the
tick's fire_time; bad ranges are refused with nothing written."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import subprocess
import sys
from typing import Any

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

import pgq_nb
from pgq_nb import runtime
from pgq_nb.errors import InvalidInputError
from pgq_nb.notebook.schedule_frames import BackfillBar
from pgq_nb.schedule import data
from pgq_nb.schedule.cron import CronSpec
from pgq_nb.schedule.data import BACKFILL_LIMIT, backfill_ticks
from tests.conftest import REPO, SCHEMA

UTC = dt.UTC


def fetch(q: pgq_nb.Queue, query: str, *args: object) -> list[dict[str, Any]]:
    return [dict(r) for r in runtime.run_sync(q.aio.pool.fetch(query, *args))]


def jobs(q: pgq_nb.Queue) -> list[dict[str, Any]]:
    return fetch(
        q,
        f"SELECT id, fire_time, schedule_name, payload FROM {SCHEMA}.jobs "
        f"UNION ALL SELECT id, fire_time, schedule_name, payload FROM {SCHEMA}.history ORDER BY id",
    )


def minute(now: dt.datetime) -> dt.datetime:
    return now.astimezone(UTC).replace(second=0, microsecond=0)


def _cli(dsn: str, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), PGQ_NB_DSN=dsn, PGQ_NB_SCHEMA=SCHEMA)
    return subprocess.Popen(
        [sys.executable, "-m", "pgq_nb.cli", *args],
        env=env,
        cwd=str(REPO),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_backfill_run_twice_at_once_from_two_processes_enqueues_each_tick_once(
    q: pgq_nb.Queue, installed: str
) -> None:
    q.entrypoint("report")(lambda job: None)
    q.add_schedule("per_minute", "* * * * *", entrypoint="report", payload={"region": "eu"})
    end = minute(dt.datetime.now(UTC)) - dt.timedelta(hours=1)
    start = end - dt.timedelta(minutes=1000)
    args = ("backfill", "per_minute", start.isoformat(), end.isoformat())
    procs = [_cli(installed, *args) for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    enqueued = []
    for out, _ in outs:
        found = re.search(r"enqueued ([\d,]+) of 1,000 ticks", out)
        assert found, out
        enqueued.append(int(found[1].replace(",", "")))
    assert sum(enqueued) == 1000
    made = jobs(q)
    assert len(made) == 1000
    wanted = [start + dt.timedelta(minutes=i) for i in range(1000)]
    assert sorted(j["fire_time"] for j in made) == wanted
    # each process's jobs are in time order (claimed oldest first)
    times = [j["fire_time"] for j in made]
    assert times == sorted(times)
    assert {j["schedule_name"] for j in made} == {"per_minute"}
    assert {bytes(j["payload"]) for j in made} == {b'{"region":"eu"}'}


def test_concurrent_backfills_on_two_connections_fire_each_tick_once(q: pgq_nb.Queue) -> None:
    q.entrypoint("report")(lambda job: None)
    q.add_schedule("per_minute", "* * * * *", entrypoint="report")
    end = minute(dt.datetime.now(UTC)) - dt.timedelta(hours=1)
    start = end - dt.timedelta(minutes=3000)  # three batches each, interleaved

    async def both() -> list[list[dict[str, Any]]]:
        runs = [
            data.backfill(q.aio.pool, q.aio.queries, "per_minute", start, end) for _ in range(2)
        ]
        return list(await asyncio.gather(*runs))

    first, second = runtime.run_sync(both())
    assert [r["job_id"] for r in first] == [r["job_id"] for r in second]
    assert all(a["enqueued"] != b["enqueued"] for a, b in zip(first, second, strict=True))
    made = jobs(q)
    assert len(made) == 3000
    assert sorted(j["id"] for j in made) == sorted(r["job_id"] for r in first)


def test_backfill_skips_what_fired_and_handlers_see_their_tick(
    q: pgq_nb.Queue, capsys: pytest.CaptureFixture[str]
) -> None:
    covered: list[dt.datetime] = []

    @q.entrypoint("hourly_report")
    def hourly_report(job: pgq_nb.Job) -> str:
        assert job.fire_time is not None
        covered.append(job.fire_time)  # a backfilled report covers its own hour
        return f"{job.data['region']} {job.fire_time:%H}"

    q.add_schedule(
        "report_eu",
        "0 * * * *",
        entrypoint="hourly_report",
        payload={"region": "eu"},
        tz="Europe/Oslo",
    )
    end = minute(dt.datetime.now(UTC)).replace(minute=0) - dt.timedelta(hours=2)
    start = end - dt.timedelta(hours=6)
    half = q.backfill("report_eu", start + dt.timedelta(hours=3), end, progress=False)
    assert list(half["enqueued"]) == [True] * 3
    frame = q.backfill("report_eu", start, end, progress=True)
    assert "backfill report_eu" in capsys.readouterr().err  # the bar
    assert list(frame.columns) == ["fire_time", "job_id", "enqueued"]
    assert str(frame["fire_time"].dt.tz) == "Europe/Oslo"
    assert str(frame["job_id"].dtype) == "Int64"
    assert list(frame["fire_time"]) == [
        pd.Timestamp(start + dt.timedelta(hours=i)).tz_convert("Europe/Oslo") for i in range(6)
    ]
    assert list(frame["enqueued"]) == [True] * 3 + [False] * 3
    assert list(frame["job_id"][3:]) == list(half["job_id"])
    again = q.backfill("report_eu", start, end, progress=False)
    assert not again["enqueued"].any()
    assert list(again["job_id"]) == list(frame["job_id"])
    q.run_until_idle()
    assert sorted(covered) == [start + dt.timedelta(hours=i) for i in range(6)]
    assert len(jobs(q)) == 6


def test_a_range_into_the_future_stops_at_now(q: pgq_nb.Queue) -> None:
    q.entrypoint("report")(lambda job: None)
    q.add_schedule("daily", "0 0 * * *", entrypoint="report")
    today = minute(dt.datetime.now(UTC)).replace(hour=0, minute=0)
    frame = q.backfill("daily", today - dt.timedelta(days=2), today + dt.timedelta(days=5))
    assert len(frame) == 3  # the day before yesterday, yesterday, today; the rest is the workers'
    assert frame["enqueued"].all()


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (
            dt.datetime(2026, 1, 2, tzinfo=UTC),
            dt.datetime(2026, 1, 1, tzinfo=UTC),
            "is after end .* swap them",
        ),
        (dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 2, tzinfo=UTC), "timezone-aware"),
        (
            dt.datetime(2026, 1, 1, tzinfo=UTC),
            dt.datetime(2026, 1, 3, tzinfo=UTC),
            r"more than 100,000 ticks .* force=True",
        ),
    ],
)
def test_bad_ranges_are_refused_with_nothing_written(
    q: pgq_nb.Queue, start: dt.datetime, end: dt.datetime, message: str
) -> None:
    q.entrypoint("report")(lambda job: None)
    q.add_schedule("every_second", "* * * * * *", entrypoint="report")
    with pytest.raises(InvalidInputError, match=message):
        q.backfill("every_second", start, end)
    assert jobs(q) == []
    assert fetch(q, f"SELECT * FROM {SCHEMA}.schedule_ticks") == []


def test_unknown_schedule_and_bad_cli_times_are_refused(q: pgq_nb.Queue, installed: str) -> None:
    q.entrypoint("report")(lambda job: None)
    q.add_schedule("daily", "0 0 * * *", entrypoint="report")
    when = dt.datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(InvalidInputError, match=r"no schedule named 'dayly' \(did you mean"):
        q.backfill("dayly", when, when)
    naive = _cli(installed, "backfill", "daily", "2026-01-01T00:00", "2026-01-02T00:00Z")
    _, err = naive.communicate(timeout=120)
    assert naive.returncode == 2
    assert "with its offset" in err
    assert jobs(q) == []


@pytest.mark.parametrize(
    ("expression", "hours", "force", "count"),
    [
        ("*/10 * * * * *", 24, False, 8_640),
        ("* * * * * *", 28, True, 100_800),
        ("0 * * * *", 72, False, 72),
    ],
)
def test_backfill_ticks_limit(expression: str, hours: int, force: bool, count: int) -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    end = start + dt.timedelta(hours=hours)
    now = end + dt.timedelta(days=1)
    ticks = backfill_ticks(CronSpec(expression=expression, tz="UTC"), "x", start, end, now, force)
    assert len(ticks) == count
    assert ticks[0] == start and ticks[-1] < end
    assert count <= BACKFILL_LIMIT or force


def test_a_paused_schedule_is_not_backfilled_unless_asked(q: pgq_nb.Queue) -> None:
    q.entrypoint("report")(lambda job: None)
    q.add_schedule("hourly", "0 * * * *", entrypoint="report")
    q.pause_schedule("hourly")
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    end = start + dt.timedelta(hours=6)
    with pytest.raises(
        InvalidInputError,
        match=r"schedule 'hourly' is paused, so nothing was backfilled: resume it with "
        r"q.resume_schedule\('hourly'\) first, or pass include_paused=True",
    ):
        q.backfill("hourly", start, end)
    assert jobs(q) == []
    rows = runtime.run_sync(
        data.backfill(q.aio.pool, q.aio.queries, "hourly", start, end, include_paused=True)
    )
    assert [r["enqueued"] for r in rows] == [True] * 6
    assert len(jobs(q)) == 6
    assert not bool(q.schedules().set_index("name").loc["hourly", "enabled"])  # still paused
    q.resume_schedule("hourly")
    assert q.backfill("hourly", start, end)["enqueued"].sum() == 0


def test_include_paused_from_the_queue_and_the_cli(q: pgq_nb.Queue, installed: str) -> None:
    q.entrypoint("report")(lambda job: None)
    q.add_schedule("hourly", "0 * * * *", entrypoint="report")
    q.pause_schedule("hourly")
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    frame = q.backfill("hourly", start, start + dt.timedelta(hours=3), include_paused=True)
    assert frame["enqueued"].tolist() == [True] * 3
    refused = _cli(installed, "backfill", "hourly", "2026-01-02T00:00Z", "2026-01-02T02:00Z")
    out, err = refused.communicate(timeout=60)
    assert refused.returncode != 0 and "is paused" in err, (out, err)
    cli = _cli(
        installed,
        "backfill",
        "hourly",
        "2026-01-02T00:00Z",
        "2026-01-02T02:00Z",
        "--include-paused",
    )
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 0, err
    assert "enqueued 2 of 2 ticks" in out
    assert len(jobs(q)) == 5


def test_the_backfill_bar_sums_up_what_it_did(q: pgq_nb.Queue) -> None:
    q.entrypoint("report")(lambda job: None)
    q.add_schedule("every_5", "*/5 * * * *", entrypoint="report")
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    q.backfill("every_5", start, start + dt.timedelta(hours=1))
    bar = BackfillBar(False, "every_5")
    with bar:
        runtime.run_sync(
            data.backfill(
                q.aio.pool,
                q.aio.queries,
                "every_5",
                start,
                start + dt.timedelta(hours=2),
                on_start=bar.start,
                on_batch=bar.update,
                on_fired=bar.fired,
            )
        )
    assert bar.summary() == "backfill of 'every_5': 24 ticks, 12 enqueued"
    bar.start(5)
    bar.update(2)
    assert bar.summary(failed=True) == "backfill of 'every_5': stopped after 2 of 5 ticks"


def test_a_saved_notebook_shows_how_the_backfill_ended(q: pgq_nb.Queue, installed: str) -> None:
    """A widget's state is not in the saved notebook (nbclient here, as in papermill or
    nbconvert): its text is the bar's first state. The line under it says how it ended."""
    q.entrypoint("report")(lambda job: None)
    q.add_schedule("every_5", "*/5 * * * *", entrypoint="report")
    code = (
        "import datetime as dt\n"
        "import pgq_nb\n"
        f"q = pgq_nb.connect({installed!r}, schema={SCHEMA!r})\n"
        "start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)\n"
        "ticks = q.backfill('every_5', start, start + dt.timedelta(days=1), progress=True)"
    )
    nb = nbformat.v4.new_notebook()  # type: ignore[no-untyped-call]
    nb.cells = [nbformat.v4.new_code_cell(code)]  # type: ignore[no-untyped-call]
    client = NotebookClient(nb, timeout=120, kernel_name="python3", record_timing=False)
    client.execute(env=dict(os.environ, PYTHONPATH=str(REPO)))
    shown = [
        out.get("data", {}).get("text/plain", "")
        for out in nb.cells[0].outputs
        if out.output_type == "display_data"
    ]
    assert any(re.search(r"0/288 ", text) for text in shown), shown  # whole numbers
    assert not any("0.00/" in text for text in shown), shown
    assert any(text.startswith("backfill of 'every_5': 288 ticks") for text in shown), shown
    assert len(jobs(q)) == 288
