"""What a cached step's key is made of, beyond its payload (issue #21, item 4, from review): a
workflow step's parents' results (a step whose parents returned something else runs again), a
``functools.partial``'s bound arguments (a different partial of one function is a different
handler), and ``cache=False`` kept through a requeue (the job still runs)."""

from __future__ import annotations

import functools
from typing import Any

import pgq_nb
from pgq_nb import caching, runtime
from tests.conftest import SCHEMA


def _history(q: pgq_nb.Queue, entrypoint: str) -> list[dict[str, Any]]:
    sql = (
        f"SELECT id, status, result, cached_from FROM {SCHEMA}.history "
        "WHERE entrypoint = $1 ORDER BY id"
    )
    return [dict(r) for r in runtime.run_sync(q.aio.pool.fetch(sql, entrypoint))]


def test_a_step_whose_parents_returned_something_else_runs_again(q: pgq_nb.Queue) -> None:
    source = {"value": 1}
    calls: list[int] = []

    @q.entrypoint("extract")
    def extract(job: pgq_nb.Job) -> int:
        return source["value"]

    @q.entrypoint("double", cache=True)
    def double(job: pgq_nb.Job) -> int:
        calls.append(1)
        return int(job.parent_results()["extract"]) * 2

    def run_once() -> Any:
        wf = q.workflow("doubling")
        wf.step("double", {}, depends_on=wf.step("extract", {}))
        run = wf.submit()
        q.run_until_idle()
        return run.results()["double"]

    assert run_once() == 2
    assert run_once() == 2  # same parents' results: from the cache
    source["value"] = 50
    assert run_once() == 100  # the parent returned something else: run again
    assert len(calls) == 2
    rows = _history(q, "double")
    assert [r["cached_from"] for r in rows] == [None, rows[0]["id"], None]


def test_the_parents_are_part_of_the_key() -> None:
    plain = caching.cache_key("ep", "v1", b"{}")
    assert caching.cache_key("ep", "v1", b"{}", {}) == plain  # no parents: the payload's key
    one = caching.cache_key("ep", "v1", b"{}", {"extract": [1, 2, 3]})
    assert one != plain
    assert one == caching.cache_key("ep", "v1", b"{}", {"extract": [1, 2, 3]})
    assert one != caching.cache_key("ep", "v1", b"{}", {"extract": [1, 2, 300]})


def _scale(job: Any, factor: int) -> int:
    return 5 * factor


def test_partials_of_one_function_with_other_arguments_are_other_versions() -> None:
    two = caching.handler_version(functools.partial(_scale, factor=2))
    three = caching.handler_version(functools.partial(_scale, factor=3))
    assert two != three
    assert two == caching.handler_version(functools.partial(_scale, factor=2))
    assert two.startswith(caching.handler_version(_scale))


def test_cache_false_survives_a_requeue(q: pgq_nb.Queue) -> None:
    fail = {"now": False}
    calls: list[int] = []

    @q.entrypoint("score", cache=True, retry=pgq_nb.RetryPolicy(max_attempts=1))
    def score(job: pgq_nb.Job) -> int:
        calls.append(1)
        if fail["now"]:
            raise RuntimeError("the source is down")
        return len(calls)

    q.enqueue("score", {"x": 1})
    q.run_until_idle()  # a cached result for {"x": 1}
    fail["now"] = True
    forced = q.enqueue("score", {"x": 1}, cache=False)
    q.run_until_idle()  # it ran, and failed
    fail["now"] = False
    assert q.requeue_failed([forced]) == 1
    q.run_until_idle()
    assert len(calls) == 3  # the requeued job ran again rather than take the cached result
    rows = {r["id"]: r for r in _history(q, "score")}
    assert rows[forced]["status"] == "succeeded" and rows[forced]["cached_from"] is None
