"""Cancelling a workflow run while a map_over's source is expanding (issue #21, item 1): every
step ends final (none escapes the cancel), the run settles, and run.cancel() never surfaces a
deadlock. The timing is forced: a side connection holds a row the completion needs, so the
completion and the cancel both wait at known points, then it lets go."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

import asyncpg

import pgq_nb
from pgq_nb import runtime
from pgq_nb.completion import Finished, record
from tests.conftest import SCHEMA, wait_until


def _submit(q: pgq_nb.Queue) -> pgq_nb.workflow_run.WorkflowRun:
    q.entrypoint("extract")(lambda job: [1, 2, 3])
    q.entrypoint("transform")(lambda job: int(job.data) * 10)
    q.entrypoint("aggregate")(lambda job: job.parent_results()["transform"])
    wf = q.workflow("cancel_race")
    wf.step("aggregate", depends_on=wf.map_over(wf.step("extract"), "transform"))
    run = wf.submit()
    # extract (job 1) is running on worker 7
    _side_sql(q, "UPDATE {schema}.jobs SET status = 'picked', worker_id = 7 WHERE id = 1")
    return run


def _side_sql(q: pgq_nb.Queue, sql: str, *args: Any) -> Any:
    async def run() -> Any:
        return await q.aio.pool.fetch(sql.format(schema=SCHEMA), *args)

    return runtime.run_sync(run())


def _finish_source(q: pgq_nb.Queue) -> None:
    """Record job 1's success as worker 7's flush would (it expands the map_over)."""

    async def run() -> None:
        now = dt.datetime.now(dt.UTC)
        row = Finished(1, "succeeded", "[1,2,3]", None, None, now, now, 0.0)
        async with q.aio.pool.acquire() as conn, conn.transaction():
            await record(conn, q.aio.store.queries, 7, [row], steps=True)

    runtime.run_sync(run())


class _Holder:
    """A connection of its own holding a row lock in an open transaction."""

    def __init__(self, q: pgq_nb.Queue, lock_sql: str, *args: Any) -> None:
        async def start() -> asyncpg.Connection:
            # the pool's connections opened first: opening one (its set-up) is no lock wait
            held = [await q.aio.pool.acquire() for _ in range(4)]
            for conn in held:
                await q.aio.pool.release(conn)
            conn = await asyncpg.connect(q.aio.dsn)
            await conn.execute("BEGIN")
            await conn.execute(lock_sql.format(schema=SCHEMA), *args)
            return conn

        self.conn = runtime.run_sync(start())

    def waiters(self) -> int:
        """Backends of this database waiting for a lock."""
        n: int = runtime.run_sync(
            self.conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
        )
        return n

    def release(self) -> None:
        async def stop() -> None:
            await self.conn.execute("ROLLBACK")
            await self.conn.close()

        runtime.run_sync(stop())


def _in_thread(fn: Callable[[], Any], out: dict[str, Any], key: str) -> threading.Thread:
    def target() -> None:
        try:
            out[key] = fn()
        except BaseException as exc:  # reported by the test
            out[key] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def _deadlocks(q: pgq_nb.Queue) -> int:
    n: int = _side_sql(
        q, "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    )[0]["deadlocks"]
    return n


def _race(q: pgq_nb.Queue, run: pgq_nb.workflow_run.WorkflowRun, holder: _Holder) -> Any:
    """The source's completion waits on the holder; the cancel comes while it waits; then the
    holder lets go. Returns what run.cancel() returned."""
    out: dict[str, Any] = {}
    try:
        done = _in_thread(lambda: _finish_source(q), out, "finish")
        wait_until(lambda: holder.waiters() >= 1, 60, "the completion to wait on the lock")
        cancel = _in_thread(run.cancel, out, "cancel")
        wait_until(lambda: holder.waiters() >= 2, 60, "the cancel to wait on a lock")
    finally:
        holder.release()
    done.join(120)
    cancel.join(120)
    assert not done.is_alive() and not cancel.is_alive()
    assert out["finish"] is None, out["finish"]  # the completion went through
    assert not isinstance(out["cancel"], BaseException), repr(out["cancel"])
    return out["cancel"]


def _check_settled(q: pgq_nb.Queue, run: pgq_nb.workflow_run.WorkflowRun) -> None:
    assert run.wait(timeout=60, progress=False) == "cancelled"
    counts = run.counts()
    assert counts["queued"] == counts["blocked"] == counts["picked"] == 0, counts
    # the source succeeded (it finished anyway); its 3 steps and the fan-in were cancelled
    assert (counts["succeeded"], counts["cancelled"]) == (1, 4), counts
    (row,) = _side_sql(q, "SELECT status, finished, steps FROM {schema}.workflows")
    assert row["status"] == "cancelled" and row["finished"] is not None and row["steps"] == 5
    q.run_until_idle()  # nothing left to run
    assert run.counts()["succeeded"] == 1


def test_a_cancel_while_the_expansion_waits_for_the_run_row(q: pgq_nb.Queue) -> None:
    """The completion has made the steps and waits for the run row (held aside); the cancel
    comes then: it must see them (or the expansion must see the cancel)."""
    run = _submit(q)
    holder = _Holder(q, "SELECT 1 FROM {schema}.workflows WHERE id = $1 FOR NO KEY UPDATE", run.id)
    _race(q, run, holder)
    _check_settled(q, run)


def test_a_cancel_while_the_completion_waits_for_its_source_row(q: pgq_nb.Queue) -> None:
    """The completion waits for the source's row (held aside), the cancel comes and waits too:
    taking the fan-in's row first, it deadlocked with the completion (which deletes the source,
    then counts the fan-in up)."""
    run = _submit(q)
    before = _deadlocks(q)
    holder = _Holder(q, "SELECT 1 FROM {schema}.jobs WHERE id = 1 FOR UPDATE")
    _race(q, run, holder)
    _check_settled(q, run)
    assert _deadlocks(q) == before  # not one, even retried inside


def test_cancelling_a_run_that_is_over_changes_nothing(q: pgq_nb.Queue) -> None:
    """A cancel that comes after the last step (as a cancel racing a fast run can): the run
    stays as it ended (it was marked cancelled and unfinished, for ever)."""
    q.entrypoint("extract")(lambda job: [1])
    q.entrypoint("transform")(lambda job: 1)
    wf = q.workflow("over")
    wf.map_over(wf.step("extract"), "transform")
    run = wf.submit()
    q.run_until_idle()
    assert run.wait(timeout=30, progress=False) == "succeeded"
    assert run.cancel() == 0
    (row,) = _side_sql(q, "SELECT status, finished FROM {schema}.workflows")
    assert row["status"] == "succeeded" and row["finished"] is not None
