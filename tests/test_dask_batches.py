"""Attempts on Dask in batches (issue #17): the attempts a worker starts together go to the
scheduler in one message, and each still ends on its own (a failing one fails alone).

A real ``distributed.LocalCluster`` of two worker processes, its scheduler in this process
(a plugin counts the keys of each graph it gets), and the real Postgres of the fixtures.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import pgq_nb
from tests.conftest import DASK_MISSING, unavailable

try:
    import distributed
except ImportError as exc:  # pragma: no cover (CI installs the dev extra)
    unavailable(DASK_MISSING.format(exc), module_level=True)


class GraphSizes(distributed.diagnostics.plugin.SchedulerPlugin):
    """The number of keys of each graph the scheduler is given."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def update_graph(self, scheduler: Any, *, keys: Any, **kwargs: Any) -> None:
        self.sizes.append(len(keys))


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    make: Any = distributed.LocalCluster
    local = make(n_workers=2, processes=True, threads_per_worker=1, dashboard_address="127.0.0.1:0")
    try:
        yield local
    finally:
        local.close()


@pytest.fixture
def client(cluster: Any) -> Iterator[Any]:
    make: Any = distributed.Client
    with make(cluster, set_as_default=False) as c:
        c.wait_for_workers(2, timeout=60)
        yield c


def test_attempts_started_together_reach_the_scheduler_in_one_graph(
    q: pgq_nb.Queue, cluster: Any, client: Any
) -> None:
    sizes = GraphSizes()
    cluster.scheduler.add_plugin(sizes, name="pgq_nb-graph-sizes")
    try:

        def odd_fails(job: pgq_nb.Job) -> int:
            if job.data % 2:
                raise ValueError(f"{job.data} is odd")
            return int(job.data) * 10

        q.entrypoint("odd_fails", retry=pgq_nb.RetryPolicy(max_attempts=1))(odd_fails)
        ids = q.enqueue(["odd_fails"] * 8, list(range(8)))
        stats = q.run_until_idle(dask=client, concurrency=8)
    finally:
        cluster.scheduler.remove_plugin(name="pgq_nb-graph-sizes")
    assert stats.succeeded == 4 and stats.failed == 4
    assert sum(sizes.sizes) == 8 and max(sizes.sizes) > 1, sizes.sizes  # before: [1] * 8
    infos = [q.get_job(i) for i in ids]
    assert [i.result for i in infos[::2]] == [0, 20, 40, 60]
    assert [i.error for i in infos[1::2]] == [f"ValueError: {n} is odd" for n in (1, 3, 5, 7)]
