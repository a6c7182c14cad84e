"""The worker module of the per-key benchmark: `pgq-nb worker benchmarks.keys_app:q`, with
PGQ_NB_DSN and PGQ_NB_SCHEMA set by benchmarks/scenario_keys.py. ``bench_keys`` sleeps 50 ms,
at most one job of a payload's ``k`` at a time across every worker."""

from __future__ import annotations

import asyncio

import pgq_nb

q = pgq_nb.connect()


@q.entrypoint("bench_keys", concurrency_key="k", max_per_key=1)
async def bench_keys(job: pgq_nb.Job) -> None:
    await asyncio.sleep(0.05)
