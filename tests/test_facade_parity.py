"""The sync facade is complete, and the async API works from any event loop.

In the spirit of httpx's tests/test_exported_members.py: the lists below are checked against
what the classes have, so a new public coroutine of AsyncQueue, AsyncWorkflowRun or
AsyncTransaction fails here until it has

- a sync twin of the same name on Queue, WorkflowRun or Transaction, built by
  ``runtime.blocking`` from the coroutine itself, with the same parameters. The one documented
  difference: a coroutine returning an async object (``AsyncX``) has a twin returning its
  facade (``X``);
- a row in a table of arguments below, with which it is actually awaited from a fresh
  ``asyncio.run`` loop in the test thread (like a Jupyter cell's), against the real Postgres;
- if it takes ``connection=``, a row in CONNECTION_CALLS: it is awaited with the caller's own
  asyncpg connection, opened on that loop, inside the caller's transaction, which must then
  commit or roll back normally.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import inspect
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pandas as pd
import pytest

import pgq_nb
from pgq_nb import runtime
from pgq_nb.queue import AsyncQueue
from pgq_nb.transaction import AsyncTransaction, Transaction
from pgq_nb.workflow_run import AsyncWorkflowRun, WorkflowRun
from tests.conftest import SCHEMA

APP = f"{SCHEMA}_parity"  # the caller's own schema and table, outside pgq_nb's schema
TABLE = f"{APP}.orders"
SCRATCH = f"{SCHEMA}_scratch"  # install, upgrade and uninstall run on a queue of their own

PAIRS: list[tuple[type, type]] = [
    (AsyncQueue, pgq_nb.Queue),
    (AsyncWorkflowRun, WorkflowRun),
    (AsyncTransaction, Transaction),
]

#: What every sync twin is: the function runtime.blocking returns (all share its code).
BLOCKING_CODE = runtime.blocking(AsyncQueue.counts).__code__


def public_coroutines(cls: type) -> list[str]:
    """Names of the public coroutine functions of ``cls``, its mixins' included."""
    return sorted(
        name
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and inspect.iscoroutinefunction(member)
    )


def sync_return(annotation: Any) -> Any:
    """The return annotation a sync twin has: ``AsyncX`` becomes ``X``, the rest is kept."""
    if isinstance(annotation, str) and annotation.startswith("Async"):
        return annotation.removeprefix("Async")
    return annotation


# -- the tables of arguments ------------------------------------------------------------------

Args = tuple[tuple[Any, ...], dict[str, Any]]


def a(*args: Any, **kwargs: Any) -> Args:
    return args, kwargs


@dataclasses.dataclass
class Ctx:
    """What the argument tables draw on; ``done`` holds the results of the queue's calls."""

    aq: AsyncQueue
    scratch: AsyncQueue
    dsn: str
    frame: pd.DataFrame
    boom_id: int
    run_id: int
    done: dict[str, Any] = dataclasses.field(default_factory=dict)
    notebook: str = ""  # a notebook file, for enqueue_notebook


Table = dict[str, Callable[[Ctx], Args]]

#: The range the parity table backfills: two ticks of a yearly schedule.
YEARS = (dt.datetime(2024, 1, 1, tzinfo=dt.UTC), dt.datetime(2025, 6, 1, tzinfo=dt.UTC))

#: Every public coroutine of AsyncQueue, in the order they are awaited.
QUEUE_CALLS: Table = {
    "install": lambda c: a(),
    "upgrade": lambda c: a(),
    "enqueue": lambda c: a("noop", {"n": 1}, 5, dedupe_key="parity"),
    "enqueue_df": lambda c: a("noop", c.frame, priority="p"),
    "enqueue_notebook": lambda c: a(c.notebook, {"n": 1}, execute_after=dt.timedelta(days=1)),
    "notebook_output": lambda c: a(c.done["enqueue_notebook"]),
    "notebook_runs": lambda c: a("parity"),
    "analyze": lambda c: a(),
    "get_job": lambda c: a(c.done["enqueue"]),
    "statuses": lambda c: a([c.done["enqueue"], c.boom_id]),
    "counts": lambda c: a(),
    "jobs": lambda c: a(entrypoint="noop", payloads=True),
    "pause": lambda c: a("noop"),
    "flow": lambda c: a(),
    "limits": lambda c: a(),
    "resume": lambda c: a("noop"),
    "schedule_list": lambda c: a(),
    "schedules": lambda c: a(),
    "pause_schedule": lambda c: a("tick"),
    "resume_schedule": lambda c: a("tick"),
    "run_schedule_now": lambda c: a("tick"),
    "add_schedule": lambda c: a("yearly", "0 0 1 1 *", entrypoint="noop", payload={"n": 1}),
    "update_schedule": lambda c: a("yearly", payload={"n": "yearly"}),
    "schedule_preview": lambda c: a("yearly", days=366),
    "backfill": lambda c: a("yearly", YEARS[0], YEARS[1], progress=False),
    "remove_schedule": lambda c: a("yearly"),
    "run_until_idle": lambda c: a(concurrency=4, timeout=60),
    "wait": lambda c: a([c.done["enqueue"], *c.done["enqueue_df"]], timeout=30),
    "worker_list": lambda c: a(),
    "workers": lambda c: a(),
    "stats": lambda c: a(dt.timedelta(hours=1)),
    "history": lambda c: a(since="1h", entrypoint="noop"),
    "results": lambda c: a("noop", expand=False),
    "failed": lambda c: a("boom"),
    "failed_jobs": lambda c: a("boom", limit=10),
    "requeue_failed": lambda c: a([c.boom_id]),
    "cancel": lambda c: a(c.boom_id),
    "purge_history": lambda c: a(dt.timedelta(days=1)),
    "retention": lambda c: a("parity_none", succeeded="30d", keep_last=5),
    "retention_list": lambda c: a(),
    "storage": lambda c: a(),
    "workflows": lambda c: a(limit=5, name="parity"),
    "workflow_run": lambda c: a(c.run_id),
    "run_worker": lambda c: a(concurrency=2),  # runs until cancelled: see _await_table
    "uninstall": lambda c: a(),
}
ON_SCRATCH = frozenset({"install", "upgrade", "uninstall"})

#: Every public coroutine of AsyncWorkflowRun, awaited on ``await q.aio.workflow_run(id)``.
WORKFLOW_RUN_CALLS: Table = {
    "state": lambda c: a(),
    "counts": lambda c: a(),
    "steps": lambda c: a(),
    "status": lambda c: a(),
    "timeline": lambda c: a(max_rows=10),
    "results": lambda c: a(),
    "wait": lambda c: a(timeout=30, progress=False),
    "retry": lambda c: a(),
    "cancel": lambda c: a(),
}

#: Every public coroutine of AsyncTransaction, awaited on one ``q.aio.transaction()``.
TRANSACTION_CALLS: Table = {
    "begin": lambda c: a(),
    "execute": lambda c: a(f"INSERT INTO {TABLE} VALUES ($1, $2)", 1, "execute"),
    "fetch": lambda c: a(f"SELECT * FROM {TABLE} ORDER BY id"),
    "fetchrow": lambda c: a(f"SELECT * FROM {TABLE} WHERE id = $1", 1),
    "fetchval": lambda c: a(f"SELECT count(*) FROM {TABLE}"),
    "copy_records_to_table": lambda c: a("orders", records=[(2, "copy")], schema_name=APP),
    "enqueue": lambda c: a("noop", {"n": "tx"}),
    "enqueue_df": lambda c: a("noop", c.frame, columns=["n"]),
    "end": lambda c: a(True),
}

#: Every public coroutine that takes ``connection=``, with its other arguments.
CONNECTION_CALLS: Table = {
    "enqueue": lambda c: a(["noop", "noop"], [{"n": "own"}, {"n": "own"}], [0, 1]),
    "enqueue_df": lambda c: a("noop", c.frame, dedupe_key="key"),
    "enqueue_notebook": lambda c: a(c.notebook, execute_after=dt.timedelta(days=1)),
}

TABLES: list[tuple[type, Table]] = [
    (AsyncQueue, QUEUE_CALLS),
    (AsyncWorkflowRun, WORKFLOW_RUN_CALLS),
    (AsyncTransaction, TRANSACTION_CALLS),
]


async def _await_table(
    target: Callable[[str], Any], table: Table, ctx: Ctx, done: dict[str, Any]
) -> dict[str, Any]:
    """Await every method of the table, in order, with its arguments, on ``target(name)``;
    put the results in ``done`` (the table's rows may use earlier ones) and return it."""
    assert asyncio.get_running_loop() is not runtime.loop()  # a foreign loop, as in Jupyter
    for name, args_of in table.items():
        args, kwargs = args_of(ctx)
        call = getattr(target(name), name)(*args, **kwargs)
        if name != "run_worker":
            done[name] = await call
            continue
        worker = asyncio.ensure_future(call)  # works until cancelled: prove it works, cancel
        job_id = await ctx.aq.enqueue("noop", {"n": "worker"})
        assert await ctx.aq.wait(job_id, timeout=30) == {job_id: "succeeded"}
        worker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await worker
        assert await ctx.aq.worker_list() == []  # the cancel waited for the worker to stop
        done[name] = None
    return done


def _job_ids(result: Any) -> list[int]:
    return [result] if isinstance(result, int) else [int(i) for i in result]


@pytest.fixture
def ctx(q: pgq_nb.Queue, installed: str, tmp_path: Path) -> Iterator[Ctx]:
    q.entrypoint("noop")(lambda job: job.data)
    q.serve_notebooks()
    notebook = tmp_path / "parity.ipynb"
    kernel = {"kernelspec": {"name": "python3", "language": "python"}}
    notebook.write_text(json.dumps({"cells": [], "metadata": kernel, "nbformat": 4}))

    @q.entrypoint("boom", retry=pgq_nb.RetryPolicy(max_attempts=1))
    def boom(job: pgq_nb.Job) -> None:
        raise RuntimeError("boom")

    q.schedule("tick", "0 0 1 1 *")(lambda schedule: None)
    boom_id = q.enqueue("boom")
    wf = q.workflow("parity")
    wf.step("noop", {"n": "wf"})
    run = wf.submit()
    scratch = pgq_nb.connect(installed, schema=SCRATCH)

    drop = f"DROP SCHEMA IF EXISTS {APP} CASCADE"
    create = f"{drop}; CREATE SCHEMA {APP}; CREATE TABLE {TABLE} (id int PRIMARY KEY, note text)"
    runtime.run_sync(q.aio.pool.execute(create))
    frame = pd.DataFrame({"n": [1, 2, 3], "p": [0, 1, 2], "key": ["k1", "k2", "k3"]})
    yield Ctx(q.aio, scratch.aio, installed, frame, boom_id, run.id, notebook=str(notebook))
    runtime.run_sync(q.aio.pool.execute(drop))
    scratch.uninstall()


def _count(q: pgq_nb.Queue, query: str) -> int:
    return int(runtime.run_sync(q.aio.pool.fetchval(query)))


# -- structure --------------------------------------------------------------------------------


@pytest.mark.parametrize(("async_cls", "sync_cls"), PAIRS, ids=lambda cls: cls.__name__)
def test_every_public_coroutine_has_a_sync_twin(async_cls: type, sync_cls: type) -> None:
    problems = []
    for name in public_coroutines(async_cls):
        coroutine = getattr(async_cls, name)
        twin = getattr(sync_cls, name, None)
        if twin is None:
            problems.append(f"{sync_cls.__name__}.{name} is missing")
            continue
        if getattr(twin, "__code__", None) is not BLOCKING_CODE:
            problems.append(f"{sync_cls.__name__}.{name} is not built by runtime.blocking")
        if getattr(twin, "__wrapped__", None) is not coroutine:
            problems.append(f"{sync_cls.__name__}.{name} does not wrap {async_cls.__name__}.{name}")
        expected = inspect.signature(coroutine)
        got = inspect.signature(twin)
        if list(got.parameters.values()) != list(expected.parameters.values()):
            problems.append(f"{sync_cls.__name__}.{name}{got} has other parameters than {expected}")
        if got.return_annotation != sync_return(expected.return_annotation):
            problems.append(
                f"{sync_cls.__name__}.{name} returns {got.return_annotation!r}, not "
                f"{sync_return(expected.return_annotation)!r}"
            )
        if twin.__doc__ != coroutine.__doc__:
            problems.append(f"{sync_cls.__name__}.{name} has a docstring of its own")
    assert problems == []


@pytest.mark.parametrize("name", ["entrypoint", "resource", "schedule"])
def test_decorators_are_forwarded_not_rewritten(name: str) -> None:
    original = getattr(AsyncQueue, name)
    twin = getattr(pgq_nb.Queue, name)
    assert twin.__wrapped__ is original
    assert inspect.signature(twin) == inspect.signature(original)
    assert twin.__doc__ == original.__doc__


def test_connect_is_the_blocking_form_of_aconnect() -> None:
    connect, aconnect = pgq_nb.connect, pgq_nb.aconnect
    assert inspect.iscoroutinefunction(aconnect)
    assert not inspect.iscoroutinefunction(connect)
    assert connect.__wrapped__ is aconnect  # type: ignore[attr-defined]
    assert connect.__name__ == "connect"
    assert connect.__doc__ == aconnect.__doc__
    sync, original = inspect.signature(connect), inspect.signature(aconnect)
    assert sync.parameters == original.parameters
    assert (original.return_annotation, sync.return_annotation) == ("AsyncQueue", "Queue")


@pytest.mark.parametrize(("cls", "table"), TABLES, ids=lambda x: getattr(x, "__name__", ""))
def test_every_public_coroutine_has_a_row_of_arguments(cls: type, table: Table) -> None:
    assert sorted(table) == public_coroutines(cls)


def test_every_connection_taking_coroutine_has_a_row_of_arguments() -> None:
    taking = {
        (cls.__name__, name)
        for cls, _ in PAIRS
        for name in public_coroutines(cls)
        if "connection" in inspect.signature(getattr(cls, name)).parameters
    }
    assert taking == {("AsyncQueue", name) for name in CONNECTION_CALLS}


# -- awaited from a foreign event loop ------------------------------------------------------


def test_every_coroutine_awaits_from_a_foreign_loop(ctx: Ctx, q: pgq_nb.Queue) -> None:
    assert sorted(QUEUE_CALLS) == public_coroutines(AsyncQueue)
    assert sorted(WORKFLOW_RUN_CALLS) == public_coroutines(AsyncWorkflowRun)

    async def in_kernel_loop() -> dict[str, Any]:
        done = await _await_table(
            lambda name: ctx.scratch if name in ON_SCRATCH else ctx.aq, QUEUE_CALLS, ctx, ctx.done
        )
        run = done["workflow_run"]
        return await _await_table(lambda name: run, WORKFLOW_RUN_CALLS, ctx, {})

    run_done = asyncio.run(in_kernel_loop())
    done = ctx.done
    job_id = done["enqueue"]
    assert done["install"] == done["upgrade"] >= 1
    assert done["get_job"].id == job_id
    assert done["wait"] == dict.fromkeys([job_id, *done["enqueue_df"]], "succeeded")
    assert done["run_until_idle"].succeeded >= 6  # noop x4, the workflow step, the tick
    assert done["statuses"] == dict.fromkeys([job_id, ctx.boom_id], pgq_nb.JobStatus.QUEUED)
    assert done["run_until_idle"].failed == 1  # boom
    assert done["failed_jobs"][0].id == ctx.boom_id
    assert done["requeue_failed"] == 1
    assert done["cancel"] == {ctx.boom_id: "cancelled"}
    assert len(done["enqueue_df"]) == len(ctx.frame)
    assert isinstance(done["run_schedule_now"], int)
    assert len(done["schedule_preview"]) >= 1  # a yearly tick in any 366 days
    assert list(done["backfill"]["enqueued"]) == [True, True]
    assert run_done["wait"] == run_done["state"] == "succeeded"
    assert run_done["results"] == {"noop": {"n": "wf"}}
    assert (run_done["retry"], run_done["cancel"]) == (0, 0)
    assert q.get_job(job_id).status is pgq_nb.JobStatus.SUCCEEDED


def test_a_transaction_awaits_from_a_foreign_loop_and_commits(ctx: Ctx, q: pgq_nb.Queue) -> None:
    assert sorted(TRANSACTION_CALLS) == public_coroutines(AsyncTransaction)

    async def in_kernel_loop() -> dict[str, Any]:
        tx = ctx.aq.transaction()
        return await _await_table(lambda name: tx, TRANSACTION_CALLS, ctx, {})

    done = asyncio.run(in_kernel_loop())
    assert done["fetchval"] == 1
    assert done["fetchrow"]["note"] == "execute"
    ids = [done["enqueue"], *_job_ids(done["enqueue_df"])]
    assert _count(q, f"SELECT count(*) FROM {TABLE}") == 2
    assert set(q.statuses(ids).values()) == {pgq_nb.JobStatus.QUEUED}


def test_a_transaction_from_a_foreign_loop_rolls_back(ctx: Ctx, q: pgq_nb.Queue) -> None:
    async def in_kernel_loop() -> list[int]:
        tx = await ctx.aq.transaction().begin()
        await tx.execute(f"INSERT INTO {TABLE} VALUES (1, 'gone')")
        ids = [await tx.enqueue("noop"), *_job_ids(await tx.enqueue_df("noop", ctx.frame))]
        await tx.end(False)
        return ids

    ids = asyncio.run(in_kernel_loop())
    assert _count(q, f"SELECT count(*) FROM {TABLE}") == 0
    assert q.statuses(ids) == {}


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
@pytest.mark.parametrize("name", sorted(CONNECTION_CALLS))
def test_callers_own_connection_in_its_transaction(
    ctx: Ctx, q: pgq_nb.Queue, name: str, commit: bool
) -> None:
    """The call runs on the caller's loop, on the caller's connection, inside the caller's
    transaction; the connection stays usable and the transaction ends as the caller says."""
    args, kwargs = CONNECTION_CALLS[name](ctx)

    async def in_kernel_loop() -> list[int]:
        conn = await asyncpg.connect(ctx.dsn)
        try:
            tr = conn.transaction()
            await tr.start()
            await conn.execute(f"INSERT INTO {TABLE} VALUES (1, $1)", name)
            ids = _job_ids(await getattr(ctx.aq, name)(*args, connection=conn, **kwargs))
            seen = await conn.fetchval(
                f"SELECT count(*) FROM {SCHEMA}.jobs WHERE id = any($1::bigint[])", ids
            )
            assert seen == len(ids) > 0  # written in the caller's transaction, on its connection
            await (tr.commit() if commit else tr.rollback())
            assert await conn.fetchval(f"SELECT count(*) FROM {TABLE}") == int(commit)
        finally:
            await conn.close()
        found = await ctx.aq.statuses(ids)  # bridged, from the same loop
        assert set(found) == (set(ids) if commit else set())
        return ids

    ids = asyncio.run(in_kernel_loop())
    assert _count(q, f"SELECT count(*) FROM {TABLE}") == int(commit)
    assert len(q.statuses(ids)) == (len(ids) if commit else 0)


def test_a_connection_of_another_loop_is_refused_untouched(ctx: Ctx, q: pgq_nb.Queue) -> None:
    jobs = f"SELECT count(*) FROM {SCHEMA}.jobs"
    before = _count(q, jobs)
    other = asyncio.new_event_loop()
    try:
        conn = other.run_until_complete(asyncpg.connect(ctx.dsn))
        with pytest.raises(pgq_nb.InvalidInputError, match="another event loop"):
            q.enqueue("noop", connection=conn)  # would run on pgq_nb's loop: refused
        with pytest.raises(pgq_nb.InvalidInputError, match="another event loop"):
            q.enqueue_df("noop", ctx.frame, connection=conn)
        assert other.run_until_complete(conn.fetchval("SELECT 1")) == 1
        other.run_until_complete(conn.close())
    finally:
        other.close()
    assert _count(q, jobs) == before


def test_sync_transaction_begin_and_end(ctx: Ctx, q: pgq_nb.Queue) -> None:
    tx = q.transaction()
    opened = tx.begin()
    assert isinstance(opened, Transaction)
    assert opened.aio is tx.aio
    opened.execute(f"INSERT INTO {TABLE} VALUES (1, 'sync')")
    job_id = opened.enqueue("noop")
    tx.end(True)
    assert _count(q, f"SELECT count(*) FROM {TABLE}") == 1
    assert q.get_job(job_id).status is pgq_nb.JobStatus.QUEUED
    assert isinstance(q.workflow_run(ctx.run_id), WorkflowRun)  # wrapped: AsyncX becomes X
