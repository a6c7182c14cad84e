"""A worker module for the stop and thread tests: `pgq-nb worker stop_app:q`.

Each run appends `job_id start end pid` (end = "-" while it runs) to a per-process file in
RUN_LOG_DIR, so a test can tell whether two runs of one job overlapped.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pgq_nb

q = pgq_nb.connect()
_log = (Path(os.environ["RUN_LOG_DIR"]) / f"runs-{os.getpid()}.log").open("a", buffering=1)
_SECONDS = float(os.environ.get("RUN_SECONDS", "3"))


@q.entrypoint("slow_thread")
def slow_thread(job: pgq_nb.Job) -> int:
    """A def handler that sleeps RUN_SECONDS; a thread that cannot be interrupted."""
    start = time.time()
    time.sleep(_SECONDS)
    _log.write(f"{job.id} {start} {time.time()} {os.getpid()}\n")
    return job.id


@q.entrypoint("slow_async")
async def slow_async(job: pgq_nb.Job) -> int:
    """An async handler that sleeps RUN_SECONDS (cancelled at a hard stop)."""
    start = time.time()
    await asyncio.sleep(_SECONDS)
    _log.write(f"{job.id} {start} {time.time()} {os.getpid()}\n")
    return job.id
