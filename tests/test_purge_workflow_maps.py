"""Purges forget a succeeded workflow run once its steps are gone: its row, its edges
(job_deps) and its map_overs' rows (workflow_maps, workflow_map_sources, workflow_map_deps),
which were left behind for ever (issue #21, item 1, from review). A run with steps left (a
running one, a failed one kept for retry) keeps all of them. q.storage() shows these tables."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

import pgq_nb
from pgq_nb import retention, runtime
from tests.conftest import SCHEMA

TABLES = ("workflows", "job_deps", "workflow_maps", "workflow_map_sources", "workflow_map_deps")


def _rows(q: pgq_nb.Queue) -> dict[str, int]:
    async def count() -> dict[str, int]:
        return {
            t: await q.aio.pool.fetchval(f"SELECT count(*) FROM {SCHEMA}.{t}")
            for t in ("history", "jobs", *TABLES)
        }

    return runtime.run_sync(count())


def _manual(q: pgq_nb.Queue) -> None:
    q.purge_history(dt.timedelta(0))


def _policy(q: pgq_nb.Queue) -> None:
    q.retention(succeeded="0s", failed="0s", cancelled="0s")
    runtime.run_sync(retention.apply_once(q.aio.store, pause=0.0))


PURGES = [pytest.param(_manual, id="purge_history"), pytest.param(_policy, id="retention")]


def _submit(q: pgq_nb.Queue, fail: bool = False) -> pgq_nb.workflow_run.WorkflowRun:
    wf = q.workflow("maps")
    source = wf.step("a", {"n": 3, "fail": fail})
    over = wf.map_over(wf.map_over(source, "b"), "c")  # a map over a map
    wf.step("fin", depends_on=[over, source])
    return wf.submit()


def _register(q: pgq_nb.Queue, failing: dict[str, bool] | None = None) -> None:
    def a(job: pgq_nb.Job) -> list[int]:
        if job.data["fail"] and (failing or {}).get("on", True):
            raise pgq_nb.GiveUp("failed on purpose")
        return list(range(job.data["n"]))

    q.entrypoint("a")(a)
    q.entrypoint("b")(lambda job: [job.data, job.data])
    q.entrypoint("c")(lambda job: job.data)
    q.entrypoint("fin")(lambda job: sum(job.parent_results()["c"]))


@pytest.mark.parametrize("purge", PURGES)
def test_a_succeeded_runs_rows_go_with_its_steps(
    q: pgq_nb.Queue, purge: Callable[[pgq_nb.Queue], None]
) -> None:
    _register(q)
    runs = [_submit(q) for _ in range(3)]
    q.run_until_idle()
    assert [run.wait(timeout=60, progress=False) for run in runs] == ["succeeded"] * 3
    before = _rows(q)
    assert all(before[t] for t in TABLES), before
    shown = q.storage()
    for table in TABLES:
        assert shown.loc[shown["table"] == table, "rows"].sum() == before[table], table
    purge(q)
    assert _rows(q) == dict.fromkeys(("history", "jobs", *TABLES), 0)
    assert set(q.storage()["table"]).isdisjoint(TABLES)


@pytest.mark.parametrize("purge", PURGES)
def test_runs_with_steps_left_keep_their_rows(
    q: pgq_nb.Queue, purge: Callable[[pgq_nb.Queue], None]
) -> None:
    failing = {"on": True}
    _register(q, failing)
    failed = _submit(q, fail=True)
    running = _submit(q)
    q.run_until_idle(entrypoints=["a"])  # one source failed, the other expanded
    assert failed.wait(timeout=60, progress=False) == "failed"
    before = _rows(q)
    purge(q)
    assert _rows(q) == before  # nothing of either run goes
    # the failed run retries with everything it had, and both succeed
    failing["on"] = False
    assert failed.retry() == 2
    q.run_until_idle()
    assert failed.wait(timeout=60, progress=False) == "succeeded"
    assert running.wait(timeout=60, progress=False) == "succeeded"
    assert failed.results()["fin"] == running.results()["fin"] == 6
    purge(q)
    assert _rows(q) == dict.fromkeys(("history", "jobs", *TABLES), 0)
