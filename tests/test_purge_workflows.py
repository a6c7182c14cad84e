"""Purges keep the steps of a workflow run that has not succeeded (found in the #20 review).

A running run's later steps read their parents' results: a manual purge gave a fan-in a
silently shorter ``parent_results()``. A failed (or cancelled) run can be retried, and its
requeued steps wait for their parents' rows: a purged parent left the retried step blocked for
ever. Both retention (``retention.apply_once``, what a worker's turn runs) and
``q.purge_history`` keep them; a run's rows go once it has succeeded.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

import pgq_nb
from pgq_nb import retention, runtime
from tests.conftest import SCHEMA


def _history_steps(q: pgq_nb.Queue) -> list[str]:
    rows = runtime.run_sync(q.aio.pool.fetch(f"SELECT step_name FROM {SCHEMA}.history ORDER BY id"))
    return [r["step_name"] for r in rows]


def _manual(q: pgq_nb.Queue) -> None:
    q.purge_history(dt.timedelta(0))


def _policy(q: pgq_nb.Queue) -> None:
    q.retention(succeeded="0s", failed="0s", cancelled="0s")
    runtime.run_sync(retention.apply_once(q.aio.store, pause=0.0))


PURGES = [pytest.param(_manual, id="purge_history"), pytest.param(_policy, id="retention")]


@pytest.mark.parametrize("purge", PURGES)
def test_a_running_runs_finished_steps_are_kept_for_its_fan_in(
    q: pgq_nb.Queue, purge: Callable[[pgq_nb.Queue], None]
) -> None:
    q.entrypoint("a")(lambda job: {"v": 1})
    q.entrypoint("c")(lambda job: job.parent_results())
    wf = q.workflow("w")
    a = wf.step("a")
    wf.step("c", depends_on=a)
    run = wf.submit()
    q.run_until_idle(entrypoints=["a"])  # a done, c waiting: the run is running
    purge(q)
    assert _history_steps(q) == ["a"]
    q.run_until_idle()
    assert run.wait(timeout=30) == "succeeded"
    assert run.results()["c"] == {"a": {"v": 1}}
    purge(q)  # succeeded: now its rows go
    assert _history_steps(q) == []


@pytest.mark.parametrize("purge", PURGES)
def test_a_failed_runs_steps_are_kept_so_that_it_can_be_retried(
    q: pgq_nb.Queue, purge: Callable[[pgq_nb.Queue], None]
) -> None:
    broken = [True]

    @q.entrypoint("extract")
    def extract(job: pgq_nb.Job) -> dict[str, int]:
        return {"rows": 42}

    @q.entrypoint("transform", retry=pgq_nb.RetryPolicy(max_attempts=1))
    def transform(job: pgq_nb.Job) -> object:
        if broken[0]:
            raise ValueError("not yet")
        return job.parent_results()

    wf = q.workflow("etl")
    wf.step("transform", depends_on=wf.step("extract"))
    run = wf.submit()
    q.run_until_idle()
    assert run.state() == "failed"
    purge(q)
    assert sorted(_history_steps(q)) == ["extract", "transform"]
    broken[0] = False
    assert run.retry() == 1
    q.run_until_idle()
    assert run.wait(timeout=30) == "succeeded"
    assert run.results()["transform"] == {"extract": {"rows": 42}}
