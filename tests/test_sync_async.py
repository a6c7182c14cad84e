"""The sync facade and the async API share one loop thread; interrupts leave the pool healthy."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest

import pgq_nb
from pgq_nb import db, runtime
from tests.conftest import SCHEMA


def test_reconnecting_in_a_cell_leaks_no_threads_or_pools(installed: str) -> None:
    pgq_nb.connect(installed, schema=SCHEMA)
    threads = threading.active_count()
    pools = len(db._pools)
    for _ in range(20):
        q = pgq_nb.connect(installed, schema=SCHEMA)
        q.counts()
    assert threading.active_count() == threads
    assert len(db._pools) == pools


def test_async_api_from_another_event_loop(q: pgq_nb.Queue) -> None:
    """Like awaiting in a Jupyter cell: the kernel's loop is not the pool's loop."""
    q.entrypoint("a")(lambda job: None)

    async def in_kernel_loop() -> list[int]:
        first = await q.aio.enqueue("a", {"n": 1})
        more = await q.aio.enqueue(["a", "a"], [None, None], [0, 0])
        await q.aio.run_until_idle()
        return [first, *more]

    ids = asyncio.run(in_kernel_loop())
    assert set(q.statuses(ids).values()) == {pgq_nb.JobStatus.SUCCEEDED}


def test_aconnect_returns_an_async_queue(installed: str) -> None:
    async def main() -> int:
        aq = await pgq_nb.aconnect(installed, schema=SCHEMA)
        return len(await aq.counts())

    assert asyncio.run(main()) >= 0


def test_blocking_call_inside_the_loop_raises_instead_of_deadlocking(q: pgq_nb.Queue) -> None:
    seen: list[BaseException] = []

    @q.entrypoint("nested")
    async def nested(job: pgq_nb.Job) -> None:
        try:
            q.enqueue("nested")  # sync call from the loop thread
        except pgq_nb.BlockingCallError as exc:
            seen.append(exc)

    q.enqueue("nested")
    q.run_until_idle()
    assert len(seen) == 1
    assert "await q.aio." in str(seen[0])


def test_sync_call_from_a_plain_handler_thread_works(q: pgq_nb.Queue) -> None:
    @q.entrypoint("parent")
    def parent(job: pgq_nb.Job) -> int:
        return q.enqueue("child", {"from": job.id})

    q.entrypoint("child")(lambda job: job.data["from"])
    parent_id = q.enqueue("parent")
    q.run_until_idle()
    child_id = q.get_job(parent_id).result
    assert q.get_job(child_id).result == parent_id


def test_keyboard_interrupt_cancels_the_query_and_keeps_the_pool_usable(
    q: pgq_nb.Queue,
) -> None:
    async def slow_query() -> None:
        await q.aio.pool.execute("SELECT pg_sleep(30)")

    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        runtime.run_sync(slow_query())
    assert time.monotonic() - began < 10

    async def sleeping() -> int:
        n: int = await q.aio.pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%'"
        )
        return n

    deadline = time.monotonic() + 5
    while runtime.run_sync(sleeping()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runtime.run_sync(sleeping()) == 0
    q.entrypoint("after")(lambda job: None)
    assert isinstance(q.enqueue("after"), int)


def test_keyboard_interrupt_during_run_until_idle_requeues_running_jobs(
    q: pgq_nb.Queue,
) -> None:
    @q.entrypoint("forever")
    async def forever(job: pgq_nb.Job) -> None:
        await asyncio.sleep(60)

    job_id = q.enqueue("forever")
    threading.Timer(0.7, os.kill, (os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        q.run_until_idle()
    info = q.get_job(job_id)
    assert info.status is pgq_nb.JobStatus.QUEUED
    assert q.worker_list() == []


def test_unreachable_dsn_names_host_and_port_not_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(db, "CONNECT_RETRY_SECONDS", 1.0)  # connection refused is retried
    with pytest.raises(pgq_nb.DatabaseUnavailableError) as err:
        pgq_nb.connect("postgresql://alice:s3cret-pw@127.0.0.1:1/appdb")
    message = str(err.value)
    assert "'127.0.0.1' port 1" in message
    assert "appdb" in message
    assert "s3cret-pw" not in message


def test_wrong_password_is_a_clear_error(installed: str) -> None:
    if "@" not in installed or ":" not in installed.split("@")[0].split("//")[1]:
        pytest.skip(
            "the test server's DSN has no password to get wrong; set PGQ_NB_TEST_DSN to one "
            "with a password, or unset it to use the embedded server (which has one)"
        )
    user_part, rest = installed.split("@", 1)
    bad = user_part.rsplit(":", 1)[0] + ":wrong-password@" + rest
    with pytest.raises(pgq_nb.DatabaseUnavailableError, match="refused the connection"):
        pgq_nb.connect(bad)
