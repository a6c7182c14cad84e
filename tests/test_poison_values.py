"""One job's unstorable result or error fails that job alone: encode_result refuses what jsonb
cannot hold, storable_text makes any error text storable, completion.record records a batch
row by row when the server still refuses it, and a real worker keeps going."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

import pgq_nb
from pgq_nb import completion, encoding, handler_runs, models, runtime
from pgq_nb.completion import Finished
from pgq_nb.encoding import encode_result
from pgq_nb.errors import InvalidInputError
from pgq_nb.models import storable_text
from tests.conftest import SCHEMA

# -- encode_result --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a\x00b", r"NUL character \(\\u0000\) in a string or key \(near \"a\\u0000b\""),
        ({"ok": 1, "k\x00y": 2}, "NUL character"),
        ([1, {"deep": ["x\x00"]}], "NUL character"),
        ("lone \ud800 surrogate", "lone surrogate"),
        ({"\udc00": 1}, "lone surrogate"),
        ("\ud800\ud800", "lone surrogate"),
    ],
)
def test_encode_result_refuses_what_jsonb_cannot_store(value: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        encode_result(value)


@pytest.mark.parametrize(
    "value",
    ["back\\u0000slash", "\\\\u0000", "emoji \U0001f600", {"k": "\\ud800"}],
)
def test_encode_result_keeps_what_only_looks_like_an_escape(value: object) -> None:
    text = encode_result(value)
    assert text is not None and json.loads(text) == value


def test_encode_result_keeps_a_surrogate_pair() -> None:
    # two halves of a pair in a Python str: JSON (and jsonb) read them as the one character
    assert encode_result("\ud83d\ude00") == '"\\ud83d\\ude00"'


def test_encode_result_refuses_results_over_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    assert encoding.RESULT_LIMIT == 16 * 1024 * 1024
    monkeypatch.setattr(encoding, "RESULT_LIMIT", 100)
    assert encode_result("x" * 98) == '"' + "x" * 98 + '"'  # 100 characters of JSON
    with pytest.raises(InvalidInputError, match=r"101 characters of JSON; .* at most 100"):
        encode_result("x" * 99)


# -- storable_text --------------------------------------------------------------------------


def test_storable_text_shows_nul_replaces_surrogates_and_cuts() -> None:
    assert storable_text(None) is None
    assert storable_text("fine") == "fine"
    assert storable_text("a\x00b\ud800c") == "a\\x00b\ufffdc"
    cut = storable_text("x" * 25, limit=10)
    assert cut == "x" * 10 + "\n... [15 more characters cut by pgq_nb]"
    assert len(storable_text("y" * 1_000_000) or "") < models.ERROR_LIMIT + 100
    assert (storable_text("z" * 200_000, models.TRACEBACK_LIMIT) or "").startswith("z" * 100_000)
    assert (storable_text("é\x00" * 3) or "").encode()  # storable: encodes as UTF-8


# -- completion.record against the server ---------------------------------------------------


def _run(call: Awaitable[Any]) -> Any:
    async def run() -> Any:
        return await call

    return runtime.run_sync(run())


async def _claimed(q: pgq_nb.Queue, n: int) -> tuple[int, list[int]]:
    """A worker row and ``n`` jobs it holds (picked)."""
    aq = q.aio
    worker_id = await aq.pool.fetchval(
        aq.queries["register_worker"], "test", 1, ["e"], n, "thread", None
    )
    for _ in range(n):
        await aq.pool.fetchval(aq.queries["enqueue_one"], "e", None, 0, None, None, "active")
    rows = await aq.pool.fetch(aq.queries["claim_jobs"], ["e"], n, worker_id)
    return worker_id, sorted(r["id"] for r in rows)


def _row(job_id: int, outcome: str, result: str | None, error: str | None = None) -> Finished:
    now = dt.datetime.now(dt.UTC)
    return Finished(
        job_id, outcome, result, error, None if error is None else "trace", now, now, 0.0
    )


async def _history(q: pgq_nb.Queue) -> dict[int, Any]:
    rows = await q.aio.pool.fetch(
        f"SELECT id, status, attempts, result, error, traceback FROM {SCHEMA}.history"
    )
    return {r["id"]: r for r in rows}


def _json(value: Any) -> Any:
    """A jsonb column's value (decoded, or its text if the pool has no codec for it)."""
    return json.loads(value) if isinstance(value, str) else value


class Counting:
    """A pool or connection that counts the statements sent through it."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.sent: list[str] = []
        if hasattr(conn, "is_in_transaction"):
            self.is_in_transaction = conn.is_in_transaction

    async def fetch(self, query: str, *args: Any) -> Any:
        self.sent.append(query.split()[0] if len(query) < 60 else "finish_jobs")
        return await self.conn.fetch(query, *args)

    async def execute(self, query: str, *args: Any) -> Any:
        self.sent.append(query)
        return await self.conn.execute(query, *args)


Recorder = Callable[[pgq_nb.Queue, Any, int, list[Finished]], Awaitable[Any]]


async def _on_pool(q: pgq_nb.Queue, counting: Any, worker_id: int, rows: list[Finished]) -> Any:
    counting.conn = q.aio.pool
    return await completion.record(counting, q.aio.queries, worker_id, rows, steps=False)


async def _in_transaction(
    q: pgq_nb.Queue, counting: Any, worker_id: int, rows: list[Finished]
) -> Any:
    async with q.aio.pool.acquire() as conn, conn.transaction():
        counting.conn = conn
        counting.is_in_transaction = conn.is_in_transaction
        return await completion.record(counting, q.aio.queries, worker_id, rows, steps=False)


async def _in_plain_begin(
    q: pgq_nb.Queue, counting: Any, worker_id: int, rows: list[Finished]
) -> Any:
    """In a transaction begun by a plain BEGIN, as the claim's is."""
    async with q.aio.pool.acquire() as conn:
        await conn.execute("BEGIN")
        counting.conn = conn
        counting.is_in_transaction = conn.is_in_transaction
        done = await completion.record(counting, q.aio.queries, worker_id, rows, steps=False)
        await conn.execute("COMMIT")
        return done


@pytest.mark.parametrize(
    ("recorder", "statements"),
    [(_on_pool, 1), (_in_transaction, 2), (_in_plain_begin, 2)],
    ids=["pool", "transaction", "plain-begin"],
)
def test_record_fails_only_the_rows_the_server_refuses(
    q: pgq_nb.Queue, recorder: Recorder, statements: int
) -> None:
    async def scenario() -> None:
        worker_id, ids = await _claimed(q, 10)
        # a clean batch: one statement (plus a SAVEPOINT inside a transaction)
        counting = Counting(None)
        clean = [_row(i, "succeeded", json.dumps({"n": i})) for i in ids[:4]]
        assert len(await recorder(q, counting, worker_id, clean)) == 4
        assert len(counting.sent) == statements
        # results that slipped past encode_result, next to good rows and to errors with NUL
        rows = [
            _row(ids[4], "succeeded", '"a\\u0000b"'),  # jsonb: unsupported escape
            _row(ids[5], "succeeded", json.dumps([1, 2])),
            _row(ids[6], "succeeded", "{not json"),
            _row(ids[7], "retry", None, "ValueError: bad\x00value"),  # made storable
            _row(ids[8], "failed", None, "x" * 50_000),  # cut
            _row(ids[9], "succeeded", "7"),
        ]
        done = await recorder(q, Counting(None), worker_id, rows)
        assert sorted(r["id"] for r in done) == sorted([*ids[4:7], *ids[8:]])
        history = await _history(q)
        for i in [*ids[:4], ids[5], ids[9]]:
            assert history[i]["status"] == "succeeded"
        assert _json(history[ids[5]]["result"]) == [1, 2]
        for i, why in [(ids[4], "unsupported Unicode escape"), (ids[6], "invalid input")]:
            refused = history[i]
            assert refused["status"] == "failed" and refused["result"] is None
            assert refused["error"].startswith(
                "the result/error could not be stored: the handler's result was refused by Postgres"
            )
            assert why in refused["error"]
        assert len(history[ids[8]]["error"]) < models.ERROR_LIMIT + 100
        retried = await q.aio.pool.fetchrow(
            f"SELECT status, last_error FROM {SCHEMA}.jobs WHERE id = $1", ids[7]
        )
        assert retried["status"] == "queued"
        assert retried["last_error"] == "ValueError: bad\\x00value"

    runtime.run_sync(scenario())


def test_record_without_isolation_raises_the_refusal(q: pgq_nb.Queue) -> None:
    """For a transactional handler: its writes and its completion commit together or not."""

    async def scenario() -> None:
        worker_id, ids = await _claimed(q, 2)
        rows = [_row(ids[0], "succeeded", "1"), _row(ids[1], "succeeded", '"\\u0000"')]
        with pytest.raises(asyncpg.UntranslatableCharacterError) as caught:
            async with q.aio.pool.acquire() as conn, conn.transaction():
                await completion.record(
                    conn, q.aio.queries, worker_id, rows, steps=False, isolate=False
                )
        assert completion.is_refusal(caught.value)
        assert await _history(q) == {}

    runtime.run_sync(scenario())


@pytest.mark.parametrize("isolate", [True, False])
def test_an_empty_batch_records_nothing_and_raises_nothing(q: pgq_nb.Queue, isolate: bool) -> None:
    """Seen on a worker serving 10,000 entrypoints: "completion failed; retrying: the server
    expects 9 arguments for this query, 1 was passed" (finish_jobs sent with no arrays)."""

    async def scenario() -> None:
        worker_id, _ = await _claimed(q, 1)
        async with q.aio.pool.acquire() as conn, conn.transaction():
            done = await completion.record(
                conn, q.aio.queries, worker_id, [], steps=True, isolate=isolate
            )
        assert done == []
        assert await completion.record(q.aio.pool, q.aio.queries, worker_id, [], steps=False) == []

    runtime.run_sync(scenario())


def test_a_batch_with_too_much_text_is_split(
    q: pgq_nb.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(completion, "STATEMENT_TEXT_LIMIT", 1_000)

    async def scenario() -> None:
        worker_id, ids = await _claimed(q, 5)
        counting = Counting(q.aio.pool)
        rows = [_row(i, "succeeded", json.dumps("x" * 400)) for i in ids]
        done = await completion.record(counting, q.aio.queries, worker_id, rows, steps=False)
        assert len(done) == 5 and len(counting.sent) == 3  # 2 + 2 + 1 rows

    runtime.run_sync(scenario())


# -- a real worker --------------------------------------------------------------------------

POISON = {
    "nul_result": "NUL character",
    "nul_error": "bad\\x00value",
    "nul_key": "NUL character",
    "oversize": "RESULT_LIMIT",
    "surrogate_error": "bad\ufffdvalue",
}


def _wait_alive(
    q: pgq_nb.Queue, worker: Any, ids: list[int], timeout: float = 120
) -> dict[int, str]:
    """Final status of each job, failing at once if the worker exits before they all end."""
    deadline = time.monotonic() + timeout
    while True:
        found = q.statuses(ids)
        if len(found) == len(ids) and all(s.is_final for s in found.values()):
            return {i: found[i].value for i in ids}
        assert worker.running, "the worker exited over a poison job"
        assert time.monotonic() < deadline, f"jobs unfinished after {timeout} s"
        time.sleep(0.1)


def _handler(job: pgq_nb.Job) -> object:
    kind = job.data["kind"]
    if kind == "good":
        return {"n": job.data["n"], "echo": "x" * 50}
    if kind == "nul_result":
        return "a\x00b"
    if kind == "nul_error":
        raise ValueError("bad\x00value")
    if kind == "surrogate_error":
        raise ValueError("bad\udcffvalue")
    if kind == "nul_key":
        return {"fine": 1, "k\x00": 2}
    return "y" * 5_000  # oversize, with RESULT_LIMIT patched to 1,000


def test_a_worker_fails_only_the_poison_jobs_and_keeps_going(
    q: pgq_nb.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(encoding, "RESULT_LIMIT", 1_000)
    q.entrypoint("mixed", retry=pgq_nb.RetryPolicy(max_attempts=1))(_handler)
    payloads: list[dict[str, Any]] = []
    for n in range(200):
        payloads.append({"kind": "good", "n": n})
        if n % 20 == 10:  # poison in every claim batch of 32
            payloads.append({"kind": list(POISON)[(n // 20) % len(POISON)], "n": n})
    ids = q.enqueue(["mixed"] * len(payloads), payloads)
    worker = q.start_worker(concurrency=32)
    try:
        statuses = _wait_alive(q, worker, ids)
        later = q.enqueue(["mixed"] * 20, [{"kind": "good", "n": 1000 + n} for n in range(20)])
        assert set(_wait_alive(q, worker, later).values()) == {"succeeded"}
        assert worker.running
    finally:
        worker.stop(timeout=60)

    history = _run(_history(q))
    for job_id, payload in zip(ids, payloads, strict=True):
        row = history[job_id]
        if payload["kind"] == "good":
            assert statuses[job_id] == "succeeded", row["error"]
            assert row["attempts"] == 1
            assert _json(row["result"])["n"] == payload["n"]
        else:
            assert statuses[job_id] == "failed", payload
            assert row["result"] is None
            assert POISON[payload["kind"]] in row["error"], row["error"]
            assert "\x00" not in (row["traceback"] or "")
    workers = {history[i]["id"]: worker.worker.worker_id for i in later}
    assert len(set(workers.values())) == 1


def test_a_worker_survives_a_result_the_server_refuses_after_the_checks(
    q: pgq_nb.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The defence behind the checks: a result that passes encode_result (here, by a stand-in
    that skips its checks) but that Postgres refuses fails its own job, whichever statement
    records it (the claim's transaction or the flush)."""

    def unchecked(value: object) -> str | None:
        return '"\\u0000"' if value == "sneak" else encode_result(value)

    monkeypatch.setattr(handler_runs, "encode_result", unchecked)
    q.entrypoint("sneaky", retry=pgq_nb.RetryPolicy(max_attempts=1))(
        lambda job: "sneak" if job.data["bad"] else {"n": job.data["n"]}
    )
    payloads = [{"bad": n % 25 == 7, "n": n} for n in range(200)]
    ids = q.enqueue(["sneaky"] * len(payloads), payloads)
    worker = q.start_worker(concurrency=32)
    try:
        statuses = _wait_alive(q, worker, ids)
    finally:
        worker.stop(timeout=60)
    history = _run(_history(q))
    for job_id, payload in zip(ids, payloads, strict=True):
        row = history[job_id]
        if payload["bad"]:
            assert statuses[job_id] == "failed"
            assert row["error"].startswith("the result/error could not be stored")
        else:
            assert statuses[job_id] == "succeeded" and row["attempts"] == 1, row["error"]


def test_a_transactional_handler_whose_result_is_refused_rolls_back_and_fails(
    q: pgq_nb.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its writes and its completion commit together: a refused result takes the writes back."""

    def unchecked(value: object) -> str | None:
        return '"\\u0000"' if value == "sneak" else encode_result(value)

    monkeypatch.setattr(handler_runs, "encode_result", unchecked)
    q.entrypoint("side")(lambda job: None)

    def handler(job: pgq_nb.Job) -> object:
        job.tx.enqueue("side", {"from": job.id})
        return job.data

    q.entrypoint("tx", transactional=True, retry=pgq_nb.RetryPolicy(max_attempts=1))(handler)
    bad, good = q.enqueue(["tx", "tx"], ["sneak", "fine"])
    q.run_until_idle(entrypoints=["tx"])
    assert q.get_job(good).status is pgq_nb.JobStatus.SUCCEEDED
    failed = q.get_job(bad)
    assert failed.status is pgq_nb.JobStatus.FAILED and failed.result is None
    assert "the result could not be stored: Postgres refused it" in (failed.error or "")
    sides = [q.get_job(int(i)).data for i in q.jobs(entrypoint="side")["job_id"]]
    assert sides == [{"from": good}]  # the refused job's write was rolled back
