"""Snooze (issue #21, item 2) from a handler on a Dask cluster: a real ``LocalCluster`` of one
worker process, the real Postgres of the fixtures. Skips without dask.distributed, as
tests/test_dask_executor.py does."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

import pgq_nb
from pgq_nb import runtime
from tests.conftest import DASK_MISSING, SCHEMA, unavailable

try:
    import distributed
except ImportError as exc:  # pragma: no cover (CI installs the dev extra)
    unavailable(DASK_MISSING.format(exc), module_level=True)

Client: Any = distributed.Client  # (untyped)
LocalCluster: Any = distributed.LocalCluster


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    cluster: Any = LocalCluster(
        n_workers=1, processes=True, threads_per_worker=1, dashboard_address="127.0.0.1:0"
    )
    try:
        with Client(cluster, set_as_default=False) as c:
            c.wait_for_workers(1, timeout=60)
            yield c
    finally:
        cluster.close()


def test_a_handler_on_dask_snoozes(q: pgq_nb.Queue, client: Any) -> None:
    def twice(job: pgq_nb.Job) -> dict[str, int]:  # a closure, as a cell would define
        if job.snoozes < 2:
            raise pgq_nb.Snooze(0.05)
        return {"pid": os.getpid(), "snoozes": job.snoozes}

    q.entrypoint("remote")(twice)
    job_id = q.enqueue("remote")
    stats = q.run_until_idle(dask=client, timeout=180)
    assert (stats.snoozed, stats.succeeded, stats.failed) == (2, 1, 0)

    async def row() -> Any:
        return await q.aio.pool.fetchrow(
            f"SELECT status, attempts, snoozes, errors FROM {SCHEMA}.history WHERE id = $1", job_id
        )

    found = runtime.run_sync(row())
    assert tuple(found) == ("succeeded", 1, 2, None)
    assert q.get_job(job_id).result["pid"] != os.getpid()
