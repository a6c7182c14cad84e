"""The views as DataFrames: fixed schemas (empty or not), counts from counters, results
expanded from JSON, and history retention."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import pytest

import pgq_nb
from pgq_nb import runtime
from pgq_nb.notebook import frames
from pgq_nb.notebook.columns import STATUS_DTYPE
from tests.conftest import SCHEMA

TIME = "datetime64[us, UTC]"
STATUSES = ["queued", "blocked", "picked", "succeeded", "failed", "cancelled", "upstream_failed"]
JOBS = {
    "job_id": "Int64",
    "entrypoint": "str",
    "status": "category",
    "priority": "Int64",
    "attempts": "Int64",
    "created": TIME,
    "execute_after": TIME,
    "started": TIME,
    "worker_id": "Int64",
    "dedupe_key": "str",
    "last_error": "str",
    "workflow_id": "Int64",
    "step_name": "str",
    "schedule_name": "str",
    "snoozes": "Int64",
    "payload": "object",
}
HISTORY = {
    "job_id": "Int64",
    "entrypoint": "str",
    "status": "category",
    "attempts": "Int64",
    "priority": "Int64",
    "created": TIME,
    "execute_after": TIME,
    "started": TIME,
    "finished": TIME,
    "queue_wait_s": "float64",
    "run_s": "float64",
    "error": "str",
    "worker_id": "Int64",
    "dedupe_key": "str",
    "workflow_id": "Int64",
    "step_name": "str",
    "schedule_name": "str",
    "snoozes": "Int64",
    "cached_from": "Int64",
}
FAILED = {
    "job_id": "Int64",
    "entrypoint": "str",
    "attempts": "Int64",
    "error": "str",
    "errors": "object",
    "traceback": "str",
    "created": TIME,
    "started": TIME,
    "finished": TIME,
    "payload": "object",
}
STATS = {**dict.fromkeys(STATUSES, "int64"), "jobs_per_minute": "float64"}
STATS["mean_duration_s"] = "float64"


def _schema(frame: pd.DataFrame) -> dict[str, str]:
    if "status" in frame.columns:
        assert frame["status"].dtype == STATUS_DTYPE
        assert list(frame["status"].cat.categories) == STATUSES
    return {str(name): str(dtype) for name, dtype in frame.dtypes.items()}


def _sql(q: pgq_nb.Queue, query: str, *args: Any) -> Any:
    async def run() -> Any:
        return await q.aio.pool.fetchval(query.replace("{schema}", SCHEMA), *args)

    return runtime.run_sync(run())


def test_every_view_has_its_schema_on_an_empty_database(q: pgq_nb.Queue) -> None:
    assert _schema(q.jobs()) == JOBS
    assert _schema(q.history()) == HISTORY
    assert _schema(q.failed()) == FAILED
    stats = q.stats()
    assert _schema(stats) == STATS and len(stats) == 0
    assert stats.index.name == "entrypoint" and str(stats.index.dtype) == "str"
    assert _schema(q.results("nothing")) == {"job_id": "Int64"}
    flat = q.results("nothing", expand=False)
    assert _schema(flat) == {"job_id": "Int64", "payload": "object", "result": "object"}


@pytest.fixture
def worked(q: pgq_nb.Queue) -> dict[str, list[int]]:
    """Jobs that succeeded, failed for good, succeeded on a retry, were cancelled, or wait."""
    attempts: dict[int, int] = {}

    @q.entrypoint("ok")
    def ok(job: pgq_nb.Job) -> dict[str, int]:
        return {"double": job.data["x"] * 2}

    @q.entrypoint("bad", retry=pgq_nb.RetryPolicy(max_attempts=1))
    def bad(job: pgq_nb.Job) -> None:
        raise ValueError(f"boom {job.data['x']}")

    @q.entrypoint("flaky", retry=pgq_nb.RetryPolicy(max_attempts=2, base_delay=0.01, jitter=0))
    def flaky(job: pgq_nb.Job) -> str:
        attempts[job.id] = attempts.get(job.id, 0) + 1
        if attempts[job.id] == 1:
            raise RuntimeError("first try fails")
        return "second try"

    q.entrypoint("later")(lambda job: None)
    q.entrypoint("idle")(lambda job: None)
    ids = {
        "ok": list(q.enqueue_df("ok", pd.DataFrame({"x": [1, 2, 3]}))),
        "bad": list(q.enqueue_df("bad", pd.DataFrame({"x": [7]}))),
        "flaky": [q.enqueue("flaky", {"x": 0})],
        "later": q.enqueue(["later", "later"], execute_after=dt.timedelta(hours=1)),
    }
    q.cancel(ids["later"][1])
    q.run_until_idle(wait_for_scheduled=5)
    return ids


def test_views_after_work_keep_their_schemas(q: pgq_nb.Queue, worked: dict[str, list[int]]) -> None:
    live = q.jobs()
    assert _schema(live) == JOBS
    assert list(live["job_id"]) == [worked["later"][0]]
    assert list(live["status"]) == ["queued"] and live["started"].isna().all()
    assert live["workflow_id"].isna().all()  # all-NULL, still Int64
    assert _schema(q.jobs(status="queued", entrypoint="ok")) == JOBS
    assert len(q.jobs(status="picked")) == 0

    history = q.history()
    assert _schema(history) == HISTORY
    assert len(history) == 6 and history["finished"].is_monotonic_decreasing
    by_id = history.set_index("job_id")
    assert by_id.loc[worked["flaky"][0], "attempts"] == 2
    assert str(by_id.loc[worked["bad"][0], "error"]).startswith("ValueError: boom 7")
    cancelled = by_id.loc[worked["later"][1]]
    assert cancelled["status"] == "cancelled" and pd.isna(cancelled["run_s"])
    done = history[history["status"] == "succeeded"]
    assert (done["run_s"] >= 0).all() and (done["queue_wait_s"] > -1).all()
    assert list(q.history(entrypoint="ok")["job_id"]) == sorted(worked["ok"], reverse=True)
    assert list(q.history(status="failed")["job_id"]) == worked["bad"]
    assert len(q.history(since=dt.timedelta(minutes=5))) == 6
    assert len(q.history(since="5min")) == 6  # a duration, as plot_throughput takes it
    assert len(q.history(since="2999-01-01T00:00+00:00")) == 0
    assert len(q.history(limit=2)) == 2

    failed = q.failed()
    assert _schema(failed) == FAILED
    row = failed.iloc[0]
    assert row["job_id"] == worked["bad"][0] and row["payload"] == {"x": 7}
    assert [e["error"] for e in row["errors"]] == [row["error"]]
    assert "boom 7" in row["traceback"]
    assert len(q.failed(entrypoint="ok")) == 0
    assert _schema(q.failed(entrypoint="ok")) == FAILED


def test_stats_has_a_column_per_status_and_recent_rates(
    q: pgq_nb.Queue, worked: dict[str, list[int]]
) -> None:
    stats = q.stats()
    assert _schema(stats) == STATS
    assert list(stats.index) == ["bad", "flaky", "idle", "later", "ok"]
    assert stats.loc["ok", "succeeded"] == 3 and stats.loc["bad", "failed"] == 1
    assert stats.loc["flaky", "succeeded"] == 1 and stats.loc["flaky", "failed"] == 0
    assert stats.loc["later", "queued"] == 1 and stats.loc["later", "cancelled"] == 1
    assert (stats.loc["idle", STATUSES] == 0).all()  # a registered entrypoint, no jobs yet
    assert stats["blocked"].sum() == 0 and stats["upstream_failed"].sum() == 0
    assert stats.loc["ok", "jobs_per_minute"] == pytest.approx(3 / 15)
    assert (stats.loc[["ok"], "mean_duration_s"] >= 0).all()
    assert stats.loc["idle", "jobs_per_minute"] == 0
    assert stats.loc[["idle"], "mean_duration_s"].isna().all()
    assert q.stats(window=dt.timedelta(minutes=1)).loc["ok", "jobs_per_minute"] == 3


def test_stats_counts_finished_jobs_from_the_sharded_counters(q: pgq_nb.Queue) -> None:
    _sql(
        q,
        "INSERT INTO {schema}.finished_counts (entrypoint, status, shard, n) "
        "VALUES ('ghost', 'succeeded', 3, 5), ('ghost', 'succeeded', 7, 2), "
        "('ghost', 'failed', 0, 1)",
    )
    stats = q.stats()
    assert stats.loc["ghost", "succeeded"] == 7 and stats.loc["ghost", "failed"] == 1
    assert stats.loc["ghost", "jobs_per_minute"] == 0  # nothing in history itself


def _results_app(q: pgq_nb.Queue) -> None:
    @q.entrypoint("shapes")
    def shapes(job: pgq_nb.Job) -> Any:
        kind = job.data["kind"]
        if kind == "dict":
            return {"total": job.data["score"] + 1, "score": -1}
        if kind == "rows":
            return [{"total": 10, "part": "a"}, {"total": 20, "part": "b"}]
        if kind == "frame":
            return pd.DataFrame({"total": [30, 40, 50], "part": ["c", "d", "e"]})
        if kind == "scalar":
            return 3.5
        return None


def test_results_expand_every_shape_of_return_value(q: pgq_nb.Queue) -> None:
    _results_app(q)
    df = pd.DataFrame(
        {"kind": ["dict", "rows", "frame", "scalar", "none"], "score": [1, 2, 3, 4, 5]},
        index=list("vwxyz"),
    )
    ids = q.enqueue_df("shapes", df)
    q.run_until_idle()
    results = q.results("shapes")
    # payload keys first, in their order; then result keys (in the order jsonb keeps them)
    assert list(results.columns[:3]) == ["job_id", "kind", "score"]
    assert set(results.columns[3:]) == {"total", "score_result", "part", "result"}
    assert list(results["job_id"]) == [
        ids["v"],
        *[ids["w"]] * 2,
        *[ids["x"]] * 3,
        ids["y"],
        ids["z"],
    ]
    assert list(results["total"]) == [2, 10, 20, 30, 40, 50, pd.NA, pd.NA]
    assert results["total"].dtype == "Int64" and results["kind"].dtype == "str"
    assert results["score_result"].tolist()[0] == -1  # the result's own "score", renamed
    assert list(results["part"].fillna("-")) == ["-", "a", "b", "c", "d", "e", "-", "-"]
    assert results["result"].dtype == "float64"
    assert results["result"].fillna(0).tolist() == [0] * 6 + [3.5, 0]

    with_missing = pd.Series([ids["y"], pd.NA], dtype="Int64")  # as enqueue_df may return
    scalar = q.results("shapes", ids=list(with_missing))
    assert list(scalar.columns) == ["job_id", "kind", "score", "result"]
    assert scalar["result"].tolist() == [3.5]

    joined = df.assign(job_id=ids).merge(results[["job_id", "total"]], on="job_id")
    assert joined.groupby("kind")["total"].count().to_dict() == {
        "dict": 1,
        "frame": 3,
        "none": 0,
        "rows": 2,
        "scalar": 0,
    }

    flat = q.results("shapes", expand=False)
    assert len(flat) == 5 and flat["payload"][0] == {"kind": "dict", "score": 1}
    assert flat["result"][2] == [
        {"part": "c", "total": 30},
        {"part": "d", "total": 40},
        {"part": "e", "total": 50},
    ]


def test_results_of_raw_payloads_and_failed_jobs(q: pgq_nb.Queue) -> None:
    q.entrypoint("raw")(lambda job: {"size": len(job.payload or b"")})
    q.entrypoint("fails", retry=pgq_nb.RetryPolicy(max_attempts=1))(lambda job: 1 / 0)
    q.enqueue("raw", b"\x00\xffnot json")
    q.enqueue("raw", [1, 2])
    q.enqueue("fails", {"a": 1})
    q.run_until_idle()
    raw = q.results("raw")
    assert list(raw.columns) == ["job_id", "payload", "size"]
    assert raw["payload"].tolist() == [b"\x00\xffnot json", [1, 2]]
    assert len(q.results("fails")) == 0  # only succeeded jobs have results


def test_view_arguments_are_checked(q: pgq_nb.Queue) -> None:
    with pytest.raises(pgq_nb.InvalidInputError, match=r"q\.history"):
        q.jobs(status="succeeded")
    with pytest.raises(pgq_nb.InvalidInputError, match="not 'queued'"):
        q.history(status="queued")
    with pytest.raises(pgq_nb.InvalidInputError, match="no time zone"):
        q.history(since=dt.datetime(2024, 1, 1))
    with pytest.raises(pgq_nb.InvalidInputError, match="no time zone"):
        q.history(since="2024-01-01")
    with pytest.raises(pgq_nb.InvalidInputError, match="ISO 8601"):
        q.history(since="yesterday")
    with pytest.raises(pgq_nb.InvalidInputError, match="limit"):
        q.history(limit=-1)
    with pytest.raises(pgq_nb.InvalidInputError, match="window"):
        q.stats(window=dt.timedelta(0))


def test_purge_history_deletes_old_jobs_and_their_counts(q: pgq_nb.Queue) -> None:
    q.entrypoint("ok")(lambda job: None)
    q.entrypoint("bad", retry=pgq_nb.RetryPolicy(max_attempts=1))(lambda job: 1 / 0)
    old_ok = q.enqueue(["ok"] * 5)
    old_bad = q.enqueue(["bad"] * 2)
    q.enqueue(["ok"] * 3)
    q.run_until_idle()
    _sql(
        q,
        "UPDATE {schema}.history SET finished = finished - interval '10 days' "
        "WHERE id = ANY($1::bigint[])",
        [*old_ok, *old_bad],
    )
    assert runtime.run_sync(frames.purge_history(q.aio, dt.timedelta(days=30))) == 0
    purged = runtime.run_sync(frames.purge_history(q.aio, dt.timedelta(days=7), batch_size=2))
    assert purged == 7
    assert _sql(q, "SELECT count(*) FROM {schema}.history") == 3
    stats = q.stats()
    assert stats.loc["ok", "succeeded"] == 3 and stats.loc["bad", "failed"] == 0
    mismatched = _sql(
        q,
        "SELECT count(*) FROM (SELECT entrypoint, status, sum(n) AS n "
        "FROM {schema}.finished_counts GROUP BY 1, 2) AS c "
        "FULL JOIN (SELECT entrypoint, status, count(*) AS n FROM {schema}.history "
        "GROUP BY 1, 2) AS h USING (entrypoint, status) "
        "WHERE coalesce(c.n, 0) <> coalesce(h.n, 0)",
    )
    assert mismatched == 0
    with pytest.raises(pgq_nb.InvalidInputError, match="older_than"):
        runtime.run_sync(frames.purge_history(q.aio, dt.timedelta(days=-1)))
