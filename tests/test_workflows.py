"""Workflows: DAGs of jobs kept in Postgres, fan-out, fan-in, results, failure, retry, cancel."""

from __future__ import annotations

import asyncio
import time

import pandas as pd
import pytest

import pgq_nb
from pgq_nb import runtime
from tests.conftest import SCHEMA


def _rows(q: pgq_nb.Queue, table: str) -> int:
    async def run() -> int:
        n: int = await q.aio.pool.fetchval(f"SELECT count(*) FROM {SCHEMA}.{table}")
        return n

    return runtime.run_sync(run())


def test_extract_map_aggregate_passes_results(q: pgq_nb.Queue) -> None:
    @q.entrypoint("extract")
    def extract(job: pgq_nb.Job) -> dict[str, int]:
        return {"rows": 3}

    @q.entrypoint("transform")
    def transform(job: pgq_nb.Job) -> float:
        assert job.parent_results() == {"extract": {"rows": 3}}
        return float(job.data["amount"]) * 2

    @q.entrypoint("aggregate")
    def aggregate(job: pgq_nb.Job) -> dict[str, float]:
        parts = job.parent_results()["transform"]
        return {"total": sum(parts), "parts": parts}

    df = pd.DataFrame({"amount": [1.5, 2.0, 4.0], "region": ["n", "s", "e"]})
    wf = q.workflow("etl")
    raw = wf.step("extract", {"day": "2026-11-28"})
    parts = wf.map("transform", df, depends_on=raw)
    total = wf.step("aggregate", depends_on=parts)
    assert len(parts) == 3 and total.name == "aggregate"
    run = wf.submit()
    assert run.state() == "running"
    assert run.counts()["blocked"] == 4
    q.run_until_idle()
    assert run.wait(timeout=10, progress=False) == "succeeded"
    results = run.results()
    assert results["transform"] == [3.0, 4.0, 8.0]  # row order
    assert results["aggregate"] == {"total": 15.0, "parts": [3.0, 4.0, 8.0]}
    status = run.status()
    assert list(status["step"]) == ["extract", "transform", "transform", "transform", "aggregate"]
    assert set(status["status"]) == {"succeeded"}
    assert str(status["started"].dtype) == "datetime64[us, UTC]"
    again = q.workflow_run(run.id)
    assert again.name == "etl" and again.state() == "succeeded"
    assert "succeeded: <b>5</b>" in again._repr_html_()


def test_diamond_sees_both_parents_under_concurrency(q: pgq_nb.Queue) -> None:
    order: list[str] = []

    async def step(job: pgq_nb.Job) -> str:
        await asyncio.sleep(0.01)
        order.append(job.entrypoint)
        return job.entrypoint

    for name in "abcd":
        q.entrypoint(name)(step)
    seen: dict[str, object] = {}

    @q.entrypoint("d")
    async def d(job: pgq_nb.Job) -> None:
        seen.update(job.parent_results())
        order.append("d")

    wf = q.workflow("diamond")
    a = wf.step("a")
    b = wf.step("b", depends_on=a)
    c = wf.step("c", depends_on=a)
    wf.step("d", depends_on=[b, c])
    run = wf.submit()
    q.run_until_idle(concurrency=8)
    assert run.wait(timeout=10, progress=False) == "succeeded"
    assert seen == {"b": "b", "c": "c"}
    assert order[0] == "a" and order[-1] == "d"


def test_failure_marks_descendants_upstream_failed_other_branches_go_on(
    q: pgq_nb.Queue,
) -> None:
    q.entrypoint("ok")(lambda job: "fine")
    q.entrypoint("bad", retry=pgq_nb.RetryPolicy.none())(lambda job: 1 / 0)
    wf = q.workflow("branches")
    root = wf.step("ok", name="root")
    bad = wf.step("bad", depends_on=root)
    wf.step("ok", name="after_bad", depends_on=bad)
    wf.step("ok", name="after_after", depends_on="after_bad")
    wf.step("ok", name="other_branch", depends_on=root)
    run = wf.submit()
    q.run_until_idle()
    assert run.wait(timeout=10, progress=False) == "failed"
    by_step = dict(zip(run.status()["step"], run.status()["status"], strict=True))
    assert by_step == {
        "root": "succeeded",
        "bad": "failed",
        "after_bad": "upstream_failed",
        "after_after": "upstream_failed",
        "other_branch": "succeeded",
    }
    # fix the handler, retry the run: the failed step and what depends on it run again
    q.entrypoint("bad")(lambda job: "fixed")
    assert run.retry() == 3
    q.run_until_idle()
    assert run.wait(timeout=10, progress=False) == "succeeded"
    assert run.results()["after_after"] == "fine"


def test_cancel_cancels_every_unfinished_step(q: pgq_nb.Queue) -> None:
    q.entrypoint("slow")(lambda job: None)
    wf = q.workflow("to_cancel")
    first = wf.step("slow")
    wf.map("slow", range(5), depends_on=first)
    run = wf.submit()
    assert run.cancel() == 6
    assert run.wait(timeout=10, progress=False) == "cancelled"
    assert run.counts()["cancelled"] + run.counts()["upstream_failed"] == 6
    assert _rows(q, "jobs") == 0


def test_fan_in_child_runs_once_after_all_parents(q: pgq_nb.Queue) -> None:
    @q.entrypoint("part")
    async def part(job: pgq_nb.Job) -> int:
        return int(job.data)

    done_at: list[float] = []

    @q.entrypoint("sum")
    async def total(job: pgq_nb.Job) -> int:
        done_at.append(time.monotonic())
        return sum(job.parent_results()["part"])

    wf = q.workflow("fan_in")
    parts = wf.map("part", range(500))
    wf.step("sum", depends_on=parts)
    run = wf.submit()
    q.run_until_idle(concurrency=64)
    assert run.wait(timeout=30, progress=False) == "succeeded"
    assert len(done_at) == 1
    assert run.results()["sum"] == sum(range(500))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda wf: wf.step("known", depends_on="nope"), "not a step"),
        (lambda wf: wf.step("known", name="x", depends_on="x"), "depends on itself"),
        (
            lambda wf: (
                wf.step("known", name="a", depends_on="b"),
                wf.step("known", name="b", depends_on="a"),
            ),
            "has a cycle",
        ),
        (lambda wf: wf.step("unregistered"), "no handler is registered"),
        (lambda wf: None, "has no steps"),
    ],
)
def test_refused_workflows_write_nothing(q: pgq_nb.Queue, build: object, message: str) -> None:
    q.entrypoint("known")(lambda job: None)
    wf = q.workflow("bad")
    build(wf)  # type: ignore[operator]
    with pytest.raises(pgq_nb.InvalidInputError, match=message):
        wf.submit()
    for table in ("jobs", "job_deps", "workflows", "history"):
        assert _rows(q, table) == 0, table


def test_misspelt_names_get_a_did_you_mean(q: pgq_nb.Queue) -> None:
    # an entrypoint is checked at submit, as enqueue checks it: known here or to some worker
    q.entrypoint("extract")(lambda job: None)
    q.entrypoint("transform")(lambda job: None)
    wf = q.workflow("etl")
    raw = wf.step("extract")
    wf.step("transfrom", depends_on=raw)
    with pytest.raises(pgq_nb.UnknownEntrypointError, match=r"did you mean 'transform'\?"):
        wf.submit()
    wf = q.workflow("etl")
    wf.step("extract")
    wf.step("transform", depends_on="extrct")
    with pytest.raises(pgq_nb.InvalidInputError, match=r"did you mean 'extract'\?"):
        wf.submit()
    for table in ("jobs", "job_deps", "workflows"):
        assert _rows(q, table) == 0, table


def test_a_dataframe_step_payload_points_at_map(q: pgq_nb.Queue) -> None:
    q.entrypoint("transform")(lambda job: None)
    wf = q.workflow("etl")
    df = pd.DataFrame({"amount": [1, 2]})
    with pytest.raises(
        pgq_nb.PayloadError, match=r"one job per row, use wf\.map\('transform', df\)"
    ):
        wf.step("transform", df)
    with pytest.raises(pgq_nb.PayloadError, match=r"wf\.map\('transform', s\.to_frame\(\)\)"):
        wf.step("transform", df["amount"])


def test_steps_of_another_workflow_and_bad_arguments_are_refused(q: pgq_nb.Queue) -> None:
    q.entrypoint("known")(lambda job: None)
    one, two = q.workflow("one"), q.workflow("two")
    step = one.step("known")
    with pytest.raises(pgq_nb.InvalidInputError, match="belongs to workflow 'one'"):
        two.step("known", depends_on=step)
    with pytest.raises(pgq_nb.InvalidInputError, match="already has a step named"):
        one.step("known", name="known")
    with pytest.raises(pgq_nb.InvalidInputError, match="DataFrame or an iterable"):
        one.map("known", "not rows")
    with pytest.raises(pgq_nb.PayloadError, match="row 1"):
        one.map("known", [1, object()])
    with pytest.raises(pgq_nb.JobNotFoundError):
        q.workflow_run(12345)
