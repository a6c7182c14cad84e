"""A worker module for the Postgres crash tests: `pgq-nb worker crash_app:q`.

Each run of a job appends `job_id attempt pid` to a per-process file in RUN_LOG_DIR, so a test
can tell a job that never ran from one whose completion was lost, and count runs.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pgq_nb

q = pgq_nb.connect()
_log = (Path(os.environ["RUN_LOG_DIR"]) / f"runs-{os.getpid()}.log").open("a", buffering=1)

#: Generous: the crashes themselves must never use up a job's attempts (a worker presumed dead
#: while Postgres was down loses its runs, and each lost run counts as an attempt).
PATIENT = pgq_nb.RetryPolicy(max_attempts=20, base_delay=0.05, max_delay=0.5)


@q.entrypoint("tick", retry=PATIENT)
async def tick(job: pgq_nb.Job) -> None:
    """Almost nothing: yields once, then records that it ran."""
    await asyncio.sleep(0)
    _log.write(f"{job.id} {job.attempts} {os.getpid()}\n")
