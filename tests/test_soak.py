"""Long runs, not in the default suite: `python -m pytest -m slow`.

A producer enqueues continuously while four worker processes drain, and one of them is killed
with SIGKILL every couple of seconds, for two minutes: every job ends in history exactly once.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time

import pytest

import pgq_nb
from pgq_nb import runtime
from tests.conftest import start_worker_process

pytestmark = pytest.mark.slow

DURATION_S = 120.0


def _history(q: pgq_nb.Queue) -> tuple[int, int]:
    async def run() -> tuple[int, int]:
        row = await q.aio.pool.fetchrow(
            f"SELECT count(*) AS n, count(*) FILTER (WHERE status = 'succeeded') AS ok "
            f"FROM {q.schema}.history"
        )
        return row["n"], row["ok"]

    return runtime.run_sync(run())


@pytest.mark.timeout(600)
def test_soak_with_producer_and_random_kills(q: pgq_nb.Queue, installed: str) -> None:
    q.entrypoint("work")(lambda job: None)
    rng = random.Random(11)

    def spawn() -> subprocess.Popen[bytes]:
        return start_worker_process(installed, "chaos_app:q", "--concurrency", "32")

    procs = [spawn() for _ in range(4)]
    enqueued = 0
    next_kill = time.monotonic() + 2.0
    try:
        end = time.monotonic() + DURATION_S
        while time.monotonic() < end:
            q.enqueue(["work"] * 200, list(range(200)), 0)
            enqueued += 200
            if time.monotonic() >= next_kill:
                victim = rng.randrange(len(procs))
                procs[victim].send_signal(signal.SIGKILL)
                procs[victim].wait(timeout=10)
                procs[victim] = spawn()
                next_kill = time.monotonic() + rng.uniform(1.0, 3.0)
            time.sleep(0.25)  # about 800 jobs/s: below what the workers drain (128 slots
            # of 0.1 s jobs, about 1,250/s), so the backlog stays bounded while they are killed
        deadline = time.monotonic() + 300
        while _history(q)[0] < enqueued and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
    assert _history(q) == (enqueued, enqueued)
