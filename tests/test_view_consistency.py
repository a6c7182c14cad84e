"""The notebook views agree with each other (#16, items 3 and 9).

* No view truncates silently: a default row cap that leaves rows out warns ViewTruncated with
  the exact number left out and the ways to the rest; counting is done by ``q.stats()``, which
  counts with aggregates (``since=``/``until=`` for a span), never by ``len()`` of a capped list.
* Every notebook view is a DataFrame, and a column means the same dtype wherever it appears:
  ids ``Int64``, counts ``int64``, times ``datetime64[us, UTC]``, durations ``float64`` seconds,
  statuses categoricals of every job (or workflow run) status. The records forms
  (``worker_list``, ``schedule_list``, ``failed_jobs``, ``flow``, ``counts``) keep their names.
* A schedule run with ``run_schedule_now`` is its last run, with that run's status.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

import pgq_nb
from pgq_nb import runtime
from pgq_nb.models import STATUSES, WORKFLOW_STATUSES
from pgq_nb.notebook import frames, overview
from pgq_nb.notebook.dashboard import dashboard
from pgq_nb.notebook.dashboard_data import SnapshotReader
from pgq_nb.view_limits import (
    HISTORY_LIMIT,
    DefaultLimit,
    ViewTruncated,
    is_default,
    truncated_message,
)
from tests.conftest import SCHEMA, wait_until, worker_env

REPO = Path(__file__).resolve().parent.parent

TIME = "datetime64[us, UTC]"
#: What a column of a notebook view holds, by its name, wherever it appears.
BY_NAME = {
    "entrypoint": "str",
    "name": "str",
    "error": "str",
    "attempts": "Int64",
    "priority": "Int64",
    "created": TIME,
    "execute_after": TIME,
    "started": TIME,
    "finished": TIME,
    "next_run": TIME,
    "last_run": TIME,
    "heartbeat": TIME,
    "steps": "int64",
    "running": "int64",
    "waiting": "int64",
    "done": "float64",
    "jobs_per_minute": "float64",
}


def expected_dtype(view: str, column: str) -> str | None:
    """The dtype a column must have by the one rule, or None for a view's own column."""
    if column in ("status", "last_status"):
        return "workflow status" if view == "workflows" else "job status"
    if column.endswith("_id") or column == "pid":
        return "Int64"
    if column.endswith("_s"):  # durations: seconds as float64, NaN when unknown
        return "float64"
    if column in STATUSES:  # a count per status (stats, workflows)
        return "int64"
    return BY_NAME.get(column)


def dtype_name(series: pd.Series) -> str:
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        categories = tuple(dtype.categories)
        if categories == STATUSES:
            return "job status"
        if categories == WORKFLOW_STATUSES:
            return "workflow status"
        return f"category{categories}"
    return str(dtype)


def _sql(q: pgq_nb.Queue, query: str, *args: Any) -> Any:
    return runtime.run_sync(q.aio.pool.fetchval(query.replace("{schema}", SCHEMA), *args))


@pytest.fixture
def populated(q: pgq_nb.Queue) -> Iterator[dict[str, Any]]:
    """Jobs of every kind, a schedule run, a workflow run, a limit and a live worker."""
    q.entrypoint("ok", max_running=4)(lambda job: {"double": job.data["x"] * 2})
    q.entrypoint("bad", retry=pgq_nb.RetryPolicy(max_attempts=1))(lambda job: 1 / 0)
    q.entrypoint("later")(lambda job: None)

    @q.schedule("tick", "0 0 1 1 *")
    def tick(schedule: pgq_nb.Schedule) -> str:
        return "ticked"

    q.enqueue_df("ok", pd.DataFrame({"x": [1, 2, 3]}))
    q.enqueue("bad", {"x": 1})
    q.enqueue(["later", "later"], execute_after=dt.timedelta(hours=1))
    wf = q.workflow("etl")
    wf.step("ok", {"x": 5}, depends_on=wf.step("ok", {"x": 4}))
    run = wf.submit()
    q.run_schedule_now("tick")
    q.run_until_idle()
    handle = q.start_worker(entrypoints=["ok"])
    try:
        wait_until(lambda: len(q.worker_list()) == 1, 30, "the worker to register")
        yield {"run": run}
    finally:
        handle.stop()


def test_every_notebook_view_is_a_frame_with_one_dtype_per_kind_of_column(
    q: pgq_nb.Queue, populated: dict[str, Any]
) -> None:
    views: dict[str, Callable[[], Any]] = {
        "jobs": q.jobs,
        "history": q.history,
        "failed": q.failed,
        "stats": q.stats,
        "results": lambda: q.results("ok", expand=False),
        "schedules": q.schedules,
        "workflows": q.workflows,
        "limits": q.limits,
        "workers": q.workers,
        "steps": populated["run"].status,
        "retention": lambda: q.retention("ok", keep_last=5),
        "storage": q.storage,
    }
    wrong = []
    for view, call in views.items():
        frame = call()
        if not isinstance(frame, pd.DataFrame):
            wrong.append(f"{view}: a {type(frame).__name__}, not a DataFrame")
            continue
        assert len(frame) > 0, f"{view} is empty: the test would check no value"
        for column in frame.columns:
            want = expected_dtype(view, str(column))
            got = dtype_name(frame[column])
            if want is not None and got != want:
                wrong.append(f"{view}.{column}: {got}, not {want}")
    assert wrong == []


def test_workers_is_a_frame_and_worker_list_the_records(
    q: pgq_nb.Queue, populated: dict[str, Any]
) -> None:
    (listed,) = q.worker_list()
    workers = q.workers()
    assert list(workers.columns) == [
        "worker_id",
        "host",
        "pid",
        "entrypoints",
        "concurrency",
        "executor",
        "processes",
        "scheduler",
        "started",
        "heartbeat",
    ]
    row = workers.iloc[0]
    assert row["worker_id"] == listed["id"] and row["entrypoints"] == ["ok"]
    assert str(workers["concurrency"].dtype) == "Int64"
    assert row["executor"] == "thread" and pd.isna(row["processes"])
    assert pd.isna(row["scheduler"])  # a Dask scheduler's address, for executor "dask"
    empty = overview.workers_frame([])
    assert empty.dtypes.equals(workers.dtypes)  # the same schema with no worker alive


def test_workflows_status_is_a_categorical_of_the_run_statuses(
    q: pgq_nb.Queue, populated: dict[str, Any]
) -> None:
    runs = q.workflows()
    assert list(runs["status"]) == ["succeeded"]
    assert list(runs["status"].cat.categories) == ["running", "succeeded", "failed", "cancelled"]
    assert runs["steps"].tolist() == [2] and runs["succeeded"].tolist() == [2]
    empty = q.workflows(name="nothing")
    assert empty.dtypes.equals(runs.dtypes)
    assert _sql(
        q,
        "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint AS c "
        "WHERE c.conrelid = '{schema}.workflows'::regclass AND c.contype = 'c'",
    ) == "CHECK ((status = ANY (ARRAY[{}])))".format(
        ", ".join(f"'{s}'::text" for s in WORKFLOW_STATUSES)
    )


# -- capped views --------------------------------------------------------------------------


def test_history_beyond_its_default_cap_warns_how_many_it_left_out(q: pgq_nb.Queue) -> None:
    """The hourly report's bug: 15,174 orders converted, q.history() said 10,000."""
    q.entrypoint("convert")(lambda job: None)
    ids = q.enqueue_df(
        "convert", pd.DataFrame({"n": range(15_174)}), execute_after=dt.timedelta(hours=1)
    )
    with pytest.warns(ViewTruncated, match=r"q\.jobs\(\) shows the oldest 1,000 of 15,174"):
        live = q.jobs()
    assert len(live) == 1_000
    q.cancel([int(i) for i in ids])  # every one finished (cancelled), the real path

    with pytest.warns(ViewTruncated) as caught:
        history = q.history()
    assert len(history) == 10_000
    (warning,) = [w.message for w in caught]
    assert isinstance(warning, ViewTruncated)
    assert (warning.shown, warning.total, warning.left_out, warning.exact) == (
        10_000,
        15_174,
        5_174,
        True,
    )
    message = str(warning)
    assert "the newest 10,000 of 15,174 finished jobs (5,174 left out)" in message
    # said as from pgq_nb, not from a library file and line (one line under the cell)
    (record,) = caught.list
    assert (record.filename, record.lineno) == ("pgq_nb", 0)
    assert "limit=None" in message and "q.stats()" in message
    with pytest.warns(ViewTruncated, match="5,174 left out"):
        q.history()  # again: a second call leaves them out too, and says so again
    with pytest.warns(ViewTruncated, match="10,000 of 15,174"):
        q.history(since="1h", entrypoint="convert", status="cancelled")  # counted in the range

    with warnings.catch_warnings():
        warnings.simplefilter("error", ViewTruncated)
        assert len(q.history(limit=None)) == 15_174
        assert len(q.history(limit=5)) == 5  # asked for 5: no warning
        assert len(q.history(limit=20_000)) == 15_174
        assert len(q.history(status="succeeded")) == 0
        assert len(q.jobs()) == 0
    assert q.stats(since="1h").loc["convert", "cancelled"] == 15_174
    assert q.stats().loc["convert", "cancelled"] == 15_174


@pytest.mark.parametrize("view", ["stats", "history"])
def test_an_empty_span_is_refused_not_counted_as_zero(q: pgq_nb.Queue, view: str) -> None:
    q.entrypoint("convert")(lambda job: None)
    q.enqueue("convert")
    q.run_until_idle()
    call = getattr(q, view)
    with pytest.raises(
        pgq_nb.InvalidInputError, match=r'is not after since=.*since="2h", until="1h"'
    ):
        call(since="1h", until="2h")  # an hour that ends before it starts
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    with pytest.raises(pgq_nb.InvalidInputError, match="the span is empty"):
        call(since=start, until=start)
    assert len(call(since="2h", until=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1))) == 1


def test_failed_and_workflows_warn_when_their_default_cap_leaves_rows_out(
    q: pgq_nb.Queue,
) -> None:
    q.entrypoint("bad", retry=pgq_nb.RetryPolicy(max_attempts=1))(lambda job: 1 / 0)
    q.entrypoint("ok")(lambda job: None)
    q.enqueue(["bad"] * 3)
    for _ in range(3):
        wf = q.workflow("etl")
        wf.step("ok", {})
        wf.submit()
    q.run_until_idle()
    cap = DefaultLimit(2)
    with pytest.warns(ViewTruncated, match=r"q\.failed\(\) shows the newest 2 of 3 failed jobs"):
        failed = runtime.run_sync(frames.failed(q.aio, limit=cap))
    assert len(failed) == 2
    with pytest.warns(ViewTruncated, match=r"q\.workflows\(\) shows the newest 2 of 3 workflow"):
        runs = runtime.run_sync(overview.workflows(q.aio, limit=cap))
    assert len(runs) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", ViewTruncated)
        assert len(runtime.run_sync(frames.failed(q.aio, limit=DefaultLimit(3)))) == 3
        assert len(q.failed(limit=2)) == 2
        assert len(q.workflows(limit=2)) == 2
        assert len(q.workflows(limit=None)) == 3
        assert len(q.workflows()) == 3
    with pytest.raises(pgq_nb.InvalidInputError, match="limit"):
        q.workflows(limit=-1)


def test_default_limits_are_ints_that_know_they_are_defaults() -> None:
    assert HISTORY_LIMIT == 10_000 and repr(HISTORY_LIMIT) == "10_000"
    assert is_default(HISTORY_LIMIT) and not is_default(10_000) and not is_default(None)
    assert not is_default(HISTORY_LIMIT + 1)  # arithmetic gives a plain int


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (
            {"what": "finished jobs", "count_with": "q.stats()"},
            "q.history() shows the newest 10,000 of 15,174 finished jobs (5,174 left out): "
            "pass limit=None for all of them, since=... for fewer, or count them with q.stats()",
        ),
        (
            {"exact": False, "total": 1_000_000, "narrower": "", "what": "jobs"},
            "q.history() shows the newest 10,000 of more than 1,000,000 jobs (more than "
            "990,000 left out): pass limit=None for all of them",
        ),
        (
            {"which": "oldest", "narrower": "status=", "what": "live jobs"},
            "q.history() shows the oldest 10,000 of 15,174 live jobs (5,174 left out): "
            "pass limit=None for all of them, or status= for fewer",
        ),
    ],
)
def test_the_truncation_message(words: dict[str, Any], expected: str) -> None:
    arguments: dict[str, Any] = {"shown": 10_000, "total": 15_174, **words}
    assert truncated_message("q.history()", **arguments) == expected


# -- counting with an aggregate --------------------------------------------------------------


def test_stats_since_counts_the_jobs_that_finished_in_a_span(q: pgq_nb.Queue) -> None:
    q.entrypoint("to_eur")(lambda job: None)
    q.entrypoint("bad", retry=pgq_nb.RetryPolicy(max_attempts=1))(lambda job: 1 / 0)
    old = q.enqueue(["to_eur"] * 4)
    q.enqueue(["to_eur"] * 6)
    q.enqueue(["bad"] * 2)
    q.enqueue(["to_eur"] * 3, execute_after=dt.timedelta(hours=1))  # live, waiting
    q.run_until_idle()
    now = _sql(q, "SELECT now()")
    _sql(
        q,
        "UPDATE {schema}.history SET started = $2::timestamptz - interval '2 hours 1 second', "
        "finished = $2::timestamptz - interval '2 hours' WHERE id = ANY($1::bigint[])",
        old,
        now,
    )

    last_hour = q.stats(since="1h")
    assert last_hour.loc["to_eur", "succeeded"] == 6 and last_hour.loc["bad", "failed"] == 2
    assert last_hour.loc["to_eur", "queued"] == 3  # live columns: the queue now
    assert last_hour.loc["to_eur", "jobs_per_minute"] == pytest.approx(6 / 60, rel=0.01)
    span = q.stats(since=now - dt.timedelta(hours=3), until=now - dt.timedelta(hours=1))
    assert span.loc["to_eur", "succeeded"] == 4 and span.loc["bad", "failed"] == 0
    assert span.loc["to_eur", "mean_duration_s"] == pytest.approx(1.0)
    assert span.loc["to_eur", "jobs_per_minute"] == pytest.approx(4 / 120)
    assert q.stats().loc["to_eur", "succeeded"] == 10  # every finished job, from the counters
    assert list(span.columns) == list(q.stats().columns)
    assert span.dtypes.equals(q.stats().dtypes)
    # the hourly report: the hour before its tick, from since to before until
    tick = now - dt.timedelta(hours=1)
    report = runtime.run_sync(q.aio.stats(since=tick - dt.timedelta(hours=1.5), until=tick))
    assert report.loc["to_eur", "succeeded"] == 4

    with pytest.raises(pgq_nb.InvalidInputError, match="until= needs since="):
        q.stats(until=now)
    with pytest.raises(pgq_nb.InvalidInputError, match="not both"):
        q.stats(dt.timedelta(minutes=5), since="1h")
    with pytest.raises(pgq_nb.InvalidInputError, match="until='soon' is neither"):
        q.stats(since="1h", until="soon")
    with pytest.raises(pgq_nb.InvalidInputError, match=r"until=.* has no time zone"):
        q.history(until=dt.datetime(2024, 1, 1))
    assert len(q.history(since=tick - dt.timedelta(hours=1.5), until=tick)) == 4


# -- schedules -----------------------------------------------------------------------------


def test_run_schedule_now_shows_as_the_last_run_with_its_status(q: pgq_nb.Queue) -> None:
    @q.schedule("hourly_report", "0 * * * *")
    def hourly_report(schedule: pgq_nb.Schedule) -> str:
        return "done"

    listed = q.schedules()
    assert listed["last_run"].isna().all() and listed["last_status"].isna().all()
    job_id = q.run_schedule_now("hourly_report")
    q.run_until_idle()
    fired = q.get_job(job_id).fire_time
    assert fired is not None

    row = q.schedules().iloc[0]
    assert row["last_job_id"] == job_id and row["last_status"] == "succeeded"
    assert row["last_run"] == pd.Timestamp(fired)
    (record,) = q.schedule_list()
    assert record["last_run"] == fired and record["last_status"] == "succeeded"
    snapshot = runtime.run_sync(SnapshotReader(q.aio).read())
    (shown,) = snapshot.schedules
    assert shown.last_run == fired and shown.last_status == "succeeded"
    # the cron side is untouched: the next tick is still due at the top of the hour
    assert _sql(q, "SELECT last_run FROM {schema}.schedules") is None


def test_dashboard_titles_count_every_row_not_the_capped_lists(q: pgq_nb.Queue) -> None:
    q.entrypoint("ok")(lambda job: None)
    for _ in range(12):  # more runs than the dashboard lists (10), all still running
        wf = q.workflow("etl")
        wf.step("ok", {}, depends_on=wf.step("ok", {}))
        wf.submit()
    for name in ("a_report", "b_report", "c_report"):
        q.schedule(name, "0 * * * *")(lambda schedule: None)
    q.schedule_list()
    snapshot = runtime.run_sync(SnapshotReader(q.aio, schedules=2).read())
    assert len(snapshot.workflows) == 10 and snapshot.workflows_running == 12
    assert len(snapshot.schedules) == 2 and snapshot.schedules_total == 3
    board = dashboard(q, refresh=3600)
    try:
        board.refresh_now()
        assert board.tabs.titles[2:] == ("Schedules (3)", "Workflows (12 running)")
    finally:
        board.close()


def test_the_cli_says_when_its_failed_list_is_cut(q: pgq_nb.Queue, installed: str) -> None:
    q.entrypoint("bad", retry=pgq_nb.RetryPolicy.none())(lambda job: 1 / 0)
    q.enqueue(["bad"] * 3)
    q.run_until_idle()

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "pgq_nb.cli", *args],
            env=worker_env(installed),
            cwd=str(REPO),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout

    assert "the newest 2 of 3 failed jobs; --limit N shows more" in cli("failed", "--limit", "2")
    assert "--limit" not in cli("failed")
    assert "no workers alive" in cli("status")  # the records form, q.worker_list()


def test_the_warning_shows_in_the_notebook_cell_every_time(q: pgq_nb.Queue, installed: str) -> None:
    """The view runs on pgq_nb's loop thread; its warning still reaches the cell that asked,
    in a real kernel, on every run of the cell."""
    nb = nbformat.v4.new_notebook()  # type: ignore[no-untyped-call]
    setup = (
        "import datetime as dt\nimport pgq_nb\nq = pgq_nb.connect()\n"
        "q.entrypoint('later')(lambda job: None)\n"
        "q.enqueue(['later'] * 1_001, execute_after=dt.timedelta(hours=1));"
    )
    look = "len(q.jobs())"
    nb.cells = [nbformat.v4.new_code_cell(code) for code in (setup, look, look)]  # type: ignore[no-untyped-call]
    env = dict(os.environ, PGQ_NB_DSN=installed, PGQ_NB_SCHEMA=SCHEMA)
    env.pop("PGQ_NB_HOME", None)
    NotebookClient(nb, timeout=120, kernel_name="python3").execute(env=env)
    for cell in nb.cells[1:]:
        shown = [o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stderr"]
        assert any(
            "ViewTruncated: q.jobs() shows the oldest 1,000 of 1,001 live jobs" in t for t in shown
        ), cell.outputs
        (value,) = [o for o in cell.outputs if o.output_type == "execute_result"]
        assert value.data["text/plain"] == "1000"


def test_a_range_count_past_its_cap_says_more_than(
    q: pgq_nb.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    q.entrypoint("ok")(lambda job: None)
    q.enqueue(["ok"] * 5)
    q.run_until_idle()
    monkeypatch.setattr(frames, "COUNT_CAP", 4)  # the range count stops after 4 (+1) rows
    with pytest.warns(ViewTruncated) as caught:
        runtime.run_sync(frames.history(q.aio, since="1h", limit=DefaultLimit(2)))
    (warning,) = [w.message for w in caught]
    assert isinstance(warning, ViewTruncated)
    assert (warning.total, warning.exact) == (4, False)
    assert "the newest 2 of more than 4 finished jobs (more than 2 left out)" in str(warning)
    monkeypatch.setattr(frames, "COUNT_CAP", 5)  # exactly at the cap: still exact
    with pytest.warns(ViewTruncated, match="the newest 2 of 5 finished jobs"):
        runtime.run_sync(frames.history(q.aio, since="1h", limit=DefaultLimit(2)))
