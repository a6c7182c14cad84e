"""Chancy: a ``Chancy`` app, its own ``Worker``, ``push_many`` for the bulk enqueue.

Settings, from its documentation (``Queue`` and ``AsyncExecutor``): the queue runs on the
asyncio executor (its recommendation for many small I/O-bound jobs; the default is a process
pool), ``concurrency`` jobs at once per worker, the best of ``CANDIDATES`` (picked by the peers
scenario's sweep); ``eager_polling`` on (the worker fetches again as soon as a job completes
instead of waiting for the next poll) and a 1 s poll interval (the default is 5 s; pushes also
wake the worker by NOTIFY); a pool of 40 connections; its default plugins (leadership, pruner,
recovery, metrics, workflows) left on, as a user gets them. Jobs go in with ``push_many`` (its
bulk API; 1,000 per transaction, its default).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from typing import Any

from benchmarks.peers import Outcome, Tables, timed_drain, timed_enqueue

CONCURRENCY = 32  # until the peers scenario's sweep picks the best of CANDIDATES
CANDIDATES = (10, 32, 100)
POOL = 40  # connections at most: the server is shared with the other systems' runs
QUEUE = "bench"
TABLES = Tables(
    pending="SELECT EXISTS (SELECT 1 FROM chancy_jobs WHERE state IN "
    "('pending', 'running', 'retrying'))",
    finished="SELECT count(*) FROM chancy_jobs WHERE state = 'succeeded'",
    queued="SELECT count(*) FROM chancy_jobs WHERE state = 'pending'",
)
_LOG = logging.getLogger("benchmarks.chancy")
_LOG.setLevel(logging.WARNING)


async def chancy_noop(**payload: Any) -> None:
    """The job Chancy runs (by its import path)."""
    return None


class ChancyPeer:
    name = "Chancy"
    package = "chancy"
    min_python = (3, 11)
    candidates = CANDIDATES
    concurrency = CONCURRENCY

    def settings(self) -> dict[str, Any]:
        return {
            "queue": f"Queue(concurrency={self.concurrency}, executor=Chancy.Executor.Async, "
            "eager_polling=True, polling_interval=1)",
            "app": f"Chancy(max_connection_pool_size={POOL}), default plugins",
            "enqueue": "push_many (1,000 jobs per transaction)",
            "finished": "chancy_jobs rows in state 'succeeded'",
        }

    async def _app(self, dsn: str) -> tuple[Any, Any]:
        chancy = importlib.import_module("chancy")
        app = chancy.Chancy(dsn, max_connection_pool_size=POOL, log=_LOG)
        await app.__aenter__()
        await app.migrate()
        await app.declare(
            chancy.Queue(
                QUEUE,
                concurrency=self.concurrency,
                executor=chancy.Chancy.Executor.Async,
                eager_polling=True,
                polling_interval=1,
            ),
            upsert=True,
        )
        return chancy, app

    async def _push(self, chancy: Any, app: Any, payloads: list[dict[str, Any]]) -> None:
        jobs = [chancy.Job.from_func(chancy_noop, queue=QUEUE, kwargs=p) for p in payloads]
        async for _ in app.push_many(jobs):
            pass

    async def drain(self, dsn: str, n: int, cap: float) -> Outcome:
        chancy, app = await self._app(dsn)
        try:
            await self._push(chancy, app, [{} for _ in range(n)])
            worker = chancy.Worker(app, register_signal_handlers=False)

            async def stop() -> None:
                await asyncio.wait_for(worker.stop(), timeout=60)

            return await timed_drain(dsn, n, cap, TABLES, worker.start, stop)
        finally:
            await app.__aexit__(None, None, None)

    async def enqueue(self, dsn: str, n: int) -> Outcome:
        chancy, app = await self._app(dsn)
        try:
            payloads = [{"i": i} for i in range(n)]
            return await timed_enqueue(dsn, n, TABLES, lambda: self._push(chancy, app, payloads))
        finally:
            await app.__aexit__(None, None, None)


PEER = ChancyPeer()
