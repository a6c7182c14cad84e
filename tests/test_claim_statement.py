"""The worker's claim as one statement (issue #22): finish_and_claim records a batch of
completions and claims the next batch in one round trip and one commit; claim_batch, the
function inside it, carries the claim's planner settings; the query files share text through
``{include:_part}``."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import time
from typing import Any

import asyncpg
import pytest

import pgq_nb
from pgq_nb import runtime, sql
from pgq_nb.completion import Finished, columns
from pgq_nb.models import CLAIMED_FIELDS
from pgq_nb.worker import Worker
from tests.conftest import SCHEMA


def _run(q: pgq_nb.Queue, steps: Any) -> Any:
    async def run() -> Any:
        async with q.aio.pool.acquire() as conn:
            return await steps(conn, q.aio.queries)

    return runtime.run_sync(run())


async def _register(conn: asyncpg.Connection, queries: dict[str, str], names: list[str]) -> int:
    worker: int = await conn.fetchval(
        queries["register_worker"], socket.gethostname(), os.getpid(), names, 8, "thread", None
    )
    return worker


def _succeeded(ids: list[int]) -> tuple[list[Any], ...]:
    now = dt.datetime.now(dt.UTC)
    k = len(ids)
    none: list[Any] = [None] * k
    return (ids, ["succeeded"] * k, none, none, none, [now] * k, [now] * k, [0.0] * k, none, none)


def test_completions_and_the_next_claim_in_one_statement(q: pgq_nb.Queue) -> None:
    q.entrypoint("a")(lambda job: None)
    first = q.enqueue(["a"] * 3)
    later = q.enqueue(["a"] * 2)

    async def steps(conn: asyncpg.Connection, queries: dict[str, str]) -> Any:
        worker = await _register(conn, queries, ["a"])
        claimed = await conn.fetch(queries["finish_and_claim"], worker, *_succeeded([]), ["a"], 3)
        assert tuple(claimed[0].keys()) == CLAIMED_FIELDS  # Job.claimed reads them in order
        ids = sorted(r["id"] for r in claimed)
        again = await conn.fetch(queries["finish_and_claim"], worker, *_succeeded(ids), ["a"], 5)
        history = await conn.fetch(f"SELECT id, status FROM {SCHEMA}.history ORDER BY id")
        return ids, sorted(r["id"] for r in again), [(r["id"], r["status"]) for r in history]

    ids, again, history = _run(q, steps)
    assert ids == sorted(first)
    assert again == sorted(later)  # the finished ones are not claimed again
    assert history == [(i, "succeeded") for i in sorted(first)]
    assert q.stats().loc["a", "succeeded"] == 3


def test_a_step_its_completions_release_is_claimed_in_the_same_statement(
    q: pgq_nb.Queue,
) -> None:
    q.entrypoint("parent")(lambda job: 1)
    q.entrypoint("child")(lambda job: 2)
    wf = q.workflow("pair")
    child = wf.step("child", depends_on=wf.step("parent"))
    run = wf.submit()

    async def steps(conn: asyncpg.Connection, queries: dict[str, str]) -> Any:
        worker = await _register(conn, queries, ["parent", "child"])
        first = await conn.fetch(
            queries["finish_and_claim"], worker, *_succeeded([]), ["parent", "child"], 5
        )
        assert [r["entrypoint"] for r in first] == ["parent"]
        second = await conn.fetch(
            queries["finish_and_claim"],
            worker,
            *_succeeded([first[0]["id"]]),
            ["parent", "child"],
            5,
        )
        return [(r["entrypoint"], r["step_name"]) for r in second]

    assert _run(q, steps) == [("child", child.name)]
    assert run.status().set_index("step").loc["parent", "status"] == "succeeded"


def test_a_paused_entrypoint_is_not_claimed_by_the_function(q: pgq_nb.Queue) -> None:
    q.entrypoint("a")(lambda job: None)
    q.enqueue(["a"] * 2)
    q.pause("a")

    async def steps(conn: asyncpg.Connection, queries: dict[str, str]) -> Any:
        worker = await _register(conn, queries, ["a"])
        return await conn.fetch(queries["claim_jobs"], ["a"], 5, worker)

    assert _run(q, steps) == []


def test_parts_are_included_and_never_queries_of_their_own() -> None:
    queries = sql.queries("included_check")
    assert not any(name.startswith("_") for name in queries)
    assert "{include:" not in "".join(queries.values())
    columns = queries["claim_jobs"].split("FROM")[0]
    assert columns in queries["finish_and_claim"]  # the same columns, written once
    assert "finish_batch(" in queries["finish_jobs"]
    assert "finish_batch(" in queries["finish_and_claim"]
    assert sql._included({"a": "x {include:_p} y", "_p": "P"}) == {"a": "x P\n y"}
    with pytest.raises(RuntimeError, match="_missing"):
        sql._included({"a": "{include:_missing}"})


def test_columns_of_nothing_but_none_go_as_null() -> None:
    now = dt.datetime.now(dt.UTC)
    batch = [
        Finished(1, "succeeded", None, None, None, now, now, 0.0),
        Finished(2, "failed", None, "ValueError: x", None, now, now, 0.0),
    ]
    got = columns(batch)
    assert got == [[1, 2], ["succeeded", "failed"], None, [None, "ValueError: x"], None,
                   [now, now], [now, now], [0.0, 0.0], None, None]  # fmt: skip
    assert columns([]) == [[]] * len(Finished._fields)


def test_a_null_column_records_the_same_rows(q: pgq_nb.Queue) -> None:
    q.entrypoint("a")(lambda job: None)
    ids = q.enqueue(["a"] * 2)

    async def steps(conn: asyncpg.Connection, queries: dict[str, str]) -> Any:
        worker = await _register(conn, queries, ["a"])
        await conn.fetch(queries["claim_jobs"], ["a"], 2, worker)
        now = dt.datetime.now(dt.UTC)
        batch = [Finished(i, "succeeded", '{"x": 1}', None, None, now, now, 0.0) for i in ids]
        await conn.fetch(queries["finish_jobs"], worker, *columns(batch))
        return await conn.fetch(f"SELECT id, result, error FROM {SCHEMA}.history ORDER BY id")

    rows = _run(q, steps)
    assert [(r["id"], r["error"]) for r in rows] == [(i, None) for i in sorted(ids)]
    assert all(r["result"] is not None for r in rows)


def test_a_cancel_beside_the_statement_does_not_deadlock(q: pgq_nb.Queue, installed: str) -> None:
    """The completions' writes (here a retry) lock the worker's own rows before the claim
    locks queued ones, the order cancel_jobs relies on; a data-modifying CTE nobody read ran
    at the end, after the claim: q.cancel() of a running and a queued job then deadlocked."""
    q.entrypoint("a")(lambda job: None)
    q.enqueue(["a"] * 2)

    async def run() -> tuple[list[int], list[int]]:
        worker_conn = await asyncpg.connect(installed)
        other = await asyncpg.connect(installed)
        try:
            queries = q.aio.queries
            worker = await _register(worker_conn, queries, ["a"])
            running = (await worker_conn.fetch(queries["claim_jobs"], ["a"], 1, worker))[0]["id"]
            queued = await other.fetchval(f"SELECT id FROM {SCHEMA}.jobs WHERE status = 'queued'")
            tx = other.transaction()  # q.cancel's order: request_cancel, then cancel_waiting
            await tx.start()
            await other.fetch(queries["request_cancel"], [running, queued])
            now = dt.datetime.now(dt.UTC)
            retry = ([running], ["retry"], None, ["E"], None, [now], [now], [5.0], None, None)
            claim = worker_conn.fetch(queries["finish_and_claim"], worker, *retry, ["a"], 5)
            claiming = asyncio.ensure_future(claim)
            await asyncio.sleep(0.3)  # the worker's statement waits for the running job's lock
            gone = await other.fetch(queries["cancel_waiting"], [running, queued])
            await tx.commit()
            got = await claiming
            return [r["id"] for r in gone], [r["id"] for r in got]
        finally:
            await worker_conn.close()
            await other.close()

    gone, got = runtime.run_sync(run())
    assert len(gone) == 1  # the queued job, cancelled; no DeadlockDetectedError either side
    assert got == []  # the retried job is due in 5 s, the other cancelled


def test_claimed_columns_are_read_by_name(q: pgq_nb.Queue) -> None:
    """A later migration may add a column to claim_batch (workers of the version before keep
    running): they read the columns they know."""
    q.entrypoint("a")(lambda job: None)
    q.enqueue(["a"] * 2)
    migration = next(m for m in sql.migrations(SCHEMA) if m.version == 12).sql
    start = migration.index("CREATE FUNCTION")  # claim_batch comes first
    current = migration[start : migration.index("$claim$;") + len("$claim$;")]
    assert "claim_batch" in current
    wider = current.replace(
        "map_source bigint, step_path integer[])",
        "map_source bigint, step_path integer[], added_later text)",
    ).replace("j.map_source, j.step_path\n$claim$", "j.map_source, j.step_path, 'x'\n$claim$")
    assert wider != current
    drop = f"DROP FUNCTION {SCHEMA}.claim_batch(text[], integer, bigint)"

    async def replace(text: str) -> None:
        async with q.aio.pool.acquire() as conn, conn.transaction():
            await conn.execute(drop)
            await conn.execute(text)

    runtime.run_sync(replace(wider))
    try:
        stats = q.run_until_idle(concurrency=2, wait_for_scheduled=0, timeout=60)
    finally:
        runtime.run_sync(replace(current))
    assert stats.succeeded == 2


def test_completions_left_by_a_failed_claim_are_recorded_while_paused(
    q: pgq_nb.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim carrying completions fails (a transient error), and meanwhile the entrypoint is
    paused with nothing running: the completions are recorded by the flush, and the worker
    claims again after the resume (it waited for a slot that nothing would free)."""
    q.entrypoint("a")(lambda job: time.sleep(0.2))
    q.enqueue(["a"] * 3)
    real = Worker._claim_once
    failed: list[int] = []

    async def once_broken(self: Worker, limit: int, done: Any = (), slots: Any = ()) -> Any:
        if done and not failed:
            failed.append(len(done))
            await q.aio.pause("a")
            asyncio.get_running_loop().call_later(
                2.0, lambda: asyncio.ensure_future(q.aio.resume("a"))
            )
            raise asyncpg.ConnectionDoesNotExistError("closed in the middle of the claim")
        return await real(self, limit, done, slots)

    monkeypatch.setattr(Worker, "_claim_once", once_broken)
    stats = q.run_until_idle(concurrency=1, wait_for_scheduled=0, timeout=60)
    assert failed == [1]
    assert stats.succeeded == 3


def test_parts_include_parts_and_every_include_is_resolved() -> None:
    out = sql._included({"a": "x {include:_p} y", "_p": "P {include:_q}", "_q": "Q -- note"})
    assert out == {"a": "x P Q -- note\n\n y"}  # a part's trailing comment ends its line
    with pytest.raises(RuntimeError, match="include each other"):
        sql._included({"a": "{include:_p}", "_p": "{include:_q}", "_q": "{include:_p}"})
    with pytest.raises(RuntimeError, match="no part"):
        sql._included({"a": "{include:plain}"})


def test_the_move_into_history_reads_only_the_batch_in_jobs(q: pgq_nb.Queue) -> None:
    """move_to_history finds its batch in jobs by primary key. Its DELETE joined jobs to the
    batch on id alone, and the planner, told by its statistics that few jobs are held by the
    worker, walked all of jobs_pkey with the batch read again for every row (20,000 jobs and a
    batch of 1,024: 1.6 million comparisons, 200 ms; migration 13)."""
    q.entrypoint("rec")(lambda job: None)
    n = 20_000
    q.enqueue(["rec"] * n, [None] * n, [0] * n)

    async def steps(conn: asyncpg.Connection, queries: dict[str, str]) -> Any:
        worker = await _register(conn, queries, ["rec"])
        claimed = await conn.fetch(queries["claim_jobs"], ["rec"], 1024, worker)
        ids = [r["id"] for r in claimed]
        async with conn.transaction():
            moved = await conn.fetch(queries["finish_jobs"], worker, *_succeeded(ids))
            read = await conn.fetchval(  # rows of jobs fetched through an index
                "SELECT idx_tup_fetch FROM pg_stat_xact_user_tables "
                "WHERE schemaname = $1 AND relname = 'jobs'",
                SCHEMA,
            )
        return len(ids), len(moved), read

    claimed, moved, read = _run(q, steps)
    assert claimed == moved == 1024
    assert read <= 4 * 1024, f"{read} rows of jobs read to move 1,024 jobs (of {n:,})"
