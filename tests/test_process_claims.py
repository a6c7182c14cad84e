"""How a worker whose handlers run in processes claims (issue #17): with a backlog it waits for
one free slot per process and claims them together (pgq_nb.worker_decisions.claim_now), and
that wait must never be for room that cannot come. Real loky processes, the real Postgres of
the fixtures. Each run is bounded (a stalled worker is stopped, and the test then fails on
the jobs it left), so a regression fails instead of hanging."""

from __future__ import annotations

import asyncio
import os

import pgq_nb
from pgq_nb import runtime
from pgq_nb.worker import WorkerStats

#: A stalled worker is stopped after this many seconds (the runs below take one or two).
BOUND_S = 90


async def _run(worker: pgq_nb.Worker) -> WorkerStats:
    asyncio.get_running_loop().call_later(BOUND_S, worker.request_stop)
    return await worker.run()


def test_a_batch_smaller_than_the_processes_still_drains(q: pgq_nb.Queue) -> None:
    # processes=2 at concurrency 4 would wait for 2 free slots; a claim of batch_size=1 can
    # never make room for 2, so the wait must be capped by the batch (it claimed once, then
    # polled for ever)
    q.entrypoint("pid")(lambda job: os.getpid())
    ids = q.enqueue(["pid"] * 8)
    worker = pgq_nb.Worker(q.aio, stop_when_idle=True, processes=2, batch_size=1)
    stats = runtime.run_sync(_run(worker))
    assert stats.succeeded == 8, stats
    assert set(q.statuses(ids).values()) == {pgq_nb.JobStatus.SUCCEEDED}


def test_a_paused_entrypoint_does_not_hold_back_a_capped_one(q: pgq_nb.Queue) -> None:
    # "b" paused: only "a" (one at a time) can be claimed, so the most this worker can take
    # is 1, not the 4 its caps add up to; a wait for 2 free slots would never end
    q.entrypoint("a", concurrency=1)(lambda job: os.getpid())
    q.entrypoint("b", concurrency=3)(lambda job: os.getpid())
    a_ids = q.enqueue(["a"] * 5)
    b_ids = q.enqueue(["b"] * 2)
    q.pause("b")
    stats = q.run_until_idle(processes=2, timeout=BOUND_S)
    assert stats.succeeded == 5, stats
    assert set(q.statuses(a_ids).values()) == {pgq_nb.JobStatus.SUCCEEDED}
    assert set(q.statuses(b_ids).values()) == {pgq_nb.JobStatus.QUEUED}


def test_an_async_handler_beside_processes_does_not_idle_them(q: pgq_nb.Queue) -> None:
    # async handlers run on the worker's loop and hold slots too: with three of the four
    # slots held by them, the one left must take the next job as each ends, not wait for a
    # second free slot (which would come only when an async job ends, seconds later)
    async def slow(job: pgq_nb.Job) -> None:
        await asyncio.sleep(SLOW_S)

    q.entrypoint("slow")(slow)
    q.entrypoint("pid")(lambda job: os.getpid())
    slow_ids = q.enqueue(["slow"] * 3)
    pid_ids = q.enqueue(["pid"] * 12)
    stats = q.run_until_idle(processes=2, concurrency=4, timeout=BOUND_S)
    assert stats.succeeded == 15, stats
    first_slow = min(q.get_job(i).finished for i in slow_ids)  # type: ignore[type-var]
    before = [i for i in pid_ids if q.get_job(i).finished < first_slow]  # type: ignore[operator]
    # (before the fix: 1, the job claimed beside the slow ones; a process job takes
    # milliseconds once its process runs, and SLOW_S leaves seconds for the processes' start)
    assert len(before) >= 3, f"{len(before)} of 12 process jobs ended while the slow ran"


#: How long each async job of the last test runs (seconds).
SLOW_S = 10
