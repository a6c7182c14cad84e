"""A worker module for the web dashboard's browser test: `pgq-nb worker web_app:q`."""

from __future__ import annotations

import asyncio

import pgq_nb

q = pgq_nb.connect()


@q.entrypoint("tick")
async def tick(job: pgq_nb.Job) -> int:
    await asyncio.sleep(0.1)
    return 1
