"""Handlers on a Dask cluster (issue #17, item 3): ``dask=client`` and ``pgq-nb worker --dask``.

A real ``distributed.LocalCluster`` of two worker processes (started once for the module),
the real Postgres of the fixtures. Without dask.distributed the module skips, except under
CI=true, where it fails.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pgq_nb
from pgq_nb import executors, runtime
from tests.conftest import (
    APPS,
    DASK_MISSING,
    SCHEMA,
    start_worker_process,
    stop_processes,
    unavailable,
)

try:
    import dask
    import distributed
except ImportError as exc:  # pragma: no cover (CI installs the dev extra)
    unavailable(DASK_MISSING.format(exc), module_level=True)

Client: Any = distributed.Client  # (untyped)
LocalCluster: Any = distributed.LocalCluster

QUICK_RETRY = pgq_nb.RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.1)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """Two Dask worker processes of one thread each. ``allowed-failures`` 0: a task whose
    worker dies fails with KilledWorker at once (Dask's default reruns it up to 3 times
    first), so the queue's own retry is what the tests see."""
    sys.path.insert(0, str(APPS))  # the spawned Dask workers start with this sys.path
    try:
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            local = LocalCluster(
                n_workers=2, processes=True, threads_per_worker=1, dashboard_address="127.0.0.1:0"
            )
        try:
            yield local
        finally:
            local.close()
    finally:
        sys.path.remove(str(APPS))


@pytest.fixture
def client(cluster: Any) -> Iterator[Any]:
    with Client(cluster, set_as_default=False) as c:
        c.wait_for_workers(2, timeout=60)
        yield c


def _picked(q: pgq_nb.Queue) -> int:
    async def run() -> int:
        n: int = await q.aio.pool.fetchval(
            f"SELECT count(*) FROM {SCHEMA}.jobs WHERE status = 'picked'"
        )
        return n

    return runtime.run_sync(run())


def test_cell_defined_handlers_run_on_the_dask_workers(
    q: pgq_nb.Queue, cluster: Any, client: Any
) -> None:
    factor = 3

    def times(job: pgq_nb.Job) -> dict[str, Any]:  # a closure, as a cell would define
        return {
            "pid": os.getpid(),
            "dask_worker": distributed.get_worker().address,
            "value": job.data["x"] * factor,
        }

    q.entrypoint("times")(times)
    ids = q.enqueue(["times"] * 8, [{"x": i} for i in range(8)])
    stats = q.run_until_idle(dask=client)
    assert stats.succeeded == 8 and stats.failed == 0
    results = [q.get_job(i).result for i in ids]
    assert [r["value"] for r in results] == [i * 3 for i in range(8)]
    assert os.getpid() not in {r["pid"] for r in results}
    assert {r["dask_worker"] for r in results} <= set(cluster.scheduler_info["workers"])
    assert _picked(q) == 0


def test_a_failing_handler_is_retried_per_its_policy(q: pgq_nb.Queue, client: Any) -> None:
    @q.entrypoint("flaky", retry=QUICK_RETRY)
    def flaky(job: pgq_nb.Job) -> int:
        if job.attempts < 3:
            raise ValueError(f"attempt {job.attempts} fails")
        return job.attempts

    @q.entrypoint("broken", retry=pgq_nb.RetryPolicy(max_attempts=2, base_delay=0.05))
    def broken(job: pgq_nb.Job) -> None:
        raise KeyError("always")

    good, bad = q.enqueue("flaky"), q.enqueue("broken")
    q.run_until_idle(dask=client)
    assert q.get_job(good).status is pgq_nb.JobStatus.SUCCEEDED
    assert q.get_job(good).result == 3 and q.get_job(good).attempts == 3
    failed = q.get_job(bad)
    assert failed.status is pgq_nb.JobStatus.FAILED and failed.attempts == 2
    assert failed.error is not None and failed.error.startswith("KeyError"), failed.error


def test_a_dask_worker_killed_mid_job_means_a_retried_attempt_not_a_lost_job(
    q: pgq_nb.Queue, client: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "killed-once"

    @q.entrypoint("fragile", retry=QUICK_RETRY)
    def fragile(job: pgq_nb.Job) -> int:
        try:  # the first attempt to get here kills its Dask worker's process
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return os.getpid()
        os.write(fd, str(job.id).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)
        return -1  # never

    ids = q.enqueue(["fragile"] * 4)
    q.run_until_idle(dask=client, timeout=120)
    assert set(q.statuses(ids).values()) == {pgq_nb.JobStatus.SUCCEEDED}
    killer = q.get_job(int(marker.read_text()))
    assert killer.attempts == 2, killer.errors  # its attempt was lost with its worker, retried
    assert killer.errors and "DaskWorkerLost" in str(killer.errors[0]), killer.errors
    for info in map(q.get_job, ids):  # (attempts queued on that Dask worker are lost too)
        assert info.attempts == 1 or "DaskWorkerLost" in str(info.errors), info.errors
        assert info.result != -1

    async def finished() -> int:
        n: int = await q.aio.pool.fetchval(
            f"SELECT count(*) FROM {SCHEMA}.history WHERE id = ANY($1::bigint[])", ids
        )
        return n

    assert runtime.run_sync(finished()) == 4  # each finished exactly once
    assert _picked(q) == 0
    client.wait_for_workers(2, timeout=60)  # its nanny restarts it, for the next tests


def test_a_timeout_ends_the_attempt_and_says_dask_does_not_interrupt(
    q: pgq_nb.Queue, client: Any
) -> None:
    @q.entrypoint("slow", timeout=0.5, retry=pgq_nb.RetryPolicy(max_attempts=1))
    def slow(job: pgq_nb.Job) -> None:
        time.sleep(2)

    job_id = q.enqueue("slow")
    q.run_until_idle(dask=client)
    info = q.get_job(job_id)
    assert info.status is pgq_nb.JobStatus.FAILED
    assert info.error is not None and info.error.startswith("JobTimeoutError"), info.error
    assert "does not interrupt a running task" in info.error


def test_workers_say_they_run_on_dask_and_where(q: pgq_nb.Queue, client: Any) -> None:
    from pgq_nb.notebook.dashboard_html import runs_in

    q.entrypoint("noop")(lambda job: None)
    handle = q.start_worker(dask=client)
    try:
        deadline = time.monotonic() + 60
        while not q.worker_list():
            assert time.monotonic() < deadline, "the worker did not register in 60 s"
            time.sleep(0.1)
        (row,) = q.worker_list()
        frame = q.workers()
    finally:
        handle.stop(timeout=60)
    address = client.scheduler.address
    assert (row["executor"], row["scheduler"], row["processes"]) == ("dask", address, 2)
    assert list(frame["executor"]) == ["dask"] and list(frame["scheduler"]) == [address]
    assert runs_in(row) == f"Dask at {address} (2 threads)"
    assert handle.worker.concurrency == 4  # two per Dask thread


def test_pgq_nb_worker_runs_handlers_on_a_remote_scheduler(
    q: pgq_nb.Queue, installed: str, cluster: Any, client: Any
) -> None:
    q.entrypoint("whoami")(lambda job: None)
    ids = q.enqueue(["whoami"] * 6)
    process = start_worker_process(installed, "dask_app:q", "--dask", cluster.scheduler_address)
    try:
        assert set(q.wait(ids, timeout=120).values()) == {"succeeded"}
    finally:
        stop_processes([process])
    assert process.returncode == 0
    results = [q.get_job(i).result for i in ids]
    assert process.pid not in {r["pid"] for r in results}
    assert {r["dask_worker"] for r in results} <= set(cluster.scheduler_info["workers"])
    assert _picked(q) == 0


def test_a_closed_client_is_refused_before_anything_is_claimed(
    q: pgq_nb.Queue, cluster: Any
) -> None:
    q.entrypoint("noop")(lambda job: None)
    job_id = q.enqueue("noop")
    closed = Client(cluster, set_as_default=False)
    closed.close()
    with pytest.raises(pgq_nb.InvalidInputError, match="Dask client is closed"):
        q.run_until_idle(dask=closed)
    with pytest.raises(pgq_nb.InvalidInputError, match=r"must be a distributed\.Client"):
        q.run_until_idle(dask=cluster.scheduler_address)
    assert q.get_job(job_id).status is pgq_nb.JobStatus.QUEUED
    assert _picked(q) == 0


def test_an_unreachable_scheduler_is_a_clear_error() -> None:
    began = time.monotonic()
    with pytest.raises(pgq_nb.InvalidInputError, match="could not reach the Dask scheduler"):
        executors.dask_client("tcp://127.0.0.1:9", timeout=2)
    assert time.monotonic() - began < 60


def test_dask_and_processes_together_are_refused(q: pgq_nb.Queue, client: Any) -> None:
    q.entrypoint("noop")(lambda job: None)
    with pytest.raises(pgq_nb.InvalidInputError, match="dask= or processes=, not both"):
        q.run_until_idle(dask=client, processes=2)


def test_a_handler_that_cannot_be_pickled_is_refused_before_anything_is_claimed(
    q: pgq_nb.Queue, client: Any
) -> None:
    lock = threading.Lock()

    def locked(job: pgq_nb.Job) -> None:
        with lock:
            pass

    q.entrypoint("locked")(locked)
    job_id = q.enqueue("locked")
    with pytest.raises(pgq_nb.UnpicklableHandlerError, match="'lock'"):
        q.run_until_idle(dask=client)
    assert q.get_job(job_id).status is pgq_nb.JobStatus.QUEUED
    assert _picked(q) == 0


def test_a_handler_defined_after_the_start_that_cannot_be_pickled_fails_its_jobs_clearly(
    q: pgq_nb.Queue, client: Any
) -> None:
    handle = q.start_worker(dask=client)
    try:
        lock = threading.Lock()

        @q.entrypoint("later", retry=pgq_nb.RetryPolicy(max_attempts=1))
        def later(job: pgq_nb.Job) -> None:
            with lock:
                pass

        job_id = q.enqueue("later")
        assert q.wait(job_id, timeout=60) == {job_id: "failed"}
    finally:
        handle.stop(timeout=60)
    error = q.get_job(job_id).error
    assert error is not None and error.startswith("UnpicklableHandlerError"), error
    assert "'lock'" in error
