"""wf.map_over: workflow steps made at run time, one per item of a parent step's result, in the
transaction that records the parent's success (issue #21, item 1)."""

from __future__ import annotations

import datetime as dt
import json
import random
import signal
import subprocess
import threading
import time
from typing import Any

import pandas as pd
import pytest

import pgq_nb
from pgq_nb import runtime, workflow_maps
from pgq_nb.worker_notices import JobsFailed
from tests.conftest import SCHEMA, start_worker_process, stop_processes, wait_until


def _fetch(q: pgq_nb.Queue, sql: str, *args: Any) -> list[Any]:
    async def run() -> list[Any]:
        return list(await q.aio.pool.fetch(sql.format(schema=SCHEMA), *args))

    return runtime.run_sync(run())


def _history(q: pgq_nb.Queue, run: pgq_nb.workflow_run.WorkflowRun) -> list[Any]:
    return _fetch(
        q,
        "SELECT id, step_name, step_index, step_path, map_source, status, error, payload, result "
        "FROM {schema}.history WHERE workflow_id = $1 ORDER BY id",
        run.id,
    )


def test_extract_map_over_aggregate_with_a_list(q: pgq_nb.Queue) -> None:
    @q.entrypoint("extract")
    def extract(job: pgq_nb.Job) -> list[dict[str, int]]:
        return [{"n": i} for i in range(job.data["rows"])]

    @q.entrypoint("transform")
    def transform(job: pgq_nb.Job) -> int:
        assert job.parent_results() == {}  # made from extract's result, not its child
        return int(job.data["n"]) * 10

    seen: list[dict[str, Any]] = []

    @q.entrypoint("aggregate")
    def aggregate(job: pgq_nb.Job) -> int:
        seen.append(job.parent_results())
        return sum(job.parent_results()["transform"])

    wf = q.workflow("etl")
    raw = wf.step("extract", {"rows": 25})
    parts = wf.map_over(raw, "transform")
    wf.step("aggregate", depends_on=parts)
    with pytest.raises(TypeError, match="known only at run time"):
        len(parts)
    assert "map_over" in repr(parts)
    run = wf.submit()
    assert run.counts()["blocked"] == 1 and run.counts()["queued"] == 1
    q.run_until_idle()
    assert run.wait(timeout=30, progress=False) == "succeeded"
    assert len(seen) == 1
    assert seen[0]["transform"] == [i * 10 for i in range(25)]
    assert run.results()["transform"] == [i * 10 for i in range(25)]
    assert run.results()["aggregate"] == sum(i * 10 for i in range(25))
    rows = _history(q, run)
    assert len(rows) == 27 and {r["status"] for r in rows} == {"succeeded"}
    made = [r for r in rows if r["step_name"] == "transform"]
    assert [r["step_index"] for r in made] == list(range(25))
    assert [r["step_path"] for r in made] == [[i] for i in range(25)]
    assert {r["map_source"] for r in made} == {rows[0]["id"]}
    assert made[3]["payload"] == b'{"n":3}'  # the item's JSON, as the handler returned it
    (workflow,) = _fetch(q, "SELECT steps FROM {schema}.workflows WHERE id = $1", run.id)
    assert workflow["steps"] == 27
    status = run.status()
    assert list(status["step"]) == ["extract", "aggregate"] + ["transform"] * 25


def test_a_dataframe_result_makes_one_step_per_row(q: pgq_nb.Queue) -> None:
    @q.entrypoint("extract")
    def extract(job: pgq_nb.Job) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "file": ["a.csv", "b.csv", "c.csv"],
                "size": [10, 20, None],
                "day": pd.to_datetime(["2026-11-28"] * 3),
            }
        )

    @q.entrypoint("load")
    def load(job: pgq_nb.Job) -> dict[str, Any]:
        return job.data  # type: ignore[no-any-return]

    q.entrypoint("report")(lambda job: job.parent_results()["load"])
    wf = q.workflow("files")
    files = wf.step("extract")
    loaded = wf.map_over(files, "load", name="load", priority=5, tags=["daily"], meta={"k": 1})
    wf.step("report", depends_on=loaded)
    run = wf.submit()
    q.run_until_idle()
    assert run.wait(timeout=30, progress=False) == "succeeded"
    got = run.results()["report"]
    assert [r["file"] for r in got] == ["a.csv", "b.csv", "c.csv"]
    assert got[0]["size"] == 10 and got[2]["size"] is None  # NaN as null, as results store it
    assert got[0]["day"].startswith("2026-11-28")
    (row,) = _fetch(
        q,
        "SELECT priority, tags, meta FROM {schema}.history WHERE step_name = 'load' LIMIT 1",
    )
    assert row["priority"] == 5 and row["tags"] == ["daily"]
    assert json.loads(row["meta"]) == {"k": 1}


def test_zero_items_run_the_fan_in_with_an_empty_list(q: pgq_nb.Queue) -> None:
    q.entrypoint("extract")(lambda job: [])
    q.entrypoint("transform")(lambda job: 1)
    got: list[dict[str, Any]] = []
    q.entrypoint("aggregate")(lambda job: got.append(job.parent_results()))
    wf = q.workflow("empty")
    wf.map_over("extract", "transform")
    wf.step("extract")
    wf.step("aggregate", depends_on="transform")  # by name, as any step
    run = wf.submit()
    q.run_until_idle()
    assert run.wait(timeout=30, progress=False) == "succeeded"
    assert got == [{"transform": []}]
    assert run.counts()["succeeded"] == 2


def test_a_map_over_a_map_over_and_over_a_static_map(q: pgq_nb.Queue) -> None:
    # regions -> (per region) its cities -> (per city) its shops; one region has no cities
    cities = {"north": ["oslo", "bergen"], "empty": [], "south": ["kristiansand"]}
    shops = {"oslo": 3, "bergen": 0, "kristiansand": 2}
    q.entrypoint("cities")(lambda job: cities[job.data])
    q.entrypoint("shops")(lambda job: [f"{job.data}-{i}" for i in range(shops[job.data])])
    q.entrypoint("visit")(lambda job: job.data.upper())
    got: list[dict[str, Any]] = []

    def collect(job: pgq_nb.Job) -> None:
        got.append(job.parent_results())

    q.entrypoint("collect")(collect)
    wf = q.workflow("nested")
    per_region = wf.map("cities", ["north", "empty", "south"])  # a static map as the parent
    per_city = wf.map_over(per_region, "shops")
    visits = wf.map_over(per_city, "visit")
    wf.step("collect", depends_on=[visits, per_city, per_region])
    run = wf.submit()
    q.run_until_idle()
    assert run.wait(timeout=30, progress=False) == "succeeded"
    assert len(got) == 1
    assert got[0]["visit"] == ["OSLO-0", "OSLO-1", "OSLO-2", "KRISTIANSAND-0", "KRISTIANSAND-1"]
    assert got[0]["shops"] == [
        ["oslo-0", "oslo-1", "oslo-2"],
        [],
        ["kristiansand-0", "kristiansand-1"],
    ]
    assert got[0]["cities"] == [["oslo", "bergen"], [], ["kristiansand"]]
    paths = sorted(r["step_path"] for r in _history(q, run) if r["step_name"] == "visit")
    assert paths == [[0, 0, 0], [0, 0, 1], [0, 0, 2], [2, 0, 0], [2, 0, 1]]


def _register_app(q: pgq_nb.Queue) -> None:
    for name in ("m_extract", "m_transform", "m_aggregate"):
        q.entrypoint(name)(lambda job: None)  # known here: the worker processes run them


def _submit_app(q: pgq_nb.Queue, rows: int, sleep: float = 0.02) -> pgq_nb.workflow_run.WorkflowRun:
    wf = q.workflow("processes")
    parts = wf.map_over(wf.step("m_extract", {"rows": rows, "sleep": sleep}), "m_transform")
    wf.step("m_aggregate", depends_on=parts)
    return wf.submit()


def _check_app_run(q: pgq_nb.Queue, run: pgq_nb.workflow_run.WorkflowRun, rows: int) -> None:
    assert run.state() == "succeeded"
    assert run.results()["m_aggregate"] == {"parts": [2 * i for i in range(rows)]}
    (counts,) = _fetch(
        q,
        "SELECT count(*) AS n, count(DISTINCT id) AS d, "
        "count(*) FILTER (WHERE status = 'succeeded') AS ok, "
        "count(*) FILTER (WHERE entrypoint = 'm_aggregate') AS agg, "
        "count(DISTINCT step_path) FILTER (WHERE entrypoint = 'm_transform') AS paths "
        "FROM {schema}.history WHERE workflow_id = $1",
        run.id,
    )
    assert dict(counts) == {"n": rows + 2, "d": rows + 2, "ok": rows + 2, "agg": 1, "paths": rows}
    assert _fetch(q, "SELECT count(*) AS n FROM {schema}.jobs")[0]["n"] == 0
    (workflow,) = _fetch(q, "SELECT steps FROM {schema}.workflows WHERE id = $1", run.id)
    assert workflow["steps"] == rows + 2


def test_a_thousand_items_over_three_worker_processes(q: pgq_nb.Queue, installed: str) -> None:
    _register_app(q)
    run = _submit_app(q, 1000)
    procs = [start_worker_process(installed, "maps_app:q", "--concurrency", "8") for _ in range(3)]
    try:
        assert run.wait(timeout=240, progress=False) == "succeeded"
    finally:
        stop_processes(procs)
    _check_app_run(q, run, 1000)
    (agg,) = _fetch(q, "SELECT attempts FROM {schema}.history WHERE entrypoint = 'm_aggregate'")
    assert agg["attempts"] == 1
    workers = _fetch(
        q,
        "SELECT count(DISTINCT worker_id) AS n FROM {schema}.history WHERE workflow_id = $1",
        run.id,
    )
    assert workers[0]["n"] >= 2  # the items spread over the processes


def test_a_thousand_items_with_workers_killed_during_the_run(
    q: pgq_nb.Queue, installed: str
) -> None:
    _register_app(q)
    run = _submit_app(q, 1000, sleep=0.15)
    rng = random.Random(21)

    def spawn() -> subprocess.Popen[bytes]:
        return start_worker_process(installed, "maps_app:q", "--concurrency", "8")

    procs = [spawn() for _ in range(3)]
    kills = 0
    try:
        deadline = time.monotonic() + 300
        while run.state() == "running" and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.5, 1.2))
            victim = rng.randrange(len(procs))
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait(timeout=10)
            procs[victim] = spawn()
            kills += 1
        assert run.wait(timeout=120, progress=False) == "succeeded"
    finally:
        stop_processes(procs)
    _check_app_run(q, run, 1000)
    assert kills >= 3


@pytest.mark.parametrize(
    ("value", "kind"),
    [({"a": 1}, "a dict"), ("text", "a str"), (None, "None"), (3.5, "a number")],
)
def test_a_parent_that_returns_no_list_fails_and_its_dependents_end_upstream_failed(
    q: pgq_nb.Queue, value: Any, kind: str
) -> None:
    calls: list[int] = []

    @q.entrypoint("extract", retry=pgq_nb.RetryPolicy(max_attempts=5, base_delay=0.01))
    def extract(job: pgq_nb.Job) -> Any:
        calls.append(job.attempts)
        return value

    q.entrypoint("transform")(lambda job: 1)
    q.entrypoint("aggregate")(lambda job: 1)
    q.entrypoint("after")(lambda job: 1)
    wf = q.workflow("bad_parent")
    parts = wf.map_over(wf.step("extract"), "transform")
    total = wf.step("aggregate", depends_on=parts)
    wf.step("after", depends_on=total)
    run = wf.submit()
    with pytest.warns(JobsFailed):
        q.run_until_idle()
    assert run.wait(timeout=30, progress=False) == "failed"
    assert calls == [1]  # not retried: it would return the same kind of value
    rows = {r["step_name"]: r for r in _history(q, run)}
    assert rows["extract"]["status"] == "failed"
    error = rows["extract"]["error"]
    assert f"step 'extract' (job {rows['extract']['id']}) returned {kind}" in error
    assert "return a list" in error and "DataFrame" in error
    assert rows["aggregate"]["status"] == rows["after"]["status"] == "upstream_failed"
    assert "transform" not in rows
    assert _fetch(q, "SELECT count(*) AS n FROM {schema}.jobs")[0]["n"] == 0


def test_retry_after_a_failed_parent_and_after_a_failed_item(q: pgq_nb.Queue) -> None:
    broken = {"extract": True, "item": True}

    @q.entrypoint("extract", retry=pgq_nb.RetryPolicy(max_attempts=1))
    def extract(job: pgq_nb.Job) -> list[int]:
        if broken["extract"]:
            raise RuntimeError("source down")
        return [1, 2, 3]

    @q.entrypoint("transform", retry=pgq_nb.RetryPolicy(max_attempts=1))
    def transform(job: pgq_nb.Job) -> int:
        if job.data == 2 and broken["item"]:
            raise RuntimeError("bad row")
        return int(job.data) * 10

    q.entrypoint("aggregate")(lambda job: job.parent_results()["transform"])
    wf = q.workflow("retried")
    parts = wf.map_over(wf.step("extract"), "transform")
    wf.step("aggregate", depends_on=parts)
    run = wf.submit()
    with pytest.warns(JobsFailed):
        q.run_until_idle()
    assert run.wait(timeout=30, progress=False) == "failed"
    assert run.counts()["upstream_failed"] == 1
    broken["extract"] = False
    assert run.retry() == 2  # extract, and aggregate back to waiting for the map
    assert run.counts()["blocked"] == 1
    with pytest.warns(JobsFailed):
        q.run_until_idle()
    assert run.wait(timeout=30, progress=False) == "failed"  # transform of 2 failed
    statuses = sorted((r["step_name"], r["status"]) for r in _history(q, run))
    assert ("aggregate", "upstream_failed") in statuses
    broken["item"] = False
    assert run.retry() == 2  # the item, and aggregate waiting for it alone
    q.run_until_idle()
    assert run.wait(timeout=30, progress=False) == "succeeded"
    assert run.results()["aggregate"] == [10, 20, 30]
    assert len([r for r in _history(q, run) if r["step_name"] == "transform"]) == 3


def test_the_run_shows_its_steps_as_they_are_made(q: pgq_nb.Queue) -> None:
    release = threading.Event()
    q.entrypoint("extract")(lambda job: list(range(4)))

    def transform(job: pgq_nb.Job) -> int:
        assert release.wait(60)
        return int(job.data)

    q.entrypoint("transform")(transform)
    q.entrypoint("aggregate")(lambda job: sum(job.parent_results()["transform"]))
    wf = q.workflow("growing")
    parts = wf.map_over(wf.step("extract"), "transform")
    wf.step("aggregate", depends_on=parts)
    run = wf.submit()
    assert list(run.status()["step"]) == ["extract", "aggregate"]
    worker = q.start_worker(concurrency=8)
    try:
        wait_until(lambda: run.counts()["picked"] == 4, 30, "the 4 items to run")
        status = run.status()
        assert list(status["step"]) == ["extract", "aggregate"] + ["transform"] * 4
        assert list(status["index"][2:]) == [0, 1, 2, 3]
        assert list(status["status"]) == ["succeeded", "blocked"] + ["picked"] * 4
        (row,) = [r for r in q.workflows().to_dict("records") if r["workflow_id"] == run.id]
        assert row["steps"] == 6 and row["picked"] == 4 and row["done"] == 1 / 6
        release.set()
        assert run.wait(timeout=30, progress=False) == "succeeded"
    finally:
        release.set()
        worker.stop()
    assert run.results()["aggregate"] == 6


def test_a_transactional_parent_that_returns_no_list_writes_nothing(q: pgq_nb.Queue) -> None:
    @q.entrypoint("extract", transactional=True)
    async def extract(job: pgq_nb.Job) -> dict[str, int]:
        await job.tx.execute(f"CREATE TABLE {SCHEMA}.written_by_extract (x int)")
        return {"not": 1}

    q.entrypoint("transform")(lambda job: 1)
    wf = q.workflow("tx_parent")
    wf.map_over(wf.step("extract"), "transform")
    run = wf.submit()
    with pytest.warns(JobsFailed):
        q.run_until_idle()
    assert run.wait(timeout=30, progress=False) == "failed"
    (row,) = _history(q, run)
    assert row["status"] == "failed" and "returned a dict" in row["error"]
    assert not _fetch(q, "SELECT 1 FROM pg_tables WHERE tablename = 'written_by_extract'")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda wf: wf.map_over(["x"], "known"), "not list; for rows you have now, use wf.map"),
        (lambda wf: wf.map_over("nope", "known"), "not a step of workflow"),
        (lambda wf: wf.map_over(wf.step("known"), ""), "entrypoint must be a non-empty"),
        (lambda wf: wf.map_over("m", "known", name="m"), "depends on itself"),
        (
            lambda wf: (
                wf.map_over("b", "known", name="a"),
                wf.step("known", name="b", depends_on="a"),
            ),
            "has a cycle",
        ),
        (lambda wf: wf.map_over(wf.step("known"), "unregistered"), "no handler is registered"),
        (
            lambda wf: wf.map_over(wf.step("known"), "known", name="known"),
            "already has a step named",
        ),
    ],
)
def test_refused_map_overs_write_nothing(q: pgq_nb.Queue, build: Any, message: str) -> None:
    q.entrypoint("known")(lambda job: None)
    wf = q.workflow("bad")
    with pytest.raises(pgq_nb.InvalidInputError, match=message):
        build(wf)
        wf.submit()
    for table in ("jobs", "workflows", "workflow_maps", "workflow_map_sources", "job_deps"):
        assert _fetch(q, f"SELECT count(*) AS n FROM {{schema}}.{table}")[0]["n"] == 0


def test_a_map_over_a_step_of_another_workflow_is_refused(q: pgq_nb.Queue) -> None:
    q.entrypoint("known")(lambda job: None)
    other = q.workflow("other").step("known")
    with pytest.raises(pgq_nb.InvalidInputError, match="belongs to workflow 'other'"):
        q.workflow("mine").map_over(other, "known")


def test_a_failed_source_in_the_middle_dooms_the_maps_below_then_retries(q: pgq_nb.Queue) -> None:
    broken = {"b": True}

    @q.entrypoint("split", retry=pgq_nb.RetryPolicy(max_attempts=1))
    def split(job: pgq_nb.Job) -> list[str]:
        if job.data == "b" and broken["b"]:
            raise RuntimeError("cannot split b")
        return [f"{job.data}{i}" for i in range(2)]

    q.entrypoint("roots")(lambda job: ["a", "b"])
    q.entrypoint("leaf")(lambda job: job.data.upper())
    q.entrypoint("join")(lambda job: job.parent_results()["leaf"])
    wf = q.workflow("middle")
    halves = wf.map_over(wf.step("roots"), "split")
    leaves = wf.map_over(halves, "leaf")
    wf.step("join", depends_on=leaves)
    run = wf.submit()
    with pytest.warns(JobsFailed, match="cannot split b"):
        q.run_until_idle()
    assert run.wait(timeout=30, progress=False) == "failed"
    statuses = {(r["step_name"], r["status"]) for r in _history(q, run)}
    assert ("join", "upstream_failed") in statuses and ("split", "failed") in statuses
    broken["b"] = False
    assert run.retry() == 2
    q.run_until_idle()
    assert run.wait(timeout=30, progress=False) == "succeeded"
    assert run.results()["join"] == ["A0", "A1", "B0", "B1"]


def _finish_as(q: pgq_nb.Queue, worker_id: int, result: str = "[1,2]") -> list[Any]:
    """Record job 1's success as worker ``worker_id`` would (its flush of a workflow batch)."""
    from pgq_nb.completion import Finished, record

    async def run() -> list[Any]:
        now = dt.datetime.now(dt.UTC)
        row = Finished(1, "succeeded", result, None, None, now, now, 0.0)
        async with q.aio.pool.acquire() as conn, conn.transaction():
            return await record(conn, q.aio.store.queries, worker_id, [row], steps=True)

    return runtime.run_sync(run())


def test_a_source_taken_back_from_its_worker_does_not_expand(q: pgq_nb.Queue) -> None:
    q.entrypoint("extract")(lambda job: [1, 2])
    q.entrypoint("transform")(lambda job: 1)
    wf = q.workflow("taken_back")
    wf.map_over(wf.step("extract"), "transform")
    run = wf.submit()
    _fetch(q, "UPDATE {schema}.jobs SET status = 'picked', worker_id = 7")

    def finish_as(worker_id: int) -> Any:
        return _finish_as(q, worker_id)

    assert finish_as(8) == []  # another worker holds it now
    assert run.counts()["picked"] == 1 and run.counts()["queued"] == 0
    assert len(finish_as(7)) == 1
    assert run.counts()["queued"] == 2 and run.counts()["succeeded"] == 1


def test_a_source_that_succeeds_after_its_run_was_cancelled(q: pgq_nb.Queue) -> None:
    q.entrypoint("extract")(lambda job: [1, 2])
    q.entrypoint("transform")(lambda job: int(job.data) * 10)
    q.entrypoint("aggregate")(lambda job: job.parent_results()["transform"])
    wf = q.workflow("cancelled_meanwhile")
    wf.step("aggregate", depends_on=wf.map_over(wf.step("extract"), "transform"))
    run = wf.submit()
    _fetch(q, "UPDATE {schema}.jobs SET status = 'picked', worker_id = 7 WHERE id = 1")
    assert run.cancel() == 2  # aggregate cancelled, extract told to stop; it finishes anyway
    assert len(_finish_as(q, 7)) == 1
    assert run.wait(timeout=30, progress=False) == "cancelled"
    assert run.counts()["cancelled"] == 3 and run.counts()["queued"] == 0  # its 2 steps too
    assert run.retry() == 3
    q.run_until_idle()
    assert run.wait(timeout=30, progress=False) == "succeeded"
    assert run.results()["aggregate"] == [10, 20]


@pytest.mark.parametrize(
    ("parents", "children", "nodes", "expected"),
    [
        # a map over one step; node 1 depends on it: waits for 1 source
        ([(None, (0,))], [(0, 1)], 2, ([(0, 0)], [(0, 1, True, 1)], [0, 1])),
        # a map over a static map of 3 steps: 3 sources
        (
            [(None, (0, 1, 2))],
            [(0, 3)],
            4,
            ([(0, 0), (1, 0), (2, 0)], [(0, 3, True, 1)], [0, 0, 0, 3]),
        ),
        # a map over a map over a step; node 1 depends on the lower map only
        (
            [(None, (0,)), (0, ())],
            [(1, 1)],
            2,
            ([(0, 0)], [(0, 1, False, 1), (1, 1, True, 1)], [0, 1]),
        ),
        # ... and on both maps: the upper one counts twice
        (
            [(None, (0,)), (0, ())],
            [(0, 1), (1, 1)],
            2,
            ([(0, 0)], [(0, 1, True, 2), (1, 1, True, 1)], [0, 2]),
        ),
        # a map over a static map with no rows: nothing to wait for
        ([(None, ())], [(0, 0)], 1, ([], [(0, 0, True, 1)], [0])),
    ],
)
def test_map_plans(
    parents: list[tuple[int | None, tuple[int, ...]]],
    children: list[tuple[int, int]],
    nodes: int,
    expected: tuple[Any, Any, Any],
) -> None:
    found = workflow_maps.plan(parents, children, nodes)
    assert (found.sources, found.waiting, found.pending) == expected


def test_the_progress_bar_grows_with_the_run(
    q: pgq_nb.Queue, capfd: pytest.CaptureFixture[str]
) -> None:
    q.entrypoint("extract")(lambda job: list(range(30)))
    q.entrypoint("transform")(lambda job: job.data)
    q.entrypoint("aggregate")(lambda job: None)
    wf = q.workflow("bar")
    wf.step("aggregate", depends_on=wf.map_over(wf.step("extract"), "transform"))
    run = wf.submit()
    workers: list[Any] = []
    later = threading.Timer(0.5, lambda: workers.append(q.start_worker()))
    later.start()  # after the bar is drawn for 2 steps
    try:
        assert run.wait(timeout=60, progress=True) == "succeeded"
    finally:
        later.join()
        for w in workers:
            w.stop()
    shown = capfd.readouterr().err
    assert "32.0/32.0" in shown.rsplit("\r", 1)[-1]  # not 32/2
