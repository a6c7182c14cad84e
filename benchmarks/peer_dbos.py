"""DBOS Transact 3.x: a queue of async workflows, DBOS's own queue runner.

Settings, from its documentation ("Queues", ``DBOS.register_queue``): the queue's
``worker_concurrency`` (how many workflows this process runs at once) is the best of
``CANDIDATES``, picked by the peers scenario's sweep (with no-op jobs, the more one poll takes,
the better); ``polling_interval_sec`` is 0.1 s (its default, 1 s, makes a drain wait a poll
between batches); the system database pool has 40 connections (its default is 20); every job
is an async ``@DBOS.workflow()`` with no steps. DBOS has no bulk enqueue: jobs go in with
``queue.enqueue_async``, 100 in flight at a time (each a transaction of its own). Finished
jobs stay in ``dbos.workflow_status`` with status ``SUCCESS``, where they are counted. DBOS
is one instance per process: each run launches it and destroys it after.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import importlib
import logging
from typing import Any

from benchmarks.peers import Outcome, Tables, timed_drain, timed_enqueue

CONCURRENCY = 32  # until the peers scenario's sweep picks the best of CANDIDATES
CANDIDATES = (32, 100, 250, 1000)
POOL = 40  # connections at most (its default is 20): the server is shared
POLLING = 0.1
IN_FLIGHT = 100
QUEUE = "bench"
TABLES = Tables(
    pending="SELECT EXISTS (SELECT 1 FROM dbos.workflow_status WHERE queue_name = 'bench' "
    "AND status IN ('ENQUEUED', 'PENDING'))",
    finished="SELECT count(*) FROM dbos.workflow_status WHERE queue_name = 'bench' "
    "AND status = 'SUCCESS'",
    queued="SELECT count(*) FROM dbos.workflow_status WHERE queue_name = 'bench' "
    "AND status = 'ENQUEUED'",
)
_registered: dict[str, Any] = {}


async def _noop(payload: Any) -> None:
    """The workflow DBOS runs: no steps."""
    return None


def _dbos() -> tuple[Any, Any]:
    """The dbos module and the benchmark's no-op workflow (registered once per process)."""
    dbos = importlib.import_module("dbos")
    if not _registered:
        _registered["workflow"] = dbos.DBOS.workflow(name="bench_noop")(_noop)
    return dbos, _registered["workflow"]


async def _off_loop(call: Any) -> Any:
    """Run a blocking DBOS call in a thread of our own: DBOS makes its thread pool the loop's
    default executor and shuts it down in ``destroy``, so ``asyncio.to_thread`` breaks."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return await asyncio.get_running_loop().run_in_executor(pool, call)


class DBOSPeer:
    name = "DBOS"
    package = "dbos"
    min_python = (3, 10)
    candidates = CANDIDATES
    concurrency = CONCURRENCY

    def settings(self) -> dict[str, Any]:
        return {
            "queue": f"register_queue(worker_concurrency={self.concurrency}, "
            f"polling_interval_sec={POLLING})",
            "config": f"sys_db_pool_size={POOL}",
            "enqueue": f"queue.enqueue_async per job (no bulk API), {IN_FLIGHT} in flight",
            "finished": "dbos.workflow_status rows of the queue with status 'SUCCESS'",
        }

    def _launch(self, dsn: str) -> tuple[Any, Any]:
        dbos, workflow = _dbos()
        logging.getLogger("dbos").setLevel(logging.WARNING)
        config = {
            "name": "pgq_nb_benchmark",
            "system_database_url": dsn,
            "sys_db_pool_size": POOL,
            "log_level": "WARNING",
        }
        dbos.DBOS(config=config)
        return dbos, workflow

    async def _enqueue(self, queue: Any, workflow: Any, payloads: list[Any]) -> None:
        for start in range(0, len(payloads), IN_FLIGHT):
            part = payloads[start : start + IN_FLIGHT]
            await asyncio.gather(*(queue.enqueue_async(workflow, p) for p in part))

    async def _session(self, dsn: str, *, listen: bool) -> tuple[Any, Any, Any]:
        """Launch DBOS on ``dsn``; without ``listen``, its worker takes nothing off the queue."""
        dbos, workflow = self._launch(dsn)
        if not listen:
            dbos.DBOS.listen_queues([])
        await _off_loop(dbos.DBOS.launch)
        queue = await dbos.DBOS.register_queue_async(
            QUEUE, worker_concurrency=self.concurrency, polling_interval_sec=POLLING
        )
        return dbos, queue, workflow

    async def _destroy(self, dbos: Any) -> None:
        await _off_loop(functools.partial(dbos.DBOS.destroy, workflow_completion_timeout_sec=30))

    async def drain(self, dsn: str, n: int, cap: float) -> Outcome:
        # a first DBOS, not listening to the queue, installs its tables and enqueues the jobs;
        # the clock starts before a second DBOS launches and listens (its launch, a few queries
        # on installed tables, is timed with the drain: it cannot listen to a queue later on)
        dbos, queue, workflow = await self._session(dsn, listen=False)
        try:
            await self._enqueue(queue, workflow, [None] * n)
        finally:
            await self._destroy(dbos)

        async def start() -> None:
            await self._session(dsn, listen=True)  # the queue is in its table: it starts

        async def stop() -> None:
            await self._destroy(dbos)

        return await timed_drain(dsn, n, cap, TABLES, start, stop)

    async def enqueue(self, dsn: str, n: int) -> Outcome:
        dbos, queue, workflow = await self._session(dsn, listen=False)
        try:
            payloads = [{"i": i} for i in range(n)]
            return await timed_enqueue(
                dsn, n, TABLES, lambda: self._enqueue(queue, workflow, payloads)
            )
        finally:
            await self._destroy(dbos)


PEER = DBOSPeer()
