"""Per-key limits on workflow steps (issue #21, item 3 with item 1): a submitted step of a keyed
entrypoint carries its key like any enqueued job, a step that cannot be keyed refuses the whole
submit, and a step a map_over makes at run time takes its key from the field the entrypoint's
workers recorded."""

from __future__ import annotations

from typing import Any

import pytest

import pgq_nb
from pgq_nb import runtime
from tests.conftest import SCHEMA


def _keys(q: pgq_nb.Queue, entrypoint: str) -> list[Any]:
    sql = (
        f"SELECT concurrency_key FROM {SCHEMA}.jobs WHERE entrypoint = $1 UNION ALL "
        f"SELECT concurrency_key FROM {SCHEMA}.history WHERE entrypoint = $1"
    )
    return sorted(r[0] for r in runtime.run_sync(q.aio.pool.fetch(sql, entrypoint)))


def test_static_and_run_time_steps_are_keyed(q: pgq_nb.Queue) -> None:
    @q.entrypoint("regions")
    def regions(job: pgq_nb.Job) -> list[dict[str, Any]]:
        return [{"customer": c} for c in ("a", "b", "a")]

    @q.entrypoint("per_customer", concurrency_key="customer", max_per_key=1)
    def per_customer(job: pgq_nb.Job) -> str:
        return str(job.data["customer"])

    @q.entrypoint("total")
    def total(job: pgq_nb.Job) -> int:
        return len(job.parent_results()["per_customer"])

    wf = q.workflow("keyed")
    first = wf.step("regions", {})
    wf.step("per_customer", {"customer": "z"}, name="static")
    wf.step("total", depends_on=wf.map_over(first, "per_customer"))
    run = wf.submit()
    q.run_until_idle()  # its worker records the key field before the map expands
    assert run.state() == "succeeded"
    assert run.results()["total"] == 3
    assert _keys(q, "per_customer") == ["a", "a", "b", "z"]


def test_a_step_without_its_key_refuses_the_submit(q: pgq_nb.Queue) -> None:
    @q.entrypoint("per_customer", concurrency_key="customer")
    def per_customer(job: pgq_nb.Job) -> None:
        return None

    wf = q.workflow("unkeyed")
    wf.step("per_customer", {"customer": "a"}, name="one")
    wf.step("per_customer", {"other": 1}, name="two")
    with pytest.raises(pgq_nb.InvalidInputError, match=r"step 'two'.*customer"):
        wf.submit()
    assert q.workflows().empty and q.jobs().empty  # nothing written
