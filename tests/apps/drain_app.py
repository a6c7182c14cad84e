"""A worker module for the multi-process tests: `pgq-nb worker drain_app:q`.

Each run appends `job_id start end pid` to a per-process file in RUN_LOG_DIR, so a test can
check that no job ran twice, or in two places at once.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pgq_nb

q = pgq_nb.connect()
_log_dir = Path(os.environ["RUN_LOG_DIR"])
_log = (_log_dir / f"runs-{os.getpid()}.log").open("a", buffering=1)


@q.entrypoint("noop")
async def noop(job: pgq_nb.Job) -> None:
    start = time.time()
    await asyncio.sleep(0)
    _log.write(f"{job.id} {start} {time.time()} {os.getpid()}\n")


@q.entrypoint("slow")
async def slow(job: pgq_nb.Job) -> dict[str, int]:
    """Sleeps for job.data['seconds'], then says which process finished it."""
    (_log_dir / f"started-{job.id}-{os.getpid()}").touch()
    await asyncio.sleep(job.data["seconds"])
    return {"pid": os.getpid(), "attempt": job.attempts}


@q.entrypoint("part")
async def part(job: pgq_nb.Job) -> int:
    """A fan-out step: its payload is a number."""
    return int(job.data)


@q.entrypoint("total")
async def total(job: pgq_nb.Job) -> dict[str, int]:
    """A fan-in step: sums its parents' results, says how many it saw."""
    parts = job.parent_results()["part"]
    (_log_dir / f"total-{job.id}-{os.getpid()}-{time.time()}").touch()
    return {"sum": sum(parts), "parents": len(parts)}
