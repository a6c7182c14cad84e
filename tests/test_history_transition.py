"""The move of jobs into history (and back) is written once.

A scratch migration adds a column to `history` (and one to `jobs` for it to carry), changing
only the two functions of the schema that move jobs between the tables (`move_to_history` and
`move_to_jobs`, the one place each column list is written). Every path must then fill it:
success, failure, retry then failure, cancelling a waiting and a running job, reclaiming a dead
worker's jobs, a failed step's descendants (upstream_failed), requeue_failed and a workflow's
retry (back into jobs and finished again), and purge_history. The new history column is NOT
NULL without a default, so a path that wrote its own column list would fail outright. After
each path the counters (`finished_counts`) must match history.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pgq_nb
from pgq_nb import runtime, sql

SCRATCH = "pgq_nb_hist_scratch"
SQL_DIR = Path(sql.__file__).parent


def _cut_function(schema_text: str, name: str) -> str:
    """The CREATE FUNCTION statement of ``name`` in the rendered schema, as CREATE OR REPLACE."""
    pattern = rf'CREATE FUNCTION "{SCRATCH}"\.{name}\(.*?\$\$.*?\$\$;'
    found = [m.group(0) for m in re.finditer(pattern, schema_text, re.DOTALL)]
    assert len(found) == 1, f"schema.sql should create {name} once"
    return found[0].replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def _add_column(function: str, table: str, value: str) -> str:
    """``function`` with ``lineage`` added to its one INSERT INTO ``table`` (the column list,
    and the first item of the SELECT that feeds it)."""
    insert = f'INSERT INTO "{SCRATCH}".{table} ('
    assert function.count(insert) == 1, f"one INSERT INTO {table} expected"
    head, tail = function.split(insert)
    select = tail.index("SELECT ")
    tail = tail[:select] + f"SELECT {value}, " + tail[select + len("SELECT ") :]
    return head + insert + "lineage, " + tail


def scratch_migration() -> str:
    """A migration as a later pgq_nb version would write one to add a history column: the
    tables, and the one function per direction that lists their columns."""
    schema = sql.schema_sql(SCRATCH)
    to_history = _add_column(
        _cut_function(schema, "move_to_history"), "history", "lineage || '>' || outcome"
    )
    to_jobs = _add_column(_cut_function(schema, "move_to_jobs"), "jobs", "lineage || '>requeued'")
    return f"""
        ALTER TABLE "{SCRATCH}".jobs ADD COLUMN lineage text NOT NULL DEFAULT 'new';
        ALTER TABLE "{SCRATCH}".history ADD COLUMN lineage text NOT NULL;
        {to_history}
        {to_jobs}
    """


def _connect(dsn: str) -> pgq_nb.Queue:
    return pgq_nb.connect(
        dsn, schema=SCRATCH, heartbeat_interval=0.5, heartbeat_timeout=3.0, poll_interval=0.2
    )


@pytest.fixture
def hq(installed: str) -> Iterator[pgq_nb.Queue]:
    """A queue on a schema of its own, with the scratch migration applied."""
    _connect(installed).uninstall()  # what a failed earlier run may have left
    queue = _connect(installed)
    _execute(queue, scratch_migration())
    yield queue
    queue.uninstall()


def _execute(q: pgq_nb.Queue, statement: str, *args: Any) -> None:
    runtime.run_sync(q.aio.pool.execute(statement, *args))


def _fetch(q: pgq_nb.Queue, query: str, *args: Any) -> list[Any]:
    return list(runtime.run_sync(q.aio.pool.fetch(query, *args)))


def _lineage(q: pgq_nb.Queue) -> dict[int, tuple[str, str]]:
    """Each finished job's (status, lineage)."""
    rows = _fetch(q, f'SELECT id, status, lineage FROM "{SCRATCH}".history')
    return {r["id"]: (r["status"], r["lineage"]) for r in rows}


def _check_counts(q: pgq_nb.Queue) -> None:
    """The counters say exactly what history holds (shards summed, zeros left out)."""
    counted = _fetch(
        q,
        f"""SELECT entrypoint, status, sum(n)::bigint AS n FROM "{SCRATCH}".finished_counts
            GROUP BY entrypoint, status HAVING sum(n) <> 0 ORDER BY 1, 2""",
    )
    actual = _fetch(
        q,
        f"""SELECT entrypoint, status, count(*) AS n FROM "{SCRATCH}".history
            GROUP BY entrypoint, status ORDER BY 1, 2""",
    )
    assert [tuple(r) for r in counted] == [tuple(r) for r in actual]


def test_the_moves_are_written_in_one_place() -> None:
    """No named query and no other part of the schema writes history rows, takes jobs out of
    `jobs` or keeps the counters by itself: move_to_history, move_to_jobs and count_finished
    do (purge_history deletes history rows, and counts them off with count_finished)."""
    files = [SQL_DIR / "schema.sql", *sorted(SQL_DIR.glob("queries/*.sql"))]
    everything = "\n".join(p.read_text() for p in files)
    assert everything.count("INSERT INTO {schema}.history") == 1  # move_to_history
    assert everything.count("INSERT INTO {schema}.finished_counts") == 1  # count_finished
    assert everything.count("DELETE FROM {schema}.jobs") == 1  # move_to_history
    for name in ("move_to_history", "move_to_jobs", "count_finished"):
        assert ("routine", name) in sql.owned_objects()


def test_every_path_into_and_out_of_history_fills_the_new_column(hq: pgq_nb.Queue) -> None:
    q = hq
    q.entrypoint("ok")(lambda job: {"echo": job.data})
    q.entrypoint("bad", retry=pgq_nb.RetryPolicy.none())(lambda job: 1 / 0)
    flaky_policy = pgq_nb.RetryPolicy(max_attempts=2, base_delay=0.01, jitter=0.0)
    missing: dict[str, int] = {}
    q.entrypoint("flaky", retry=flaky_policy)(lambda job: missing["key"])
    started = threading.Event()

    @q.entrypoint("long")
    async def long(job: pgq_nb.Job) -> None:
        started.set()
        await asyncio.sleep(60)

    # succeed, fail, retry then fail (finish_jobs)
    succeeded = q.enqueue("ok", 1)
    failed = q.enqueue("bad")
    flaky = q.enqueue("flaky")
    q.run_until_idle(timeout=30)
    seen = _lineage(q)
    assert seen[succeeded] == ("succeeded", "new>succeeded")
    assert seen[failed] == ("failed", "new>failed")
    assert seen[flaky] == ("failed", "new>failed")
    info = q.get_job(flaky)
    assert info.attempts == 2
    assert [e["attempt"] for e in info.errors or []] == [1, 2]
    assert q.get_job(succeeded).result == {"echo": 1}
    # a worker's completions count in its own shard
    shards = _fetch(
        q,
        f"""SELECT DISTINCT h.worker_id % 16 = c.shard AS same FROM "{SCRATCH}".history AS h
            JOIN "{SCRATCH}".finished_counts AS c
              ON c.entrypoint = h.entrypoint AND c.status = h.status""",
    )
    assert [r["same"] for r in shards] == [True]
    _check_counts(q)

    # cancel a waiting job (cancel_waiting) and a running one (finish_jobs)
    waiting = q.enqueue("ok", execute_after=dt.timedelta(hours=1))
    running = q.enqueue("long")
    handle = q.start_worker(entrypoints=["long"])
    try:
        assert started.wait(10)
        assert q.cancel([waiting, running]) == {waiting: "cancelled", running: "cancelling"}
        assert q.wait([running], timeout=10) == {running: "cancelled"}
    finally:
        handle.stop(timeout=30)
    seen = _lineage(q)
    assert seen[waiting] == ("cancelled", "new>cancelled")
    assert seen[running] == ("cancelled", "new>cancelled")
    _check_counts(q)

    # a dead worker's jobs (reclaim_stale): one out of attempts fails, one asked to cancel is
    # cancelled, one it never started goes back and runs
    exhausted, cancelling, unstarted = q.enqueue(["ok", "ok", "ok"], [2, 3, 4])
    dead = _fetch(
        q,
        f"""INSERT INTO "{SCRATCH}".workers (host, pid, concurrency, heartbeat)
            VALUES ('gone', 1, 1, now() - interval '1 hour') RETURNING id""",
    )[0]["id"]
    _execute(
        q,
        f"""UPDATE "{SCRATCH}".jobs SET status = 'picked', worker_id = $1,
                started = CASE WHEN id = $4 THEN NULL ELSE now() END,
                attempts = CASE WHEN id = $4 THEN 0 ELSE 3 END,
                cancel_requested = (id = $3)
            WHERE id = ANY(ARRAY[$2, $3, $4]::bigint[])""",
        dead,
        exhausted,
        cancelling,
        unstarted,
    )
    q.run_until_idle(timeout=30)
    seen = _lineage(q)
    assert seen[exhausted] == ("failed", "new>failed")
    assert seen[cancelling] == ("cancelled", "new>cancelled")
    assert seen[unstarted] == ("succeeded", "new>succeeded")
    assert "stopped sending heartbeats" in (q.get_job(exhausted).errors or [{}])[-1]["error"]
    _check_counts(q)

    # a failed workflow step: what depends on it is upstream_failed (fail_descendants)
    wf = q.workflow("lineage")
    root = wf.step("bad", name="root")
    wf.step("ok", name="child", depends_on=root)
    run = wf.submit()
    q.run_until_idle(timeout=30)
    assert run.wait(timeout=10, progress=False) == "failed"
    steps = _fetch(
        q, f'SELECT id, step_name FROM "{SCRATCH}".history WHERE workflow_id = $1', run.id
    )
    step_ids = {r["step_name"]: r["id"] for r in steps}
    seen = _lineage(q)
    assert seen[step_ids["root"]] == ("failed", "new>failed")
    assert seen[step_ids["child"]] == ("upstream_failed", "new>upstream_failed")
    _check_counts(q)

    # back into jobs and finished again: requeue_failed, and a workflow's retry
    q.entrypoint("bad")(lambda job: "fixed")
    assert q.requeue_failed(failed) == 1
    carried = _fetch(q, f'SELECT lineage FROM "{SCRATCH}".jobs WHERE id = $1', failed)
    assert [r["lineage"] for r in carried] == ["new>failed>requeued"]
    _check_counts(q)
    assert run.retry() == 2
    _check_counts(q)
    q.run_until_idle(timeout=30)
    assert run.wait(timeout=10, progress=False) == "succeeded"
    seen = _lineage(q)
    assert seen[failed] == ("succeeded", "new>failed>requeued>succeeded")
    assert seen[step_ids["root"]] == ("succeeded", "new>failed>requeued>succeeded")
    assert seen[step_ids["child"]] == ("succeeded", "new>upstream_failed>requeued>succeeded")
    _check_counts(q)

    # retention (purge_history): history and its counters empty together
    assert q.purge_history(dt.timedelta(0)) == len(seen)
    assert _lineage(q) == {}
    _check_counts(q)
    sums = _fetch(
        q,
        f"""SELECT DISTINCT sum(n) AS n FROM "{SCRATCH}".finished_counts
            GROUP BY entrypoint, status""",
    )
    assert [r["n"] for r in sums] == [0]  # (shard by shard they need not be)
