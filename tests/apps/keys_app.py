"""A worker module for the per-key limit tests: `pgq-nb worker keys_app:q`.

``keyed`` (max_per_key=1 by the payload's ``customer``) writes each run's start and end, by the
database's clock, into the table named by KEYS_RUN_TABLE, so a test can look for two runs of
one key at once across processes. A payload's ``first`` is how long its first attempt runs
(to be killed in), ``seconds`` how long the others do (default 0.05).
"""

from __future__ import annotations

import asyncio
import os

import pgq_nb

q = pgq_nb.connect()
TABLE = os.environ["KEYS_RUN_TABLE"]


@q.entrypoint("keyed", concurrency_key="customer", max_per_key=1)
async def keyed(job: pgq_nb.Job) -> None:
    data = job.data
    seconds = data["first"] if job.attempts == 1 and "first" in data else data.get("seconds", 0.05)
    pool = q.aio.pool
    await pool.execute(
        f"INSERT INTO {TABLE} (job_id, key, pid, attempt, started) "
        "VALUES ($1, $2, $3, $4, clock_timestamp())",
        job.id,
        job.concurrency_key,
        os.getpid(),
        job.attempts,
    )
    await asyncio.sleep(float(seconds))
    await pool.execute(
        f"UPDATE {TABLE} SET ended = clock_timestamp() WHERE job_id = $1 AND attempt = $2",
        job.id,
        job.attempts,
    )
