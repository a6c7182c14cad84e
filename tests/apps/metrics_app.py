"""A worker module for the metrics tests: `pgq-nb worker metrics_app:q --metrics-port N`.

``slow`` sleeps for its payload's seconds; ``boom`` fails every attempt (two attempts, 50 ms
apart), so it is retried once and then fails for good.
"""

from __future__ import annotations

import asyncio

import pgq_nb

q = pgq_nb.connect()


@q.entrypoint("slow")
async def slow(job: pgq_nb.Job) -> None:
    await asyncio.sleep(float(job.data or 0.0))


@q.entrypoint("boom", retry=pgq_nb.RetryPolicy(max_attempts=2, base_delay=0.05))
async def boom(job: pgq_nb.Job) -> None:
    raise RuntimeError("boom")
