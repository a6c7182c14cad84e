"""Per-key limits (issue #21, item 3): options, keys at enqueue on every path, bad input, the
keyed claim (in one process), and q.limits(keys=True). Worker processes: test_keys_workers.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pandas as pd
import pytest

import pgq_nb
from pgq_nb import keys, runtime
from pgq_nb.enqueue import DuplicatesSkipped
from pgq_nb.errors import InvalidInputError
from tests.conftest import SCHEMA, execute_sql, wait_until


def _fetch(q: pgq_nb.Queue, sql: str, *args: Any) -> list[Any]:
    return list(runtime.run_sync(q.aio.pool.fetch(sql.replace("S.", f"{SCHEMA}."), *args)))


def _keys(q: pgq_nb.Queue) -> dict[int, str | None]:
    rows = _fetch(q, "SELECT id, concurrency_key FROM S.jobs ORDER BY id")
    return {r["id"]: r["concurrency_key"] for r in rows}


def _job_count(q: pgq_nb.Queue) -> int:
    return int(_fetch(q, "SELECT count(*) AS n FROM S.jobs")[0]["n"])


# -- options (pure) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "cap", "expected"),
    [
        (None, None, (None, None)),
        ("customer_id", None, ("customer_id", 1)),  # a key alone: one at a time
        ("customer_id", 4, ("customer_id", 4)),
    ],
)
def test_key_options_are_checked_and_default_to_one_per_key(
    key: Any, cap: Any, expected: tuple[Any, Any]
) -> None:
    assert keys.check_options("ep", key, cap) == expected


def _by_region(payload: Any) -> Any:
    return payload["region"]


def test_a_function_key_is_kept() -> None:
    assert keys.check_options("ep", _by_region, 2) == (_by_region, 2)


@pytest.mark.parametrize(
    ("key", "cap", "message"),
    [
        (None, 2, "needs a key to count by"),
        ("customer_id", 0, "max_per_key must be at least 1"),
        ("customer_id", -3, "max_per_key must be at least 1"),
        ("customer_id", True, "max_per_key must be an int"),
        ("customer_id", 1.5, "max_per_key must be an int"),
        ("", 1, "must name a payload field"),
        (42, 1, "not int"),
        ("a\x00b", 1, "NUL"),
    ],
)
def test_bad_key_options_are_refused_at_registration(
    q: pgq_nb.Queue, key: Any, cap: Any, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        q.entrypoint("ep", concurrency_key=key, max_per_key=cap)


@pytest.mark.parametrize(
    ("payload", "key"),
    [
        ({"c": "acme"}, "acme"),
        ({"c": 7}, "7"),
        (b'{"c": "from-bytes"}', "from-bytes"),
    ],
)
def test_a_field_key_is_read_from_the_payload(payload: Any, key: str) -> None:
    src = keys.KeySource("ep", "c", None)
    assert keys.key_of(src, payload, "the job") == key


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"other": 1}, "the job of entrypoint 'ep' has no field 'c'"),
        ({"c": None}, r"has 'c' \(its concurrency_key\) set to null"),
        ([1, 2], "its payload is list, not a JSON object"),
        (None, "its payload is NoneType"),
        ({"c": 1.5}, r"is 1.5 \(float\); a concurrency_key must be a str or an int"),
        ({"c": True}, r"is True \(bool\)"),
        ({"c": [1]}, r"\(list\)"),
        ({"c": "x" * 2000}, "at most 1,000 are allowed"),
    ],
)
def test_a_payload_that_cannot_be_keyed_is_refused(payload: Any, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        keys.key_of(keys.KeySource("ep", "c", None), payload, "the job")


def test_a_function_key_may_return_none_and_its_errors_are_named() -> None:
    def key(p: Any) -> Any:
        return p.get("k") if p["ok"] else 1 / 0

    src = keys.KeySource("ep", None, key)
    assert keys.key_of(src, {"ok": True, "k": 3}, "job") == "3"
    assert keys.key_of(src, {"ok": True}, "job") is None  # no key: no limit
    with pytest.raises(InvalidInputError, match=r"raised ZeroDivisionError.*for payloads\[2\]"):
        keys.key_of(src, {"ok": False}, "payloads[2]")
    with pytest.raises(InvalidInputError, match="registered only in its workers' process"):
        keys.key_of(keys.KeySource("ep", None, None), {}, "the job")


# -- keys at enqueue --------------------------------------------------------------------------


def test_every_enqueue_path_stores_the_key(q: pgq_nb.Queue) -> None:
    q.entrypoint("sync", concurrency_key="customer", max_per_key=2)(lambda job: None)
    q.entrypoint("plain")(lambda job: None)
    one = q.enqueue("sync", {"customer": "acme"})
    batch = q.enqueue(["sync", "plain", "sync"], [{"customer": 1}, {"x": 1}, {"customer": "b"}])
    with pytest.warns(DuplicatesSkipped):
        deduped = q.enqueue(
            ["sync", "sync"], [{"customer": "d"}, {"customer": "e"}], dedupe_key=["k1", "k1"]
        )
    with q.transaction() as tx:
        in_tx = tx.enqueue("sync", {"customer": "tx"})
    df = pd.DataFrame({"customer": ["f1", "f2"], "n": [1, 2]})
    frame_ids = q.enqueue_df("sync", df)
    stored = _keys(q)
    assert stored[one] == "acme"
    assert [stored[i] for i in batch] == ["1", None, "b"]
    assert deduped[0] is not None and deduped[1] is None
    assert stored[deduped[0]] == "d"
    assert stored[in_tx] == "tx"
    assert [stored[int(i)] for i in frame_ids] == ["f1", "f2"]
    assert (
        _fetch(
            q,
            "SELECT count(*) AS n FROM S.jobs WHERE entrypoint = 'plain' "
            "AND concurrency_key IS NOT NULL",
        )[0]["n"]
        == 0
    )


def test_a_batch_with_one_row_that_cannot_be_keyed_writes_nothing(q: pgq_nb.Queue) -> None:
    q.entrypoint("sync", concurrency_key="customer")(lambda job: None)

    def by_region(payload: Any) -> Any:
        return {"north": "n"}[payload["region"]]

    q.entrypoint("regional", concurrency_key=by_region, max_per_key=2)(lambda job: None)
    with pytest.raises(InvalidInputError, match=r"payloads\[1\] of entrypoint 'sync' has no"):
        q.enqueue(["sync", "sync"], [{"customer": 1}, {"client": 2}])
    with pytest.raises(InvalidInputError, match=r"the job of entrypoint 'sync' has no field"):
        q.enqueue("sync", {"client": 2}, tags=["t"])
    with pytest.raises(InvalidInputError, match=r"payloads\[0\] of entrypoint 'sync' has no"):
        q.enqueue(["sync", "sync"])  # no payloads at all
    with pytest.raises(InvalidInputError, match=r"raised KeyError: 'south' for payloads\[1\]"):
        q.enqueue(["regional", "regional"], [{"region": "north"}, {"region": "south"}])
    with pytest.raises(InvalidInputError, match=r"row 'b' has no concurrency_key field"):
        q.enqueue_df("sync", pd.DataFrame({"customer": ["x", None]}, index=["a", "b"]))
    with pytest.raises(InvalidInputError, match=r"\(float\)"):
        q.enqueue_df("sync", pd.DataFrame({"customer": [1.5, 2.5]}))
    with pytest.raises(InvalidInputError, match="which the payload columns do not have"):
        q.enqueue_df("sync", pd.DataFrame({"client": [1]}))
    with pytest.raises(InvalidInputError, match=r"raised KeyError: 'east' for row 1"):
        q.enqueue_df("regional", pd.DataFrame({"region": ["north", "east"]}))
    with q.transaction() as tx:
        tx.enqueue("sync", {"customer": "kept"})
        with pytest.raises(InvalidInputError, match="has no field"):
            tx.enqueue(["sync"], [{"nope": 1}])
    assert list(_keys(q).values()) == ["kept"]  # the transaction's good job only


def test_enqueue_df_takes_the_key_from_a_column_and_refuses_it_without_a_limit(
    q: pgq_nb.Queue,
) -> None:
    q.entrypoint("sync", concurrency_key="customer", max_per_key=1)(lambda job: None)
    q.entrypoint("plain")(lambda job: None)
    df = pd.DataFrame({"customer": ["a", "b"], "account": [10, 11]})
    ids = q.enqueue_df("sync", df, concurrency_key="account")
    assert [_keys(q)[int(i)] for i in ids] == ["10", "11"]
    with pytest.raises(InvalidInputError, match="'plain' has no per-key limit"):
        q.enqueue_df("plain", df, concurrency_key="account")
    with pytest.raises(InvalidInputError, match="concurrency_key names column 'nope'"):
        q.enqueue_df("sync", df, concurrency_key="nope")


def test_a_process_without_the_handler_keys_by_the_recorded_field(
    q: pgq_nb.Queue, installed: str
) -> None:
    q.entrypoint("sync", concurrency_key="customer", max_per_key=3)(lambda job: None)
    q.entrypoint("by_fn", concurrency_key=lambda p: p["c"])(lambda job: None)
    q.run_until_idle()  # a worker registers them: their keys are recorded
    recorded = _fetch(q, "SELECT name, max_per_key, key_field FROM S.entrypoints ORDER BY name")
    assert [tuple(r) for r in recorded] == [("by_fn", 1, None), ("sync", 3, "customer")]
    other = pgq_nb.connect(installed, schema=SCHEMA)  # no handlers: another notebook, the CLI
    job = other.enqueue("sync", {"customer": 42})
    assert _keys(q)[job] == "42"
    with pytest.raises(InvalidInputError, match="has no field 'customer'"):
        other.enqueue("sync", {"client": 1})
    with pytest.raises(InvalidInputError, match="registered only in its workers' process"):
        other.enqueue("by_fn", {"c": 1})
    ids = other.enqueue_df("by_fn", pd.DataFrame({"c": [1], "k": ["x"]}), concurrency_key="k")
    assert _keys(q)[int(ids.iloc[0])] == "x"  # a key column works anywhere
    assert _job_count(q) == 2


# -- the keyed claim --------------------------------------------------------------------------


def _overlaps(runs: list[tuple[str, float, float]]) -> dict[str, int]:
    """The most runs of each key at once."""
    peaks: dict[str, int] = {}
    for key in {r[0] for r in runs}:
        events = sorted(
            [(s, 1) for k, s, _ in runs if k == key] + [(e, -1) for k, _, e in runs if k == key]
        )
        running = peak = 0
        for _, delta in events:
            running += delta
            peak = max(peak, running)
        peaks[key] = peak
    return peaks


def _recording(q: pgq_nb.Queue, name: str, **options: Any) -> list[tuple[str, float, float]]:
    runs: list[tuple[str, float, float]] = []

    @q.entrypoint(name, **options)
    async def handler(job: pgq_nb.Job) -> None:
        start = time.monotonic()
        await asyncio.sleep(0.05)
        runs.append((str(job.concurrency_key), start, time.monotonic()))

    return runs


@pytest.mark.parametrize("cap", [1, 2])
def test_no_key_runs_more_than_max_per_key_at_once(q: pgq_nb.Queue, cap: int) -> None:
    runs = _recording(q, "sync", concurrency_key="customer", max_per_key=cap)
    q.enqueue(["sync"] * 30, [{"customer": f"c{i // 6}"} for i in range(30)])
    stats = q.run_until_idle(concurrency=16)
    assert stats.succeeded == 30
    peaks = _overlaps(runs)
    assert len(peaks) == 5 and max(peaks.values()) == cap  # reached, never passed
    assert len(_overlaps([("all", s, e) for _, s, e in runs])) == 1
    assert _overlaps([("all", s, e) for _, s, e in runs])["all"] > cap  # keys ran side by side


def test_per_key_limits_combine_with_max_running(q: pgq_nb.Queue) -> None:
    runs = _recording(q, "sync", concurrency_key="customer", max_per_key=2, max_running=3)
    q.enqueue(["sync"] * 24, [{"customer": f"c{i // 6}"} for i in range(24)])
    assert q.run_until_idle(concurrency=16).succeeded == 24
    assert max(_overlaps(runs).values()) <= 2
    assert _overlaps([("all", s, e) for _, s, e in runs])["all"] <= 3


def test_jobs_without_a_key_run_without_a_limit(q: pgq_nb.Queue) -> None:
    runs = _recording(q, "sync", concurrency_key=lambda p: p.get("c"), max_per_key=1)
    q.enqueue(["sync"] * 6, [{}] * 6)  # the function returns None: no key
    assert set(_keys(q).values()) == {None}
    assert q.run_until_idle(concurrency=8).succeeded == 6
    assert _overlaps([("all", s, e) for _, s, e in runs])["all"] > 1


def test_a_busy_key_does_not_hold_back_the_others(q: pgq_nb.Queue) -> None:
    """100,000 queued jobs of one key ahead of everything else; that key runs one at a time
    while the 40 jobs of 20 other keys all finish."""
    seen: list[str] = []

    @q.entrypoint("sync", concurrency_key="customer", max_per_key=1)
    async def handler(job: pgq_nb.Job) -> None:
        seen.append(str(job.concurrency_key))
        await asyncio.sleep(1.0 if job.concurrency_key == "hot" else 0.01)

    q.run_until_idle()  # registers the entrypoint
    execute_sql(
        q.aio.dsn,
        f"INSERT INTO {SCHEMA}.jobs (entrypoint, payload, concurrency_key) "
        "SELECT 'sync', convert_to('{\"customer\": \"hot\"}', 'UTF8'), 'hot' "
        "FROM generate_series(1, 100000)",
        f"ANALYZE {SCHEMA}.jobs",
    )
    q.enqueue(["sync"] * 40, [{"customer": f"c{i % 20}"} for i in range(40)])
    worker = q.start_worker(concurrency=8)
    try:
        wait_until(
            lambda: (
                _fetch(q, "SELECT count(*) AS n FROM S.history WHERE concurrency_key <> 'hot'")[0][
                    "n"
                ]
                == 40
            ),
            120,
            "the 40 jobs of the other keys to finish",
        )
        running = _fetch(
            q,
            "SELECT count(*) AS n FROM S.jobs WHERE status = 'picked' AND concurrency_key = 'hot'",
        )
        assert running[0]["n"] <= 1
        assert seen.count("hot") < 40  # the hot key did not simply go first
    finally:
        worker.stop(timeout=60)
    busiest = q.limits(keys=True, top=1)
    assert busiest.iloc[0]["key"] == "hot" and busiest.iloc[0]["waiting"] > 99_000


def test_a_keyed_claim_sees_a_claim_that_committed_while_it_waited(q: pgq_nb.Queue) -> None:
    """The READ COMMITTED trap: claim A takes the key's job and is not committed yet; a job of
    the same key with a higher priority arrives; claim B runs. Without the lock, B's snapshot
    (taken while A was open) counts nothing running and takes the new job: two at once. With
    the lock (as the worker claims), B waits for A's commit and its statement, started after,
    sees A's job running."""
    q.entrypoint("sync", concurrency_key="customer", max_per_key=1)(lambda job: None)
    q.run_until_idle()  # a worker registers it: max_per_key recorded
    queries = q.aio.queries
    spec = q.aio.registry.handlers["sync"]

    async def claims(locked: bool) -> tuple[list[int], list[int]]:
        await q.aio.pool.execute(f"DELETE FROM {SCHEMA}.jobs")
        await q.aio.enqueue("sync", {"customer": "k"})
        a = await q.aio.pool.acquire()
        b = await q.aio.pool.acquire()
        try:
            await a.execute("BEGIN")
            if locked:
                await keys.lock_claims(queries, a, ["sync"])
            got_a = await keys.claim(queries, a, spec, 5, 1)
            await q.aio.enqueue("sync", {"customer": "k"}, priority=10)
            await b.execute("BEGIN")

            async def claim_b() -> list[Any]:
                if locked:
                    await keys.lock_claims(queries, b, ["sync"])
                return await keys.claim(queries, b, spec, 5, 2)

            task = asyncio.ensure_future(claim_b())
            if locked:  # B waits for A's lock (its claim statement has not started)
                waiting = (
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                )
                for _ in range(600):
                    if await q.aio.pool.fetchval(waiting):
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError("claim B never waited for claim A's lock")
            else:
                await asyncio.wait_for(asyncio.shield(task), 60)
            await a.execute("COMMIT")
            got_b = await asyncio.wait_for(task, 60)
            await b.execute("COMMIT")
            return [r["id"] for r in got_a], [r["id"] for r in got_b]
        finally:
            await q.aio.pool.release(a)
            await q.aio.pool.release(b)

    got_a, got_b = runtime.run_sync(claims(locked=False))
    assert len(got_a) == 1 and len(got_b) == 1  # the trap is real: two of one key at once
    got_a, got_b = runtime.run_sync(claims(locked=True))
    assert len(got_a) == 1 and got_b == []  # as the worker claims: never


def test_per_key_limits_combine_with_a_rate_limit(q: pgq_nb.Queue) -> None:
    starts: list[tuple[str, float]] = []

    @q.entrypoint("sync", concurrency_key="customer", rate_limit="10/s")
    async def handler(job: pgq_nb.Job) -> None:
        starts.append((str(job.concurrency_key), time.monotonic()))
        await asyncio.sleep(0.05)

    q.enqueue(["sync"] * 20, [{"customer": f"c{i // 4}"} for i in range(20)])
    assert q.run_until_idle(concurrency=16).succeeded == 20
    times = sorted(t for _, t in starts)
    # at most the rate plus its burst (one job) in any one-second window
    assert max(sum(1 for u in times if t <= u < t + 1.0) for t in times) <= 11


def test_a_keys_next_job_starts_when_its_last_is_recorded_not_at_the_poll(
    q: pgq_nb.Queue, installed: str
) -> None:
    """A claim that found the key full sleeps until woken; the worker wakes itself when a
    keyed job ends (before: each of a key's jobs waited for the poll, here 60 s)."""
    slow_poll = pgq_nb.connect(installed, schema=SCHEMA, poll_interval=60.0)
    slow_poll.entrypoint("chain", concurrency_key="k", max_per_key=1)(lambda job: None)
    slow_poll.enqueue(["chain"] * 5, [{"k": "only"}] * 5)
    worker = slow_poll.start_worker(concurrency=4)
    try:
        wait_until(
            lambda: _fetch(q, "SELECT count(*) AS n FROM S.history")[0]["n"] == 5,
            45,
            "the key's five jobs to run one after the other",
        )
    finally:
        worker.stop(timeout=60)


def test_limits_shows_the_busiest_keys(q: pgq_nb.Queue) -> None:
    q.entrypoint("sync", concurrency_key="customer", max_per_key=2)(lambda job: None)
    q.entrypoint("plain")(lambda job: None)
    q.run_until_idle()  # a worker registers it: max_per_key recorded
    q.enqueue(["sync"] * 5, [{"customer": "a"}] * 3 + [{"customer": "b"}] * 2)
    q.enqueue("plain", {"customer": "a"})
    frame = q.limits(keys=True)
    assert list(frame.columns) == ["entrypoint", "key", "max_per_key", "running", "waiting"]
    assert frame[["key", "waiting"]].values.tolist() == [["a", 3], ["b", 2]]
    assert len(q.limits(keys=True, top=1)) == 1
    with pytest.raises(InvalidInputError, match="top must be at least 1"):
        q.limits(keys=True, top=0)


def test_a_paused_keyed_entrypoint_is_not_claimed(q: pgq_nb.Queue) -> None:
    """Even by a worker that has not heard of the pause yet (the claim reads the table)."""
    q.entrypoint("sync", concurrency_key="customer")(lambda job: None)
    q.run_until_idle()
    q.enqueue("sync", {"customer": "a"})
    q.pause("sync")
    spec = q.aio.registry.handlers["sync"]

    async def claim() -> list[Any]:
        async with q.aio.pool.acquire() as conn, conn.transaction():
            await keys.lock_claims(q.aio.queries, conn, ["sync"])
            return await keys.claim(q.aio.queries, conn, spec, 5, 1)

    assert runtime.run_sync(claim()) == []
    q.resume("sync")
    assert len(runtime.run_sync(claim())) == 1


def test_a_worker_that_changes_max_per_key_says_so(
    q: pgq_nb.Queue, caplog: pytest.LogCaptureFixture
) -> None:
    """The last worker to start sets an entrypoint's max_per_key for every worker (as
    max_running); one that changes what another recorded warns (from review)."""
    q.entrypoint("sync", concurrency_key="c", max_per_key=1)(lambda job: None)
    q.run_until_idle()
    other = pgq_nb.connect(q.aio.store.dsn, schema=SCHEMA)
    other.entrypoint("sync", concurrency_key="c", max_per_key=3)(lambda job: None)
    with caplog.at_level("WARNING", logger="pgq_nb.worker"):
        other.run_until_idle()
    assert "changed entrypoint 'sync''s max_per_key from 1 to 3" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="pgq_nb.worker"):
        other.run_until_idle()  # the same again: nothing to say
    assert "max_per_key" not in caplog.text
