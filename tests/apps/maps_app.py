"""A worker module for the wf.map_over tests: `pgq-nb worker maps_app:q`. extract returns
``rows`` items, transform doubles each, aggregate returns every result it got, in order."""

from __future__ import annotations

import asyncio
from typing import Any

import pgq_nb

q = pgq_nb.connect()
_retry = pgq_nb.RetryPolicy(max_attempts=50, base_delay=0.05, max_delay=0.5)


@q.entrypoint("m_extract", retry=_retry)
def extract(job: pgq_nb.Job) -> list[dict[str, int]]:
    sleep = job.data.get("sleep", 0.02)
    return [{"i": i, "sleep": sleep} for i in range(job.data["rows"])]


@q.entrypoint("m_transform", retry=_retry)
async def transform(job: pgq_nb.Job) -> int:
    await asyncio.sleep(job.data["sleep"])
    return int(job.data["i"]) * 2


@q.entrypoint("m_aggregate", retry=_retry)
def aggregate(job: pgq_nb.Job) -> dict[str, Any]:
    return {"parts": job.parent_results()["m_transform"]}
