"""Enqueue inside the caller's transaction; transactional handlers; shared resources."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

import pgq_nb
from pgq_nb import runtime
from tests.conftest import SCHEMA

TABLE = f"{SCHEMA}_app.test_orders"  # the user's own table, outside pgq_nb's schema


@pytest.fixture
def orders(q: pgq_nb.Queue) -> Iterator[pgq_nb.Queue]:
    async def create() -> None:
        await q.aio.pool.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}_app")
        await q.aio.pool.execute(f"DROP TABLE IF EXISTS {TABLE}")
        await q.aio.pool.execute(f"CREATE TABLE {TABLE} (id int PRIMARY KEY, note text)")

    async def drop() -> None:
        await q.aio.pool.execute(f"DROP SCHEMA IF EXISTS {SCHEMA}_app CASCADE")

    runtime.run_sync(create())
    yield q
    runtime.run_sync(drop())


def _count(q: pgq_nb.Queue, sql: str) -> int:
    async def run() -> int:
        n: int = await q.aio.pool.fetchval(sql)
        return n

    return runtime.run_sync(run())


def test_committed_transaction_has_rows_and_jobs(orders: pgq_nb.Queue) -> None:
    q = orders
    q.entrypoint("invoice")(lambda job: job.data["order"])
    q.entrypoint("step")(lambda job: None)
    with q.transaction() as tx:
        tx.execute(f"INSERT INTO {TABLE} VALUES ($1, $2)", 1, "first")
        job_id = tx.enqueue("invoice", {"order": 1})
        ids = tx.enqueue(["invoice", "invoice"], [{"order": 2}, {"order": 3}], [0, 0])
        wf = q.workflow("in_tx")
        wf.step("step")
        run = wf.submit(tx)
        assert tx.fetchval(f"SELECT count(*) FROM {TABLE}") == 1
    assert _count(q, f"SELECT count(*) FROM {TABLE}") == 1
    assert q.get_job(job_id).status is pgq_nb.JobStatus.QUEUED
    assert len(ids) == 2
    assert run.state() == "running"


def test_rolled_back_transaction_leaves_nothing_and_wakes_no_worker(
    orders: pgq_nb.Queue,
) -> None:
    q = orders
    ran: list[int] = []
    q.entrypoint("invoice")(lambda job: ran.append(job.id))
    q.entrypoint("step")(lambda job: ran.append(job.id))
    handle = q.start_worker()
    try:
        with pytest.raises(RuntimeError, match="boom"), q.transaction() as tx:
            tx.execute(f"INSERT INTO {TABLE} VALUES ($1, $2)", 1, "lost")
            tx.enqueue("invoice", {"order": 1})
            wf = q.workflow("lost")
            wf.step("step")
            wf.submit(tx)
            raise RuntimeError("boom")
        assert _count(q, f"SELECT count(*) FROM {TABLE}") == 0
        assert _count(q, f"SELECT count(*) FROM {SCHEMA}.jobs") == 0
        assert _count(q, f"SELECT count(*) FROM {SCHEMA}.workflows") == 0
    finally:
        handle.stop(timeout=30)
    assert ran == []


def test_async_transaction_and_callers_own_connection(orders: pgq_nb.Queue, installed: str) -> None:
    q = orders
    q.entrypoint("invoice")(lambda job: None)

    async def in_kernel_loop() -> None:
        async with q.aio.transaction() as tx:
            await tx.execute(f"INSERT INTO {TABLE} VALUES (1, 'a')")
            await tx.enqueue("invoice", {"order": 1})
        # the caller's own connection, on the caller's loop
        conn = await asyncpg.connect(installed)
        try:
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {TABLE} VALUES (2, 'b')")
                await q.aio.enqueue("invoice", {"order": 2}, connection=conn)
            tr = conn.transaction()
            await tr.start()
            await conn.execute(f"INSERT INTO {TABLE} VALUES (3, 'c')")
            await q.aio.enqueue("invoice", {"order": 3}, connection=conn)
            await tr.rollback()
        finally:
            await conn.close()

    asyncio.run(in_kernel_loop())
    assert _count(q, f"SELECT count(*) FROM {TABLE}") == 2
    assert _count(q, f"SELECT count(*) FROM {SCHEMA}.jobs") == 2


def test_transactional_handler_commits_output_with_completion(orders: pgq_nb.Queue) -> None:
    q = orders

    @q.entrypoint("write", transactional=True)
    async def write(job: pgq_nb.Job) -> str:
        await job.tx.execute(f"INSERT INTO {TABLE} VALUES ($1, 'done')", job.data)
        return "written"

    @q.entrypoint("write_sync", transactional=True)
    def write_sync(job: pgq_nb.Job) -> str:
        job.tx.execute(f"INSERT INTO {TABLE} VALUES ($1, 'sync')", job.data)
        job.tx.enqueue("write", job.data + 100)
        return "written too"

    a = q.enqueue("write", 1)
    b = q.enqueue("write_sync", 2)
    q.run_until_idle()
    assert q.get_job(a).result == "written"
    assert q.get_job(b).result == "written too"
    assert _count(q, f"SELECT count(*) FROM {TABLE}") == 3


def test_transactional_handler_that_raises_loses_its_writes_and_is_retried(
    orders: pgq_nb.Queue,
) -> None:
    q = orders

    @q.entrypoint(
        "flaky", transactional=True, retry=pgq_nb.RetryPolicy(max_attempts=2, base_delay=0.05)
    )
    async def flaky(job: pgq_nb.Job) -> int:
        await job.tx.execute(f"INSERT INTO {TABLE} VALUES ($1, 'x')", job.attempts)
        if job.attempts == 1:
            raise ValueError("first attempt fails after writing")
        return job.attempts

    job_id = q.enqueue("flaky")
    q.run_until_idle()
    info = q.get_job(job_id)
    assert info.status is pgq_nb.JobStatus.SUCCEEDED
    assert info.attempts == 2
    assert _count(q, f"SELECT count(*) FROM {TABLE}") == 1  # only the second attempt's row
    assert _count(q, f"SELECT min(id) FROM {TABLE}") == 2


def test_resources_are_made_once_per_process_and_closed_on_shutdown(q: pgq_nb.Queue) -> None:
    events: list[str] = []
    q.resources["settings"] = {"region": "eu"}

    @q.resource("client")
    async def client() -> AsyncIterator[dict[str, int]]:
        events.append("open")
        yield {"calls": 0}
        events.append("close")

    @q.resource("counter")
    def counter() -> Iterator[list[int]]:
        events.append("open counter")
        yield []
        events.append("close counter")

    @q.entrypoint("use")
    async def use(job: pgq_nb.Job) -> str:
        job.resources["client"]["calls"] += 1
        job.resources["counter"].append(job.id)
        return str(job.resources["settings"]["region"])

    ids = q.enqueue(["use"] * 10)
    q.run_until_idle(concurrency=4)
    assert events == ["open", "open counter", "close counter", "close"]
    assert {q.get_job(i).result for i in ids} == {"eu"}
    with pytest.raises(KeyError, match="no resource named 'missing'"):
        q.resources["missing"]
    with pytest.raises(KeyError, match="has not run yet"):
        q.resources["client"]


def test_a_transactional_success_waits_for_its_start_mark(
    orders: pgq_nb.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start mark (attempts + 1) goes on the claim's connection in the background; the
    transactional handler records its success on another. Under load the success committed
    first, the mark then found the job gone, and history said 0 attempts (1 after a retry:
    seen in CI). The mark is slowed here, as a loaded machine does."""
    from pgq_nb.claiming import Claiming

    send = Claiming._send_mark

    async def late(self: Claiming, conn: object, statement: str) -> None:
        await asyncio.sleep(0.5)
        await send(self, conn, statement)

    monkeypatch.setattr(Claiming, "_send_mark", late)
    q = orders

    @q.entrypoint("quick", transactional=True)
    async def quick(job: pgq_nb.Job) -> int:
        await job.tx.execute(f"INSERT INTO {TABLE} VALUES ($1, 'x')", job.attempts)
        return job.attempts

    job_id = q.enqueue("quick")
    q.run_until_idle()
    info = q.get_job(job_id)
    assert info.status is pgq_nb.JobStatus.SUCCEEDED
    assert (info.attempts, info.result) == (1, 1)
