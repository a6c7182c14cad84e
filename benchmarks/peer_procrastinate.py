"""procrastinate 3.x: ``App`` over a ``PsycopgConnector``, its own worker, ``batch_defer_async``.

Settings, from its documentation ("Howto: concurrency" and the worker options of
``App.run_worker_async``): an async task, so one worker runs ``concurrency`` jobs at once on
one event loop, the best of ``CANDIDATES`` (picked by the peers scenario's sweep); the pool
has a connection per concurrent job plus the worker's LISTEN and heartbeat ones, up to 40;
``listen_notify`` on (its default), so a new job wakes the worker rather than the 5 s poll;
``delete_jobs="never"`` (its default), so finished jobs stay in ``procrastinate_jobs``, where
they are counted. Jobs are deferred with ``batch_defer_async`` (one statement a call), 1,000
a call.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

from benchmarks.peers import Outcome, Tables, stop_task, timed_drain, timed_enqueue

CONCURRENCY = 32  # until the peers scenario's sweep picks the best of CANDIDATES
CANDIDATES = (10, 32, 100)
POOL = 40  # connections at most: the server is shared with the other systems' runs
CHUNK = 1_000
QUEUE = "bench"
TABLES = Tables(
    pending="SELECT EXISTS (SELECT 1 FROM procrastinate_jobs WHERE status IN ('todo', 'doing'))",
    finished="SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'",
    queued="SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'",
)


async def _noop(**payload: Any) -> None:
    """The task procrastinate runs."""
    return None


class Procrastinate:
    name = "procrastinate"
    package = "procrastinate"
    min_python = (3, 10)
    candidates = CANDIDATES
    concurrency = CONCURRENCY

    def settings(self) -> dict[str, Any]:
        return {
            "worker": f"App.run_worker_async(concurrency={self.concurrency}, listen_notify=True)",
            "pool": f"PsycopgConnector(max_size={self._pool()})",
            "enqueue": f"task.batch_defer_async, {CHUNK:,} jobs a call",
            "finished": "procrastinate_jobs rows with status 'succeeded'",
        }

    def _pool(self) -> int:
        """A connection per concurrent job, plus LISTEN and heartbeat, up to POOL."""
        return min(self.concurrency + 4, POOL)

    def _app(self, dsn: str) -> tuple[Any, Any]:
        procrastinate = importlib.import_module("procrastinate")
        connector = procrastinate.PsycopgConnector(conninfo=dsn, min_size=1, max_size=self._pool())
        app = procrastinate.App(connector=connector)

        return app, app.task(name="bench_noop", queue=QUEUE)(_noop)

    async def _defer(self, task: Any, payloads: list[dict[str, Any]]) -> None:
        for start in range(0, len(payloads), CHUNK):
            await task.batch_defer_async(*payloads[start : start + CHUNK])

    async def drain(self, dsn: str, n: int, cap: float) -> Outcome:
        app, task = self._app(dsn)
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            await self._defer(task, [{} for _ in range(n)])
            worker: list[asyncio.Task[Any]] = []

            async def start() -> None:
                worker.append(
                    asyncio.get_running_loop().create_task(
                        app.run_worker_async(
                            queues=[QUEUE],
                            concurrency=self.concurrency,
                            install_signal_handlers=False,
                            listen_notify=True,
                        )
                    )
                )

            async def stop() -> None:
                for task in worker:
                    await stop_task(task, self.name)

            return await timed_drain(dsn, n, cap, TABLES, start, stop)

    async def enqueue(self, dsn: str, n: int) -> Outcome:
        app, task = self._app(dsn)
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            payloads = [{"i": i} for i in range(n)]
            return await timed_enqueue(dsn, n, TABLES, lambda: self._defer(task, payloads))


PEER = Procrastinate()
