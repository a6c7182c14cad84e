"""Cached steps (issue #21, item 4): ``@q.entrypoint(..., cache=True)`` reuses the result of a
succeeded job with the same entrypoint, handler version and payload instead of running.

Table tests of the pure parts (pgq_nb.caching), then real workers on the real Postgres of the
fixtures: a re-run of enqueue_df over a changed frame, versions, TTL, cache=False, workflow
steps and bad payloads.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import pytest

import pgq_nb
from pgq_nb import caching, runtime
from pgq_nb.worker_notices import JobsFailed
from tests.conftest import SCHEMA


def _rows(q: pgq_nb.Queue, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        return [dict(r) for r in await q.aio.pool.fetch(sql, *args)]

    return runtime.run_sync(run())


def _history(q: pgq_nb.Queue, job_id: int) -> dict[str, Any]:
    rows = _rows(
        q,
        f"SELECT status, attempts, result, error, cache_key, cached_from FROM {SCHEMA}.history "
        "WHERE id = $1",
        job_id,
    )
    assert len(rows) == 1, f"job {job_id} is not in history"
    return rows[0]


class Calls:
    """Counts handler calls per payload, from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def add(self, key: Any) -> int:
        """Count a call; returns the calls so far."""
        with self.lock:
            self.counts[str(key)] += 1
            return self.total

    @property
    def total(self) -> int:
        return sum(self.counts.values())


# -- pure parts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (b'{"b": 1, "a": [1, 2.5, "x"]}', b'{"a":[1,2.5,"x"],"b":1}'),
        (b'{"a": {"y": 1, "x": 2}}', b'{"a":{"x":2,"y":1}}'),
        (None, b"null"),
        (b' "caf\\u00e9" ', '"café"'.encode()),
    ],
)
def test_equal_meaning_gives_equal_keys(a: bytes | None, b: bytes) -> None:
    assert caching.canonical(a) == caching.canonical(b)
    assert caching.cache_key("ep", "v1", a) == caching.cache_key("ep", "v1", b)


def test_keys_differ_by_entrypoint_version_and_payload() -> None:
    base = caching.cache_key("ep", "v1", b'{"a":1}')
    assert len(base) == 64
    assert base != caching.cache_key("other", "v1", b'{"a":1}')
    assert base != caching.cache_key("ep", "v2", b'{"a":1}')
    assert base != caching.cache_key("ep", "v1", b'{"a":2}')
    assert base != caching.cache_key("ep", "v1", b'{"a":1.0}')  # 1 and 1.0 are told apart


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"\x00\xffraw", "raw bytes, not UTF-8 JSON"),
        (b"not json", "raw bytes, not UTF-8 JSON"),
        (b'{"a": 1, "a": 2}', "the key 'a' appears twice"),
        (b'{"a": NaN}', "NaN, which is not JSON"),
        (b"[Infinity]", "Infinity, which is not JSON"),
        (b'{"big": 1e400}', "a number too large for a float"),
    ],
)
def test_payloads_that_are_not_deterministic_json(payload: bytes, why: str) -> None:
    with pytest.raises(pgq_nb.UncacheablePayloadError, match=why):
        caching.canonical(payload)


def _v1(job: Any) -> int:
    return 1


def _v2(job: Any) -> int:
    return 2


class _Callable:
    def __call__(self, job: Any) -> int:
        return 3


def test_handler_versions_follow_the_code() -> None:
    assert caching.handler_version(_v1) == caching.handler_version(_v1)
    assert caching.handler_version(_v1) != caching.handler_version(_v2)
    assert caching.handler_version(_v1).startswith("src:")
    assert caching.handler_version(_Callable()).startswith("src:")
    made: dict[str, Any] = {}
    exec("def f(job):\n    return 1\n", made)  # no source file: its code object
    exec("def g(job):\n    return 2\n", made)
    exec("def h(job):\n    return 1\n", made)
    f, g, h = made["f"], made["g"], made["h"]
    assert caching.handler_version(f).startswith("code:")
    assert caching.handler_version(f) != caching.handler_version(g)
    assert caching.handler_version(f) == caching.handler_version(h)  # same code, same version


@pytest.mark.parametrize(
    ("ttl", "seconds"),
    [(None, None), (30, 30.0), (0.5, 0.5), (dt.timedelta(hours=2), 7200.0), ("7d", 604800.0)],
)
def test_cache_ttls(ttl: Any, seconds: float | None) -> None:
    assert caching.parse_ttl(ttl) == seconds


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cache": "yes"}, "cache must be True or False"),
        ({"cache_ttl": 60}, "add cache=True"),
        ({"version": "2"}, "add cache=True"),
        ({"cache": True, "cache_ttl": 0}, "not a positive duration"),
        ({"cache": True, "cache_ttl": -5}, "not a positive duration"),
        ({"cache": True, "cache_ttl": "soon"}, "is not a duration"),
        ({"cache": True, "cache_ttl": [1]}, "cache_ttl must be seconds"),
        ({"cache": True, "version": ""}, "version must be a non-empty str"),
        ({"cache": True, "version": 2}, "version must be a non-empty str"),
        ({"cache": True, "version": "a\x00b"}, "NUL"),
        ({"cache": True, "transactional": True}, "transactional handler cannot be cached"),
    ],
)
def test_bad_cache_options_are_refused(q: pgq_nb.Queue, kwargs: Any, message: str) -> None:
    with pytest.raises(pgq_nb.InvalidInputError, match=message):
        q.entrypoint("c", **kwargs)


def test_bad_cache_argument_of_an_enqueue(q: pgq_nb.Queue) -> None:
    q.entrypoint("c", cache=True)(lambda job: 1)
    with pytest.raises(pgq_nb.InvalidInputError, match="cache must be True, False"):
        q.enqueue("c", {"a": 1}, cache="no")  # type: ignore[call-overload]
    with pytest.raises(pgq_nb.InvalidInputError, match="cache must be True, False"):
        q.enqueue_df("c", pd.DataFrame({"a": [1]}), cache=0)  # type: ignore[arg-type]
    assert len(q.jobs()) == 0


# -- real workers -------------------------------------------------------------------------


def test_a_rerun_over_a_changed_frame_runs_only_the_changed_rows(q: pgq_nb.Queue) -> None:
    calls = Calls()

    @q.entrypoint("score", cache=True)
    def score(job: pgq_nb.Job) -> dict[str, int]:
        calls.add(job.data["x"])
        return {"double": job.data["x"] * 2}

    n, changed = 10_000, 100
    df = pd.DataFrame({"row": np.arange(n), "x": np.arange(n) * 3})
    first = q.enqueue_df("score", df, progress=False)
    q.run_until_idle(timeout=600)
    assert calls.total == n

    again = df.copy()
    rows = np.random.default_rng(7).choice(n, size=changed, replace=False)
    again.loc[rows, "x"] = -1 - again.loc[rows, "x"]
    calls.counts.clear()
    second = q.enqueue_df("score", again, progress=False)
    q.run_until_idle(timeout=600)
    assert calls.total == changed  # exactly the changed rows ran
    assert set(calls.counts) == {str(v) for v in again.loc[rows, "x"]}

    results = q.results("score", ids=list(second))
    assert list(results.columns[:2]) == ["job_id", "cached_from"]
    assert len(results) == n
    was_cached = results["cached_from"].notna()
    assert int(was_cached.sum()) == n - changed
    by_job = results.set_index("job_id")
    first_of = dict(zip(second.tolist(), first.tolist(), strict=True))
    kept = ~again.index.isin(rows)
    for new_id in second[kept].tolist()[:: n // 50]:  # a sample: each points to its origin
        assert by_job.loc[new_id, "cached_from"] == first_of[new_id]
    assert not by_job.loc[second[~kept].tolist(), "cached_from"].notna().any()
    assert (results["double"] == results["x"] * 2).all()
    history = q.history(limit=None)
    assert int(history["cached_from"].notna().sum()) == n - changed


def test_hits_follow_to_the_origin_and_skip_the_handler(q: pgq_nb.Queue) -> None:
    calls = Calls()

    @q.entrypoint("slow", cache=True, version="1")
    async def slow(job: pgq_nb.Job) -> list[int]:
        calls.add(job.id)
        return [job.data["n"], 7]

    origin = q.enqueue("slow", {"n": 1, "m": "x"})
    q.run_until_idle()
    copy = q.enqueue("slow", b'{ "m": "x", "n": 1 }')  # the same meaning, other bytes
    q.run_until_idle()
    copy_of_copy = q.enqueue("slow", {"m": "x", "n": 1})
    q.run_until_idle()
    assert calls.total == 1
    first, second, third = (_history(q, i) for i in (origin, copy, copy_of_copy))
    assert first["cached_from"] is None and first["cache_key"] is not None
    assert second["cached_from"] == origin and third["cached_from"] == origin  # its origin
    assert first["cache_key"] == second["cache_key"] == third["cache_key"]
    assert q.get_job(copy_of_copy).result == [1, 7]
    assert (third["status"], third["attempts"]) == ("succeeded", 1)
    results = q.results("slow", expand=False)
    assert results["cached_from"].tolist()[1:] == [origin, origin]


def test_a_new_version_or_changed_source_misses(q: pgq_nb.Queue) -> None:
    calls = Calls()

    def first(job: pgq_nb.Job) -> int:
        calls.add("first")
        return 1

    def second(job: pgq_nb.Job) -> int:
        calls.add("second")
        return 2

    q.entrypoint("v", cache=True, version="1")(first)
    q.enqueue("v", {"a": 1})
    q.run_until_idle()
    q.entrypoint("v", cache=True, version="1")(second)  # same version: the cached result
    hit = q.enqueue("v", {"a": 1})
    q.run_until_idle()
    assert q.get_job(hit).result == 1
    q.entrypoint("v", cache=True, version="2")(second)  # new version: runs
    miss = q.enqueue("v", {"a": 1})
    q.run_until_idle()
    assert q.get_job(miss).result == 2
    q.entrypoint("v", cache=True)(first)  # the source's hash: runs, then hits
    by_source = q.enqueue("v", {"a": 1})
    q.run_until_idle()
    q.entrypoint("v", cache=True)(second)  # other source: misses
    other = q.enqueue("v", {"a": 1})
    q.run_until_idle()
    assert q.get_job(by_source).result == 1 and q.get_job(other).result == 2
    assert calls.counts == Counter({"first": 2, "second": 2})


def test_results_older_than_the_ttl_are_not_reused(q: pgq_nb.Queue) -> None:
    calls = Calls()
    q.entrypoint("fresh", cache=True, cache_ttl="1h")(lambda job: calls.add(1))
    old = q.enqueue("fresh", {"a": 1})
    q.run_until_idle()
    hit = q.enqueue("fresh", {"a": 1})
    q.run_until_idle()
    assert calls.total == 1 and _history(q, hit)["cached_from"] == old
    # the origin finished two hours ago (a copy made since does not make it fresh)
    older = f"UPDATE {SCHEMA}.history SET finished = finished - interval '2 hours' WHERE id = $1"
    _rows(q, older, old)
    late = q.enqueue("fresh", {"a": 1})
    q.run_until_idle()
    assert calls.total == 2
    row = _history(q, late)
    assert row["cached_from"] is None and row["result"] == 2


def test_a_purged_origin_is_a_miss(q: pgq_nb.Queue) -> None:
    calls = Calls()
    q.entrypoint("kept", cache=True)(lambda job: calls.add(1))
    origin = q.enqueue("kept", {"a": 1})
    q.run_until_idle()
    copy = q.enqueue("kept", {"a": 1})
    q.run_until_idle()
    assert calls.total == 1 and _history(q, copy)["cached_from"] == origin
    _rows(q, f"DELETE FROM {SCHEMA}.history WHERE id = $1", origin)  # as retention does
    again = q.enqueue("kept", {"a": 1})  # the newest row is a copy of a result that is gone
    q.run_until_idle()
    assert calls.total == 2 and _history(q, again)["cached_from"] is None


def test_cache_false_forces_a_run_and_records_the_result(q: pgq_nb.Queue) -> None:
    calls = Calls()
    q.entrypoint("f", cache=True)(lambda job: calls.add(1))
    q.enqueue("f", {"a": 1})
    q.run_until_idle()
    forced = q.enqueue("f", {"a": 1}, cache=False)
    batch = q.enqueue(["f", "f"], [{"a": 1}, {"a": 1}], cache=False)
    frame = q.enqueue_df("f", pd.DataFrame({"a": [1]}), cache=False, progress=False)
    q.run_until_idle()
    assert calls.total == 5  # every one ran
    for job_id in (forced, *batch, int(frame[0])):
        row = _history(q, job_id)
        assert row["cached_from"] is None and row["cache_key"] is not None
    reused = q.enqueue("f", {"a": 1})
    q.run_until_idle()
    assert calls.total == 5
    assert _history(q, reused)["cached_from"] is not None


def test_a_cached_workflow_step_releases_its_children(q: pgq_nb.Queue) -> None:
    calls = Calls()

    @q.entrypoint("extract", cache=True)
    def extract(job: pgq_nb.Job) -> dict[str, int]:
        calls.add("extract")
        return {"rows": job.data["day"] * 10}

    @q.entrypoint("aggregate")
    def aggregate(job: pgq_nb.Job) -> int:
        calls.add("aggregate")
        return int(job.parent_results()["extract"]["rows"]) + 1

    runs = []
    for _ in range(2):
        wf = q.workflow("daily")
        raw = wf.step("extract", {"day": 3})
        wf.step("aggregate", depends_on=raw)
        run = wf.submit()
        q.run_until_idle()
        assert run.wait(timeout=60, progress=False) == "succeeded"
        runs.append(run)
    assert calls.counts == Counter({"extract": 1, "aggregate": 2})
    steps = q.history()
    aggregates = steps.loc[steps["entrypoint"] == "aggregate"]
    assert len(aggregates) == 2
    for job_id in aggregates["job_id"]:
        assert q.get_job(int(job_id)).result == 31
    assert int(steps.loc[steps["entrypoint"] == "extract", "cached_from"].notna().sum()) == 1


def test_a_payload_that_cannot_be_cached_is_refused_at_enqueue(q: pgq_nb.Queue) -> None:
    q.entrypoint("c", cache=True)(lambda job: 1)
    with pytest.raises(pgq_nb.UncacheablePayloadError, match=r"the payload cannot be cached: it"):
        q.enqueue("c", b"\x00raw")
    with pytest.raises(pgq_nb.UncacheablePayloadError, match=r"payloads\[1\] cannot be cached"):
        q.enqueue(["c", "c"], [{"a": 1}, b'{"a": 1, "a": 2}'])
    with pytest.raises(pgq_nb.PayloadError, match="register the entrypoint without cache=True"):
        q.enqueue("c", b'{"x": NaN}')
    assert len(q.jobs()) == 0  # nothing half-written


def test_a_payload_that_cannot_be_cached_fails_its_job_for_good(q: pgq_nb.Queue) -> None:
    q.entrypoint("c")(lambda job: 1)  # the enqueuing process does not cache it ...
    bad = q.enqueue("c", b"\x00raw")
    good = q.enqueue("c", {"a": 1})
    calls = Calls()
    q.entrypoint("c", cache=True)(lambda job: calls.add(1))  # ... the worker does
    with pytest.warns(JobsFailed, match="UncacheablePayloadError"):
        q.run_until_idle()
    row = _history(q, bad)
    assert (row["status"], row["attempts"]) == ("failed", 1)  # no retry: it never could
    assert f"the payload of job {bad} cannot be cached: it is raw bytes" in row["error"]
    assert _history(q, good)["status"] == "succeeded" and calls.total == 1


def test_workflow_steps_with_cache_false_run_and_bad_step_payloads_are_refused(
    q: pgq_nb.Queue,
) -> None:
    calls = Calls()
    q.entrypoint("part", cache=True)(lambda job: calls.add(job.data))

    def submit(cache: bool | None) -> None:
        wf = q.workflow("parts")
        wf.map("part", [1, 2], cache=cache)
        wf.step("part", 3, name="single", cache=cache)
        run = wf.submit()
        q.run_until_idle()
        assert run.wait(timeout=60, progress=False) == "succeeded"

    submit(None)
    assert calls.total == 3
    submit(None)  # all three from the cache
    assert calls.total == 3
    submit(False)  # forced: all three run
    assert calls.total == 6

    wf = q.workflow("bad")
    wf.step("part", 1)
    wf.map("part", [1, 2, b"\x00raw"])
    with pytest.raises(pgq_nb.UncacheablePayloadError, match=r"the payload of step 'part_2'\[2\]"):
        wf.submit()
    with pytest.raises(pgq_nb.InvalidInputError, match="cache must be True, False"):
        q.workflow("w").step("part", 1, cache="no")  # type: ignore[arg-type]
    assert len(q.jobs()) == 0 and len(q.workflows()) == 3  # the bad one wrote nothing
