"""Recording finished attempts: the batch statement, workflow settling, transactional handlers.

A batch without workflow steps is one statement (``finish_jobs``). A batch with steps is one
transaction: the statement (which also counts succeeded steps off their children), the failure
of everything downstream of a step that failed for good, and the settling of runs that have
nothing left to do (under the run's row lock, so that two workers finishing a run's last steps
at once cannot both miss the end).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pgq_nb.models import Job, encode_result
from pgq_nb.transaction import AsyncTransaction, Transaction

if TYPE_CHECKING:
    from pgq_nb.queue import AsyncQueue, EntrypointSpec

#: A finished attempt, in the column order of the ``finish_jobs`` query:
#: id, outcome, result JSON, error, traceback, started, finished, retry delay (s).
Finished = tuple[int, str, str | None, str | None, str | None, dt.datetime, dt.datetime, float]


class AlreadyRecorded:
    """What a transactional handler's future resolves to: its completion is committed."""


ALREADY_RECORDED = AlreadyRecorded()


async def record(
    conn: Any,
    queries: dict[str, str],
    worker_id: int | None,
    batch: Sequence[Finished],
    *,
    steps: bool,
    slots: Sequence[int] = (),
) -> list[Any]:
    """Record ``batch`` on ``conn`` (in a transaction when ``steps`` or ``slots``); returns the
    jobs that moved to history. ``slots``: ids of jobs holding a global-concurrency slot."""
    columns = list(zip(*batch, strict=True))
    done: list[Any] = await conn.fetch(queries["finish_jobs"], worker_id, *columns)
    if slots:
        await conn.execute(queries["release_slots"], worker_id, list(slots))
    if not steps:
        return done
    dead = [r for r in done if r["outcome"] != "succeeded"]
    await settle_steps(conn, queries, dead, [r["workflow_id"] for r in done])
    return done


async def settle_steps(
    conn: Any, queries: dict[str, str], dead: Sequence[Any], runs: Sequence[int | None]
) -> None:
    """After steps ended: what is downstream of the ``dead`` ones (failed or cancelled for
    good) can never run; runs left with nothing to do are over. Call in a transaction."""
    dead = [r for r in dead if r["workflow_id"]]
    if dead:
        await conn.execute(
            queries["fail_descendants"],
            [r["id"] for r in dead],
            [r["workflow_id"] for r in dead],
        )
    ids = sorted({r for r in runs if r} | {r["workflow_id"] for r in dead})
    if ids:
        await conn.execute(queries["lock_workflows"], ids)
        await conn.execute(queries["settle_workflows"], ids)


async def run_transactional(
    queue: AsyncQueue,
    spec: EntrypointSpec,
    job: Job,
    worker_id: int | None,
    started: dt.datetime,
    executor: Any,
    *,
    slotted: bool = False,
) -> AlreadyRecorded:
    """Run a ``transactional=True`` handler with ``job.tx`` open, and record its success in
    that same transaction. If the handler raises, everything it wrote is rolled back and the
    exception propagates (the attempt then fails like any other)."""
    async with queue.pool.acquire() as conn, conn.transaction():
        tx = AsyncTransaction(queue, conn, already_open=True)

        if spec.is_async:
            job.tx = tx
            value = await spec.handler(job)
        else:
            job.tx = Transaction(tx)
            value = await asyncio.get_running_loop().run_in_executor(executor, spec.handler, job)
        finished = dt.datetime.now(dt.UTC)
        row: Finished = (
            job.id,
            "succeeded",
            encode_result(value),
            None,
            None,
            started,
            finished,
            0.0,
        )
        slots = [job.id] if slotted else []
        steps = job.workflow_id is not None
        done = await record(conn, queue.queries, worker_id, [row], steps=steps, slots=slots)
        if not done:
            raise RuntimeError(
                "the job was taken back from this worker (its heartbeat went stale) while the "
                "handler ran; its writes are rolled back and the job runs again elsewhere"
            )
    return ALREADY_RECORDED
