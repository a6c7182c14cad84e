"""The parts of issue #21 together: a cached map_over source still expands (its stored result
becomes the steps), a workflow step that snoozes holds its run without failing it, a keyed job
that snoozes frees its key for the next job of that key, and a cache hit of a keyed entrypoint
never runs its handler."""

from __future__ import annotations

import threading
from typing import Any

import pgq_nb
from pgq_nb import runtime
from tests.conftest import SCHEMA


def _history(q: pgq_nb.Queue, entrypoint: str) -> list[Any]:
    sql = (
        f"SELECT id, status, attempts, snoozes, cached_from, concurrency_key FROM "
        f"{SCHEMA}.history WHERE entrypoint = $1 ORDER BY id"
    )
    return list(runtime.run_sync(q.aio.pool.fetch(sql, entrypoint)))


def test_a_cached_map_over_source_still_expands(q: pgq_nb.Queue) -> None:
    calls = {"list": 0, "each": 0}

    @q.entrypoint("list_files", cache=True)
    def list_files(job: pgq_nb.Job) -> list[str]:
        calls["list"] += 1
        return [f"f{i}" for i in range(job.data["n"])]

    @q.entrypoint("each_file")
    def each_file(job: pgq_nb.Job) -> str:
        calls["each"] += 1
        return str(job.data).upper()

    @q.entrypoint("joined")
    def joined(job: pgq_nb.Job) -> str:
        return ",".join(job.parent_results()["each_file"])

    def run_once() -> Any:
        wf = q.workflow("files")
        files = wf.step("list_files", {"n": 3})
        wf.step("joined", depends_on=wf.map_over(files, "each_file"))
        run = wf.submit()
        q.run_until_idle()
        assert run.state() == "succeeded", run.status()
        return run.results()["joined"]

    assert run_once() == "F0,F1,F2"
    assert run_once() == "F0,F1,F2"  # the second list came from the cache, and expanded
    assert calls == {"list": 1, "each": 6}
    first, second = _history(q, "list_files")
    assert second["cached_from"] == first["id"]


def test_a_snoozing_step_holds_its_run_and_then_succeeds(q: pgq_nb.Queue) -> None:
    seen: list[int] = []

    @q.entrypoint("wait_for_data")
    def wait_for_data(job: pgq_nb.Job) -> str:
        seen.append(job.snoozes)
        if job.snoozes < 2:
            raise pgq_nb.Snooze(0.05)
        return "ready"

    @q.entrypoint("use_data")
    def use_data(job: pgq_nb.Job) -> str:
        return str(job.parent_results()["wait_for_data"]) + "!"

    wf = q.workflow("snoozy")
    wf.step("use_data", depends_on=wf.step("wait_for_data", {}))
    run = wf.submit()
    q.run_until_idle()
    assert run.state() == "succeeded"
    assert run.results()["use_data"] == "ready!"
    assert seen == [0, 1, 2]
    (row,) = _history(q, "wait_for_data")
    assert (row["attempts"], row["snoozes"]) == (1, 2)


def test_a_keyed_job_that_snoozes_frees_its_key(q: pgq_nb.Queue) -> None:
    running: dict[str, int] = {}
    worst = {"n": 0}
    lock = threading.Lock()

    @q.entrypoint("per_customer", concurrency_key="customer", max_per_key=1)
    def per_customer(job: pgq_nb.Job) -> str:
        key = job.data["customer"]
        with lock:
            running[key] = running.get(key, 0) + 1
            worst["n"] = max(worst["n"], running[key])
        try:
            if job.data["first"] and job.snoozes == 0:
                raise pgq_nb.Snooze(0.3)  # the other job of this key runs meanwhile
            return str(key)
        finally:
            with lock:
                running[key] -= 1

    first = q.enqueue("per_customer", {"customer": "a", "first": True})
    second = q.enqueue("per_customer", {"customer": "a", "first": False})
    q.run_until_idle(concurrency=4)
    rows = {r["id"]: r for r in _history(q, "per_customer")}
    assert worst["n"] == 1
    assert rows[first]["snoozes"] == 1 and rows[first]["attempts"] == 1
    assert rows[second]["status"] == "succeeded" and rows[first]["status"] == "succeeded"
    assert {r["concurrency_key"] for r in rows.values()} == {"a"}


def test_a_cache_hit_of_a_keyed_entrypoint_runs_nothing(q: pgq_nb.Queue) -> None:
    calls: list[str] = []

    @q.entrypoint("score", concurrency_key="customer", cache=True)
    def score(job: pgq_nb.Job) -> int:
        calls.append(job.data["customer"])
        return len(job.data["customer"])

    q.enqueue("score", {"customer": "abc"})
    q.run_until_idle()
    again = q.enqueue("score", {"customer": "abc"})
    q.run_until_idle()
    assert calls == ["abc"]
    rows = {r["id"]: r for r in _history(q, "score")}
    assert rows[again]["cached_from"] is not None and rows[again]["concurrency_key"] == "abc"
