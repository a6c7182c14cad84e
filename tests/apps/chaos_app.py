"""A worker module for the fault-tolerance tests: `pgq-nb worker chaos_app:q`."""

from __future__ import annotations

import asyncio
import os
import signal

import pgq_nb

q = pgq_nb.connect()


@q.entrypoint("work", retry=pgq_nb.RetryPolicy(max_attempts=50, base_delay=0.05, max_delay=0.5))
async def work(job: pgq_nb.Job) -> int:
    """A tenth of a second of work; returns its input."""
    await asyncio.sleep(0.1)
    return int(job.data)


@q.entrypoint("poison", retry=pgq_nb.RetryPolicy(max_attempts=3, base_delay=0.05))
async def poison(job: pgq_nb.Job) -> None:
    """Kills the process that runs it, every time."""
    os.kill(os.getpid(), signal.SIGKILL)
