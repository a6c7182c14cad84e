"""Several attempts per Dask task (issue #17): short attempts of one entrypoint go to Dask in
chunks, each attempt's outcome still its own.

The sizing is pure logic (table tests); the rest runs on a real ``distributed.LocalCluster``
of two worker processes (``allowed-failures`` 0: a task whose worker dies fails at once with
KilledWorker) whose scheduler, in this process, counts the keys of each graph it gets, and
the real Postgres of the fixtures.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pgq_nb
from pgq_nb import runtime
from pgq_nb.dask_chunks import MAX_CHUNK, RECENT_S, TARGET_S, Durations, chunk_size, split
from tests.conftest import SCHEMA

try:
    import dask
    import distributed
except ImportError as exc:  # pragma: no cover (CI installs the dev extra)
    reason = f"dask.distributed is not installed ({exc}): pip install 'pgq_nb[dask]'"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true, so this fails instead of skipping", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

QUICK_RETRY = pgq_nb.RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.1)


@pytest.mark.parametrize(
    ("mean_s", "size"),
    [
        (None, 1),  # not measured yet: one attempt per task, as before chunks
        (60.0, 1),  # long attempts: alone
        (TARGET_S, 1),
        (TARGET_S / 2 + 0.001, 1),  # more than half the target: alone
        (TARGET_S / 2, 2),
        (0.02, 10),  # the benchmark's 20 ms handlers: about 0.2 s a task
        (0.0, MAX_CHUNK),  # no-ops: capped
        (1e-6, MAX_CHUNK),
    ],
)
def test_chunk_sizes_aim_at_a_fifth_of_a_second_of_work(mean_s: float | None, size: int) -> None:
    assert chunk_size(mean_s) == size


def test_durations_are_per_entrypoint_and_recent() -> None:
    durations = Durations()
    assert durations.chunk_size("a") == 1 and durations.largest() == 1
    for _ in range(40):
        durations.add("a", 0.02)
    durations.add("b", 5.0)
    assert (durations.chunk_size("a"), durations.chunk_size("b"), durations.largest()) == (
        10,
        1,
        10,
    )
    for _ in range(40):  # the entrypoint got slow: its recent attempts decide
        durations.add("a", 1.0)
    assert durations.chunk_size("a") == 1


def test_only_entrypoints_that_ran_lately_deepen_the_claims() -> None:
    durations = Durations()
    durations.add("short", 0.001, now=100.0)
    durations.add("long", 30.0, now=100.0)
    assert durations.largest(now=100.0 + RECENT_S) == MAX_CHUNK
    # no short attempt for a while: the long ones claim as deep as before chunks
    assert durations.largest(now=100.1 + RECENT_S) == 1


@pytest.mark.parametrize(
    ("count", "size", "sizes"),
    [
        (0, 4, []),
        (1, 4, [1]),
        (8, 3, [3, 3, 2]),
        (8, 1, [1] * 8),
        (10, 32, [10]),
        (33, 32, [17, 16]),
    ],
)
def test_split_makes_even_chunks(count: int, size: int, sizes: list[int]) -> None:
    chunks = split(list(range(count)), size)
    assert [len(c) for c in chunks] == sizes
    assert [i for c in chunks for i in c] == list(range(count))


class Keys(distributed.diagnostics.plugin.SchedulerPlugin):
    """The keys of each graph the scheduler is given."""

    def __init__(self) -> None:
        self.graphs: list[list[str]] = []

    def update_graph(self, scheduler: Any, *, keys: Any, **kwargs: Any) -> None:
        self.graphs.append(sorted(map(str, keys)))

    @property
    def keys(self) -> list[str]:
        return [k for graph in self.graphs for k in graph]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    make: Any = distributed.LocalCluster
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        local = make(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address="127.0.0.1:0"
        )
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


@pytest.fixture
def keys(cluster: Any) -> Iterator[Keys]:
    plugin = Keys()
    cluster.scheduler.add_plugin(plugin, name="pgq_nb-keys")
    try:
        yield plugin
    finally:
        cluster.scheduler.remove_plugin(name="pgq_nb-keys")


def _in_history(q: pgq_nb.Queue, ids: list[int]) -> int:
    async def run() -> int:
        n: int = await q.aio.pool.fetchval(
            f"SELECT count(*) FROM {SCHEMA}.history WHERE id = ANY($1::bigint[])", ids
        )
        return n

    return runtime.run_sync(run())


def _wait_for(condition: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout:g} s"
        time.sleep(0.05)


def test_short_jobs_become_fewer_tasks_than_jobs_each_with_its_own_outcome(
    q: pgq_nb.Queue, client: Any, keys: Keys
) -> None:
    def odd_fails(job: pgq_nb.Job) -> int:
        if job.data % 2:
            raise ValueError(f"{job.data} is odd")
        return int(job.data) * 10

    q.entrypoint("odd_fails", retry=pgq_nb.RetryPolicy(max_attempts=1))(odd_fails)
    ids = q.enqueue(["odd_fails"] * 20, list(range(20)))
    stats = q.run_until_idle(dask=client)
    assert stats.succeeded == 10 and stats.failed == 10
    assert len(keys.keys) < 20, keys.graphs  # before chunks: one task per job, 20
    assert any(k.startswith("pgq_nb-chunk") for k in keys.keys), keys.graphs
    infos = [q.get_job(i) for i in ids]
    assert [i.result for i in infos[::2]] == [n * 10 for n in range(0, 20, 2)]
    assert [i.error for i in infos[1::2]] == [f"ValueError: {n} is odd" for n in range(1, 20, 2)]
    for info in infos[1::2]:  # where it failed on the Dask worker, even in a chunk
        assert info.traceback is not None and "in odd_fails" in info.traceback, info.traceback
    assert _in_history(q, ids) == 20


def test_jobs_with_a_timeout_are_never_chunked(q: pgq_nb.Queue, client: Any, keys: Keys) -> None:
    q.entrypoint("timed", timeout=60)(lambda job: job.data)
    ids = q.enqueue(["timed"] * 20, list(range(20)))
    stats = q.run_until_idle(dask=client)
    assert stats.succeeded == 20
    assert len(keys.keys) == 20 and not any("chunk" in k for k in keys.keys), keys.graphs
    assert [q.get_job(i).result for i in ids] == list(range(20))


def _warm(q: pgq_nb.Queue, name: str) -> None:
    """Short attempts of ``name`` measured, so its next attempts go in chunks."""
    ids = q.enqueue([name] * 8, ["warm"] * 8)
    assert set(q.wait(ids, timeout=120).values()) == {"succeeded"}


def test_a_cancel_ends_one_attempt_of_a_chunk_and_the_others_finish(
    q: pgq_nb.Queue, client: Any, keys: Keys, tmp_path: Path
) -> None:
    gate, started = tmp_path / "gate", tmp_path / "started"

    def gated(job: pgq_nb.Job) -> str:
        if job.data == "block":  # the chunk's first attempt waits for the test
            started.touch()
            deadline = time.monotonic() + 120
            while not gate.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        return f"{job.data} done"

    q.entrypoint("gated", retry=pgq_nb.RetryPolicy(max_attempts=1))(gated)
    handle = q.start_worker(dask=client)
    try:
        _warm(q, "gated")
        block, cancelled, other = q.enqueue(["gated"] * 3, ["block", "cancel me", "other"])
        _wait_for(started.exists, "the chunk started")
        assert any(k.startswith("pgq_nb-chunk3-") for k in keys.keys), keys.graphs
        assert q.cancel(cancelled) == {cancelled: "cancelling"}
        # its attempt ends at once in the queue, while its chunk still runs
        assert q.wait([cancelled], timeout=60) == {cancelled: "cancelled"}
        assert not gate.exists() and q.get_job(block).status is pgq_nb.JobStatus.PICKED
        gate.touch()
        assert q.wait([block, other], timeout=120) == {block: "succeeded", other: "succeeded"}
    finally:
        gate.touch()
        handle.stop(timeout=60)
    assert q.get_job(block).result == "block done" and q.get_job(other).result == "other done"
    info = q.get_job(cancelled)  # the chunk's later outcome for it was dropped
    assert info.status is pgq_nb.JobStatus.CANCELLED and info.result is None
    assert info.error == "cancelled while running"
    assert _in_history(q, [block, cancelled, other]) == 3


def test_a_dask_worker_lost_mid_chunk_loses_every_attempt_of_it_each_retried(
    q: pgq_nb.Queue, client: Any, keys: Keys, tmp_path: Path
) -> None:
    marker = tmp_path / "killed-once"

    def fragile(job: pgq_nb.Job) -> int:
        if job.data == "kill":
            try:  # the first attempt to get here kills its Dask worker's process
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return os.getpid()
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)
        return os.getpid()

    q.entrypoint("fragile", retry=QUICK_RETRY)(fragile)
    handle = q.start_worker(dask=client)
    try:
        _warm(q, "fragile")
        ids = q.enqueue(["fragile"] * 3, ["kill", "after", "after"])
        assert set(q.wait(ids, timeout=120).values()) == {"succeeded"}
    finally:
        handle.stop(timeout=60)
    assert marker.exists()
    assert any(k.startswith("pgq_nb-chunk3-") for k in keys.keys), keys.graphs
    for info in map(q.get_job, ids):  # the chunk shared its worker's fate: each retried
        assert info.attempts == 2, info.errors
        assert info.errors and "DaskWorkerLost" in str(info.errors[0]), info.errors
    assert _in_history(q, ids) == 3  # each finished exactly once
    client.wait_for_workers(2, timeout=60)  # its nanny restarts it, for the next tests
