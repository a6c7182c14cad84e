"""wf.map_over, from review (issue #21, item 1): a DataFrame source keeps its index, a Series
source is named in its failure, a map_over that made no steps is an empty list in
run.results(), and an unknown parent is named with its map_over."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest

import pgq_nb
from pgq_nb.encoding import encode_result
from pgq_nb.worker_notices import JobsFailed


def test_a_grouped_frame_source_gives_each_step_its_index(q: pgq_nb.Queue) -> None:
    sales = pd.DataFrame({"region": ["north", "south", "north"], "amount": [1.0, 2.0, 3.0]})
    q.entrypoint("extract")(lambda job: sales.groupby("region")[["amount"]].sum())
    q.entrypoint("report")(lambda job: f"{job.data['region']}: {job.data['amount']:g}")
    q.entrypoint("collect")(lambda job: job.parent_results()["report"])
    wf = q.workflow("by_region")
    wf.step("collect", depends_on=wf.map_over(wf.step("extract"), "report"))
    run = wf.submit()
    q.run_until_idle()
    assert run.wait(timeout=30, progress=False) == "succeeded"
    assert run.results()["collect"] == ["north: 4", "south: 2"]
    assert run.results()["extract"] == [
        {"region": "north", "amount": 4.0},
        {"region": "south", "amount": 2.0},
    ]


@pytest.mark.parametrize(
    ("frame", "stored"),
    [
        # the default index is left out, as today
        (pd.DataFrame({"a": [1, 2]}), [{"a": 1}, {"a": 2}]),
        # a named index, a MultiIndex, a filtered frame's labels: kept, as reset_index() does
        (
            pd.DataFrame({"a": [1, 2]}, index=pd.Index(["x", "y"], name="k")),
            [{"k": "x", "a": 1}, {"k": "y", "a": 2}],
        ),
        (
            pd.DataFrame({"a": [1]}, index=pd.MultiIndex.from_tuples([("x", 2)], names=["k", "n"])),
            [{"k": "x", "n": 2, "a": 1}],
        ),
        (pd.DataFrame({"a": [1, 2, 3]}).iloc[[2]], [{"index": 2, "a": 3}]),
        # an index whose name clashes with a column: reset_index() refuses; stored as today
        (
            pd.DataFrame({"k": [1]}, index=pd.Index(["x"], name="k")),
            [{"k": 1}],
        ),
    ],
)
def test_stored_frames_keep_a_non_default_index(frame: pd.DataFrame, stored: Any) -> None:
    assert json.loads(encode_result(frame) or "null") == stored


def test_a_series_source_fails_naming_the_series(q: pgq_nb.Queue) -> None:
    q.entrypoint("extract")(lambda job: pd.Series([1, 2], index=["a", "b"]))
    q.entrypoint("transform")(lambda job: 1)
    wf = q.workflow("series")
    wf.map_over(wf.step("extract"), "transform")
    run = wf.submit()
    with pytest.warns(JobsFailed):
        q.run_until_idle()
    assert run.wait(timeout=30, progress=False) == "failed"
    (failed,) = q.failed_jobs("extract")
    assert "returned a pandas Series" in str(failed.error)
    assert "series.tolist()" in str(failed.error) and "series.reset_index()" in str(failed.error)


def test_a_map_over_that_made_no_steps_is_an_empty_list_in_the_results(
    q: pgq_nb.Queue,
) -> None:
    q.entrypoint("extract")(lambda job: [])
    q.entrypoint("transform")(lambda job: [1])
    q.entrypoint("again")(lambda job: 1)
    wf = q.workflow("empty_results")
    first = wf.map_over(wf.step("extract"), "transform")
    wf.map_over(first, "again")  # a map over a map that made nothing
    run = wf.submit()
    assert run.results() == {}  # nothing expanded yet: not an empty list
    q.run_until_idle()
    assert run.wait(timeout=30, progress=False) == "succeeded"
    assert run.results() == {"again": [], "extract": [], "transform": []}


def test_a_map_over_of_an_unknown_step_names_the_map_over(q: pgq_nb.Queue) -> None:
    wf = q.workflow("unknown_parent")
    wf.step("extract")
    wf.map_over("extrakt", "transform")
    with pytest.raises(pgq_nb.InvalidInputError, match="map_over 'transform' expands 'extrakt'"):
        wf.submit()
