"""Retention policies (issue #20, item 1): stored in Postgres, applied by running workers in
small batches that never block claims, counters kept equal to a full count, jobs of running
workflow runs kept, keep_last; q.storage(); `pgq-nb purge`; bad input writes nothing."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

import pgq_nb
from pgq_nb import retention, runtime, storage
from pgq_nb.notebook.columns import STATUS_DTYPE
from pgq_nb.retention import parse_period
from tests.conftest import REPO, SCHEMA, wait_until


def _sql(q: pgq_nb.Queue, query: str, *args: Any) -> Any:
    async def run() -> Any:
        return await q.aio.pool.fetchval(query.replace("{schema}", SCHEMA), *args)

    return runtime.run_sync(run())


def _mismatched_counters(q: pgq_nb.Queue) -> int:
    """(entrypoint, status) pairs whose counters differ from a full count of history."""
    n: int = _sql(
        q,
        "SELECT count(*) FROM (SELECT entrypoint, status, sum(n) AS n "
        "FROM {schema}.finished_counts GROUP BY 1, 2) AS c "
        "FULL JOIN (SELECT entrypoint, status, count(*) AS n FROM {schema}.history "
        "GROUP BY 1, 2) AS h USING (entrypoint, status) "
        "WHERE coalesce(c.n, 0) <> coalesce(h.n, 0)",
    )
    return n


def _age(q: pgq_nb.Queue, ids: list[int], days: float) -> None:
    """Make finished jobs look ``days`` old."""
    _sql(
        q,
        "UPDATE {schema}.history SET finished = now() - make_interval(secs => $2) "
        "WHERE id = ANY($1::bigint[])",
        ids,
        days * 86400,
    )


def _left(q: pgq_nb.Queue, ids: list[int]) -> set[int]:
    rows = runtime.run_sync(
        q.aio.pool.fetch(f"SELECT id FROM {SCHEMA}.history WHERE id = ANY($1::bigint[])", ids)
    )
    return {r["id"] for r in rows}


def _apply(q: pgq_nb.Queue) -> int | None:
    return runtime.run_sync(retention.apply_once(q.aio.store, pause=0.0))


@pytest.fixture
def rq(q: pgq_nb.Queue) -> Iterator[pgq_nb.Queue]:
    """The queue, with no retention policy before and after (the shared schema is reused)."""
    _sql(q, "DELETE FROM {schema}.retention_policies")
    yield q
    _sql(q, "DELETE FROM {schema}.retention_policies")


# -- pure decisions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 30 * 86400),
        ("12h", 12 * 3600),
        ("90min", 5400),
        ("45s", 45),
        ("2w", 14 * 86400),
        ("1d12h", 36 * 3600),
        (" 2 weeks ", 14 * 86400),
        ("1.5h", 5400),
        ("0s", 0),
    ],
)
def test_periods_parse(text: str, seconds: float) -> None:
    assert parse_period("succeeded", text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("soon", "is not a duration"),
        ("30", "is not a duration"),
        ("30 parsecs", "is not a duration"),
        ("", "is not a duration"),
        ("-1d", "is not a duration"),
        (dt.timedelta(days=-1), "is negative"),
        (30, "must be a duration"),
        (dt.timedelta(days=400_000), "1,000 years"),
        ("400000d", "1,000 years"),
        ("99999999999d", "1,000 years"),  # beyond timedelta: OverflowError before
        ("1" + "0" * 400 + "d", "1,000 years"),  # a float infinity: OverflowError before
    ],
)
def test_bad_periods_are_refused(value: object, message: str) -> None:
    with pytest.raises(pgq_nb.InvalidInputError, match=message):
        parse_period("failed", value)


def test_period_none_keeps_for_ever() -> None:
    assert parse_period("failed", None) is None


@pytest.mark.parametrize(
    ("rows", "sample", "shares"),
    [
        # widths from the sample: 3 rows of 100 bytes against 1 of 300 bytes share evenly
        (
            {("a", "succeeded"): 3, ("b", "failed"): 1},
            [
                {"entrypoint": "a", "status": "succeeded", "rows": 3, "bytes": 300},
                {"entrypoint": "b", "status": "failed", "rows": 1, "bytes": 300},
            ],
            {("a", "succeeded"): 500, ("b", "failed"): 500},
        ),
        # a group the sample missed gets the whole sample's width
        (
            {("a", "succeeded"): 1, ("b", "failed"): 1},
            [{"entrypoint": "a", "status": "succeeded", "rows": 1, "bytes": 100}],
            {("a", "succeeded"): 500, ("b", "failed"): 500},
        ),
        # no sample: by rows alone
        ({("a", None): 1, ("b", None): 3}, [], {("a", None): 250, ("b", None): 750}),
        ({}, [], {}),
    ],
)
def test_storage_shares_a_tables_bytes_by_rows_times_width(
    rows: dict[Any, int], sample: list[dict[str, Any]], shares: dict[Any, int]
) -> None:
    assert storage.share_bytes(1000, rows, sample) == shares


def test_an_entrypoints_own_policy_wins_over_the_default() -> None:
    default = retention.Policy(None, dt.timedelta(days=1), None, None, None)
    own = retention.Policy("a", None, dt.timedelta(days=2), None, 5)
    assert retention.pick([default, own], "a") is own
    assert retention.pick([default, own], "b") is default
    assert retention.pick([own], "b") is None
    assert own.period("upstream_failed") == dt.timedelta(days=2)
    assert own.period("succeeded") is None


# -- policies --------------------------------------------------------------------------------


def test_policies_are_stored_shown_and_removed(rq: pgq_nb.Queue) -> None:
    assert rq.retention_list() == []
    empty = rq.retention()
    assert len(empty) == 0
    assert {c: str(t) for c, t in empty.dtypes.items()} == {
        "entrypoint": "str",
        "succeeded_s": "float64",
        "failed_s": "float64",
        "cancelled_s": "float64",
        "keep_last": "Int64",
    }
    rq.retention(failed=None)  # the default policy; the periods left out take the defaults
    rq.retention("score", succeeded="1d", keep_last=100)
    assert rq.retention_list() == [
        {
            "entrypoint": None,
            "succeeded": dt.timedelta(days=30),
            "failed": None,
            "cancelled": dt.timedelta(days=7),
            "keep_last": None,
        },
        {
            "entrypoint": "score",
            "succeeded": dt.timedelta(days=1),
            "failed": dt.timedelta(days=90),
            "cancelled": dt.timedelta(days=7),
            "keep_last": 100,
        },
    ]
    shown = rq.retention()
    assert list(shown["succeeded_s"]) == [30 * 86400.0, 86400.0]
    assert shown["failed_s"].isna().tolist() == [True, False]
    assert shown["entrypoint"].isna().tolist() == [True, False]
    rq.retention("score", remove=True)
    assert [p["entrypoint"] for p in rq.retention_list()] == [None]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"succeeded": "a month"}, "succeeded='a month' is not a duration"),
        ({"failed": "-3d"}, "is not a duration"),
        ({"cancelled": dt.timedelta(hours=-1)}, "is negative"),
        ({"keep_last": 0}, "keep_last must be a positive int"),
        ({"keep_last": -5}, "keep_last must be a positive int"),
        ({"keep_last": "10"}, "keep_last must be a positive int"),
        ({"keep_last": True}, "keep_last must be a positive int"),
        ({"keep_last": 2.5}, "keep_last must be a positive int"),
        ({"entrypoint": 3, "succeeded": "1d"}, "entrypoint must be a str"),
        ({"entrypoint": "", "succeeded": "1d"}, "entrypoint must name an entrypoint"),
        ({"entrypoint": "x", "succeeded": "1d", "remove": True}, "remove=True takes only"),
    ],
)
def test_bad_input_is_refused_and_writes_nothing(
    rq: pgq_nb.Queue, kwargs: dict[str, Any], message: str
) -> None:
    rq.retention("kept", succeeded="2d")
    with pytest.raises(pgq_nb.InvalidInputError, match=message):
        rq.retention(**kwargs)
    assert rq.retention_list() == [
        {
            "entrypoint": "kept",
            "succeeded": dt.timedelta(days=2),
            "failed": dt.timedelta(days=90),
            "cancelled": dt.timedelta(days=7),
            "keep_last": None,
        }
    ]


# -- applying them ---------------------------------------------------------------------------


def test_a_running_worker_applies_the_policies(
    rq: pgq_nb.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(retention.INTERVAL_ENV, "0.2")
    rq.entrypoint("ok")(lambda job: {"n": job.data})
    rq.entrypoint("bad", retry=pgq_nb.RetryPolicy(max_attempts=1))(lambda job: 1 / 0)
    rq.entrypoint("own")(lambda job: None)
    old_ok, new_ok = rq.enqueue(["ok"] * 6), rq.enqueue(["ok"] * 2)
    old_bad = rq.enqueue(["bad"] * 3)
    old_own = rq.enqueue(["own"] * 4)
    rq.run_until_idle()
    _age(rq, old_ok, 3)
    _age(rq, old_bad, 3)  # failed: kept 5 days
    _age(rq, old_own, 3)  # its own policy keeps them 10 days
    rq.retention(succeeded="2d", failed="5d")
    rq.retention("own", succeeded="10d")
    worker = rq.start_worker()
    try:
        wait_until(lambda: not _left(rq, old_ok), 30, "the worker to purge old jobs")
    finally:
        worker.stop()
    assert _left(rq, new_ok) == set(new_ok)
    assert _left(rq, old_bad) == set(old_bad)
    assert _left(rq, old_own) == set(old_own)
    assert _mismatched_counters(rq) == 0
    assert rq.stats().loc["ok", "succeeded"] == 2


def test_keep_last_keeps_the_newest_whatever_their_age(rq: pgq_nb.Queue) -> None:
    rq.entrypoint("ok")(lambda job: None)
    ids = rq.enqueue(["ok"] * 10)
    rq.run_until_idle()
    for i, job_id in enumerate(ids):  # the last one the newest
        _age(rq, [job_id], 10 - i * 0.1)
    rq.retention("ok", succeeded="1d", keep_last=3)
    assert _apply(rq) == 7
    assert _left(rq, ids) == set(ids[-3:])
    assert _apply(rq) == 0
    assert _mismatched_counters(rq) == 0


def test_jobs_of_a_running_workflow_run_are_kept(rq: pgq_nb.Queue) -> None:
    rq.entrypoint("extract")(lambda job: {"rows": 3})
    rq.entrypoint("load")(lambda job: None)
    wf = rq.workflow("etl")
    wf.step("load", depends_on=wf.step("extract"))
    run = wf.submit()
    alone = rq.enqueue(["extract"] * 2)
    rq.run_until_idle(entrypoints=["extract"])  # load waits: the run is still running
    assert run.state() == "running"
    step_ids = [i for i in _all_history_ids(rq) if i not in alone]
    _age(rq, [*step_ids, *alone], 5)
    rq.retention(succeeded="1d")
    assert _apply(rq) == 2
    assert _left(rq, step_ids) == set(step_ids) and not _left(rq, alone)
    assert run.results() == {"extract": {"rows": 3}}  # still there for the step that waits
    rq.run_until_idle()
    assert run.state() == "succeeded"
    _age(rq, _all_history_ids(rq), 5)
    assert _apply(rq) == 2  # finished: now it goes
    assert _mismatched_counters(rq) == 0


def _all_history_ids(q: pgq_nb.Queue) -> list[int]:
    rows = runtime.run_sync(q.aio.pool.fetch(f"SELECT id FROM {SCHEMA}.history ORDER BY id"))
    return [r["id"] for r in rows]


def test_a_claim_is_never_blocked_by_a_purge(rq: pgq_nb.Queue, installed: str) -> None:
    """A purge transaction left open (its rows deleted, its counter row and the advisory lock
    held) while a worker claims, runs and finishes jobs of the same entrypoint: claims lock
    rows of `jobs` (SKIP LOCKED), the purge deletes rows of `history` and counts in a shard of
    its own, so neither waits. A second purge meanwhile skips its turn."""
    rq.entrypoint("ok")(lambda job: None)
    old = rq.enqueue(["ok"] * 5)
    rq.run_until_idle()
    _age(rq, old, 5)
    rq.retention(succeeded="1d")
    queries = rq.aio.store.queries
    key = retention.lock_key(SCHEMA)

    async def open_purge() -> tuple[asyncpg.Connection, Any]:
        conn = await asyncpg.connect(installed)
        tx = conn.transaction()
        await tx.start()
        assert await conn.fetchval(queries["retention_try_lock"], key)
        deleted = await conn.fetchval(
            queries["retention_purge"], "ok", "succeeded", dt.timedelta(days=1), None, 1000
        )
        assert deleted == 5
        return conn, tx

    conn, tx = runtime.run_sync(open_purge())
    try:
        new = rq.enqueue(["ok"] * 20)
        stats = rq.run_until_idle(timeout=60)  # claims, runs and finishes meanwhile
        assert stats.succeeded == 20
        assert {s for s in rq.statuses(new).values()} == {"succeeded"}
        assert _apply(rq) is None  # another worker's turn is under way: this one skips
    finally:
        runtime.run_sync(tx.commit())
        runtime.run_sync(conn.close())
    assert not _left(rq, old) and _left(rq, new) == set(new)
    assert _mismatched_counters(rq) == 0


def test_storage_shows_rows_and_bytes(rq: pgq_nb.Queue) -> None:
    rq.entrypoint("ok")(lambda job: {"big": "x" * 500})
    rq.entrypoint("waits")(lambda job: None)
    rq.enqueue(["ok"] * 30)
    rq.enqueue("waits", {"a": 1})
    rq.run_until_idle(entrypoints=["ok"])
    storage = rq.storage()
    assert {c: str(t) for c, t in storage.dtypes.items()} == {
        "table": "str",
        "entrypoint": "str",
        "status": "category",
        "rows": "int64",
        "bytes": "int64",
    }
    assert storage["status"].dtype == STATUS_DTYPE
    rows = {(r.table, r.entrypoint, r.status): r.rows for r in storage.itertuples()}
    assert rows == {("history", "ok", "succeeded"): 30, ("jobs", "waits", "queued"): 1}
    assert (storage["bytes"] > 0).all()


def test_storage_is_empty_on_an_empty_queue(rq: pgq_nb.Queue) -> None:
    assert len(rq.storage()) == 0


def test_purge_cli_purges_once(rq: pgq_nb.Queue, installed: str) -> None:
    rq.entrypoint("ok")(lambda job: None)
    old, new = rq.enqueue(["ok"] * 4), rq.enqueue(["ok"] * 2)
    rq.run_until_idle()
    _age(rq, old, 3)
    env = {**os.environ, "PGQ_NB_DSN": installed, "PGQ_NB_SCHEMA": SCHEMA}
    cli = [sys.executable, "-m", "pgq_nb.cli", "purge"]
    done = subprocess.run(
        [*cli, "--older-than", "2d"], env=env, cwd=str(REPO), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "4" in done.stdout
    assert not _left(rq, old) and _left(rq, new) == set(new)
    bad = subprocess.run(
        [*cli, "--older-than", "soon"], env=env, cwd=str(REPO), capture_output=True, text=True
    )
    assert bad.returncode != 0 and "is not a duration" in bad.stderr
    huge = subprocess.run(
        [*cli, "--older-than", "99999999999d"],
        env=env,
        cwd=str(REPO),
        capture_output=True,
        text=True,
    )
    assert huge.returncode != 0 and "1,000 years" in huge.stderr
    assert "Traceback" not in huge.stderr
    assert _mismatched_counters(rq) == 0


# -- the soak (slow) -------------------------------------------------------------------------


@pytest.mark.slow
def test_soak_retention_while_200k_jobs_finish(
    rq: pgq_nb.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200,000 jobs finish while retention purges (every 0.5 s, everything finished): claims
    keep flowing (the claim statement's p99 from another connection, before and during the
    purging, is printed; `python -m benchmarks --only retention` reports it), history ends
    empty, and the counters equal a full count afterwards."""
    total = int(os.environ.get("PGQ_NB_SOAK_JOBS", "200000"))
    monkeypatch.setenv(retention.INTERVAL_ENV, "0.5")
    rq.entrypoint("noop")(lambda job: None)
    _sql(
        rq,
        "INSERT INTO {schema}.jobs (entrypoint, payload) "
        "SELECT 'noop', NULL FROM generate_series(1, $1)",
        total,
    )
    _sql(rq, "ANALYZE {schema}.jobs")
    worker = rq.start_worker(concurrency=32)
    try:
        before = runtime.run_sync(_claim_times(rq, until_left=total * 3 // 4))
        rq.retention(succeeded="0s")
        during = runtime.run_sync(_claim_times(rq, until_left=1))
        wait_until(
            lambda: _sql(rq, "SELECT count(*) FROM {schema}.history") == 0,
            120,
            "retention to purge the last finished jobs",
        )
    finally:
        worker.stop()
    p99 = [statistics.quantiles(t, n=100)[98] for t in (before, during)]
    print(f"\nclaim p99: {p99[0]:.2f} ms before, {p99[1]:.2f} ms during retention")
    assert _mismatched_counters(rq) == 0
    assert all(n == 0 for _, _, n in rq.counts())


async def _claim_times(q: pgq_nb.Queue, until_left: int) -> list[float]:
    """The claim statement's time (ms, one job, rolled back) every 10 ms until fewer than
    ``until_left`` jobs wait."""
    claim, times = q.aio.queries["claim_jobs"], []
    async with q.aio.pool.acquire() as conn:
        while True:
            tr = conn.transaction()
            await tr.start()
            try:
                began = time.perf_counter()
                await conn.fetch(claim, ["noop"], 1, 1)
                times.append((time.perf_counter() - began) * 1000)
            finally:
                await tr.rollback()
            left = await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.jobs")
            if left < until_left and len(times) >= 2:
                return times
            await asyncio.sleep(0.01)
