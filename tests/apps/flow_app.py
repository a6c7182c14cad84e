"""A worker module for the flow-control tests: `pgq-nb worker flow_app:q`.

Each handler appends `entrypoint job_id start end pid` to a per-process file in RUN_LOG_DIR.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pgq_nb

q = pgq_nb.connect()
_log = (Path(os.environ["RUN_LOG_DIR"]) / f"flow-{os.getpid()}.log").open("a", buffering=1)


async def _run(job: pgq_nb.Job, seconds: float) -> None:
    start = time.time()
    await asyncio.sleep(seconds)
    _log.write(f"{job.entrypoint} {job.id} {start} {time.time()} {os.getpid()}\n")


@q.entrypoint("limited", max_running=3)
async def limited(job: pgq_nb.Job) -> None:
    await _run(job, float(job.data or 0.05))


@q.entrypoint("rated", rate_limit="20/s")
async def rated(job: pgq_nb.Job) -> None:
    await _run(job, 0.0)


@q.entrypoint("pausable")
async def pausable(job: pgq_nb.Job) -> None:
    await _run(job, 0.0)
