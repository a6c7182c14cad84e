"""wf.map_over: workflow steps made at run time, one per item of a parent step's result, in the
transaction that records the parent's success (issue #21, item 1)."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest

import pgq_nb
from pgq_nb import runtime
from tests.conftest import SCHEMA


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
    parts = wf.map_over(wf.step("extract"), "transform")
    wf.step("aggregate", depends_on=parts)
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
