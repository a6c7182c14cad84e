"""oban-py (the ``oban`` package, Oban's Python port): needs Python 3.12 or newer.

On the project's Python 3.11 it does not install, and the ``peers`` scenario skips it with a
note. On 3.12 or newer: its tables from ``oban.schema.install_sql()``; an ``Oban`` in server
mode (``queues={"bench": limit}``), whose producer fetches and runs jobs on the event loop,
the queue's ``limit`` (its concurrency) the best of ``CANDIDATES`` (picked by the peers
scenario's sweep); a psycopg pool of up to 40 connections; leadership, stager, pruner and
lifeline at their defaults (the pruner keeps completed jobs for a day, so they are counted in
``oban_jobs`` with state ``completed``). Jobs are a ``@worker`` class with an async
``process``, inserted with ``enqueue_many`` (one statement per call), 1,000 a call.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

from benchmarks.peers import Outcome, Tables, timed_drain, timed_enqueue

CONCURRENCY = 32  # until the peers scenario's sweep picks the best of CANDIDATES
CANDIDATES = (10, 32, 100)
POOL = 40  # connections at most: the server is shared with the other systems' runs
CHUNK = 1_000
QUEUE = "bench"
TABLES = Tables(
    pending="SELECT EXISTS (SELECT 1 FROM oban_jobs WHERE state IN "
    "('available', 'scheduled', 'executing', 'retryable'))",
    finished="SELECT count(*) FROM oban_jobs WHERE state = 'completed'",
    queued="SELECT count(*) FROM oban_jobs WHERE state = 'available'",
)
_registered: dict[str, Any] = {}


class BenchWorker:
    """The job oban-py runs (registered as a worker on first use)."""

    async def process(self, job: Any) -> None:
        return None


def _oban() -> tuple[Any, Any]:
    """The oban module and the registered worker class."""
    oban = importlib.import_module("oban")
    if not _registered:
        _registered["worker"] = oban.worker(queue=QUEUE)(BenchWorker)
    return oban, _registered["worker"]


class ObanPeer:
    name = "oban-py"
    package = "oban"
    min_python = (3, 12)
    candidates = CANDIDATES
    concurrency = CONCURRENCY

    def settings(self) -> dict[str, Any]:
        return {
            "oban": f'Oban(queues={{"{QUEUE}": {self.concurrency}}}), other plugins at defaults',
            "pool": f"Oban.create_pool(max_size={POOL})",
            "enqueue": f"oban.enqueue_many, {CHUNK:,} jobs a call",
            "finished": "oban_jobs rows in state 'completed'",
        }

    async def _pool(self, dsn: str) -> tuple[Any, Any, Any]:
        oban, worker = _oban()
        schema = importlib.import_module("oban.schema")
        pool = await oban.Oban.create_pool(dsn, min_size=1, max_size=POOL)
        async with pool.connection() as conn:
            await conn.execute(schema.install_sql())
        return oban, worker, pool

    async def _insert(self, client: Any, worker: Any, payloads: list[dict[str, Any]]) -> None:
        for start in range(0, len(payloads), CHUNK):
            await client.enqueue_many([worker.new(p) for p in payloads[start : start + CHUNK]])

    async def drain(self, dsn: str, n: int, cap: float) -> Outcome:
        oban, worker, pool = await self._pool(dsn)
        try:
            # a client (no queues) inserts the jobs; a server Oban then runs them
            client = oban.Oban(pool=pool, name="bench_client")
            await self._insert(client, worker, [{} for _ in range(n)])
            server = oban.Oban(pool=pool, queues={QUEUE: self.concurrency})

            async def start() -> None:
                await server.start()

            async def stop() -> None:
                await asyncio.wait_for(server.stop(), timeout=60)

            return await timed_drain(dsn, n, cap, TABLES, start, stop)
        finally:
            await pool.close()

    async def enqueue(self, dsn: str, n: int) -> Outcome:
        oban, worker, pool = await self._pool(dsn)
        try:
            client = oban.Oban(pool=pool, name="bench_client")
            payloads = [{"i": i} for i in range(n)]
            return await timed_enqueue(
                dsn, n, TABLES, lambda: self._insert(client, worker, payloads)
            )
        finally:
            await pool.close()


PEER = ObanPeer()
