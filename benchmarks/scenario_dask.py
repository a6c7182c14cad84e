"""dask: CPU-bound handlers on a Dask ``LocalCluster`` of 2 worker processes vs the thread
pool (issue #17, item 3).

The handlers of the processes scenario (:mod:`benchmarks.scenario_processes`): a pandas
groupby with a Python function per group (about 20 ms, holding the GIL) and a 20 ms
pure-Python loop, each run over N queued jobs by a worker that stops when idle, on today's
thread pool (concurrency 32) and with ``dask=client`` (a ``LocalCluster(n_workers=2,
processes=True, threads_per_worker=1)``; concurrency 4, two per Dask thread). The cluster is
started once, before the clock (an analyst starts it once per session; its start is in the
note); each run's clock includes the Dask workers' first imports of pandas. Beside each row,
Dask alone, twice: ``client.map`` of the same handler over N calls at once, no queue; and the
same N calls sent as a queue has to send them, 4 in flight and the next one submitted as one
ends (a queue sends a job when a slot frees, not the whole backlog), the ceiling of what the
queue on Dask can reach on this machine at that depth. On a shared machine the rates move
with the other load: read the ratio, not the absolute figures.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pgq_nb
from benchmarks.common import Context, Row, fresh_pgq_nb, log, on_pgq_nb_loop
from benchmarks.scenario_processes import machine_check, pandas_udf, python_loop

#: Calls in flight for Dask alone "as they end": the worker's default concurrency on Dask
#: (two per Dask thread, 2 threads).
DEPTH = 4


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _drain(ctx: Context, name: str, handler: Any, n: int, client: Any) -> float:
    """Jobs/s of one worker emptying ``n`` queued jobs of ``handler`` (on Dask with a client)."""
    with fresh_pgq_nb(ctx.dsn, ctx.schema(f"dask_{name}", 0 if client is None else 1)) as q:
        q.entrypoint(name)(handler)
        for start in range(0, n, 10_000):
            q.enqueue([name] * min(10_000, n - start))
        worker = pgq_nb.Worker(q.aio, stop_when_idle=True, dask=client)
        began = time.perf_counter()
        stats = on_pgq_nb_loop(worker.run())
        elapsed = time.perf_counter() - began
    if stats.succeeded != n:
        raise RuntimeError(f"dask scenario {name}: {stats.succeeded} of {n} succeeded")
    return n / elapsed


def _bare(handler: Any, n: int, client: Any) -> tuple[float, float]:
    """Dask alone, without the queue: jobs/s of ``client.map`` of ``handler`` over ``n``
    calls, and the CPU milliseconds this process (client and scheduler) spent per call."""
    began, cpu = time.perf_counter(), time.process_time()
    client.gather(client.map(handler, [None] * n, pure=False))
    elapsed = time.perf_counter() - began
    return n / elapsed, 1000 * (time.process_time() - cpu) / n


def _bare_as_they_end(handler: Any, n: int, client: Any, depth: int) -> float:
    """Dask alone as a queue has to use it: ``depth`` calls in flight, the next one submitted
    as one ends (no queue, no database); calls/s."""
    lock = threading.Lock()
    finished = threading.Event()
    counts = {"sent": 0, "ended": 0}
    errors: list[BaseException] = []

    def send() -> None:
        client.submit(handler, None, pure=False).add_done_callback(ended)

    def ended(future: Any) -> None:
        try:
            future.result()
        except BaseException as exc:  # (reported below)
            errors.append(exc)
        with lock:
            counts["ended"] += 1
            more = counts["sent"] < n
            if more:
                counts["sent"] += 1
            elif counts["ended"] == n:
                finished.set()
        if more:
            try:
                send()
            except BaseException as exc:  # (the client closed meanwhile: end, reported below)
                errors.append(exc)
                finished.set()

    began = time.perf_counter()
    with lock:
        counts["sent"] = min(depth, n)
    for _ in range(min(depth, n)):
        send()
    finished.wait()
    if errors:
        raise RuntimeError(f"dask scenario: {len(errors)} calls failed: {errors[0]!r}")
    return n / (time.perf_counter() - began)


def _compare(ctx: Context, name: str, handler: Any, n: int, client: Any, start_s: float) -> Row:
    row = Row(
        scenario=f"{name} handler, {n:,} jobs: Dask LocalCluster (2 worker processes) vs threads",
        unit="jobs/s",
        higher_is_better=True,
        target=">= 1.6x",
    )
    threads: list[float] = []
    bare: list[tuple[float, float]] = []
    as_they_end: list[float] = []
    for repeat in range(ctx.sizes.repeats):
        rate_threads = _drain(ctx, name, handler, n, None)
        rate_dask = _drain(ctx, name, handler, n, client)
        bare.append(_bare(handler, n, client))
        as_they_end.append(_bare_as_they_end(handler, n, client, DEPTH))
        threads.append(rate_threads)
        row.pgq_nb.append(rate_dask)
        log(
            f"  {name:12s} repeat {repeat + 1}  threads {rate_threads:9,.0f} jobs/s  "
            f"dask {rate_dask:9,.0f} jobs/s  bare client.map {bare[-1][0]:9,.0f} calls/s "
            f"({bare[-1][1]:.2f} ms CPU here per call)  as they end {as_they_end[-1]:9,.0f}"
        )
    median_threads = sorted(threads)[len(threads) // 2]
    median_dask = row.pgq_nb_median or 0.0
    bare_rate, bare_cpu = sorted(bare)[len(bare) // 2]
    row.ratio = median_dask / median_threads
    row.note = (
        f"Dask {median_dask:,.0f} jobs/s vs the thread pool {median_threads:,.0f} jobs/s "
        f"(ratio = dask / threads; the cluster started in {start_s:.1f} s, before the clock); "
        f"Dask alone (client.map of the handler, no queue) {bare_rate:,.0f} calls/s = "
        f"{bare_rate / median_threads:.2f}x, {bare_cpu:.2f} ms CPU of this process a call; "
        f"Dask alone with {DEPTH} calls in flight, the next sent as one ends (as a queue must: "
        f"it sends a job when a slot frees) {median(as_they_end):,.0f} calls/s = "
        f"{median(as_they_end) / median_threads:.2f}x; "
        f"load average {os.getloadavg()[0]:.1f} at the end"
    )
    return row


def run(ctx: Context) -> list[Row]:
    try:
        import distributed
    except ImportError as exc:
        raise RuntimeError(f"the dask scenario needs pip install 'pgq_nb[dask]' ({exc})") from None
    n = 500 if ctx.sizes.quick else 2_000
    began = time.perf_counter()
    make_cluster: Any = distributed.LocalCluster
    make_client: Any = distributed.Client
    with (
        make_cluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address="127.0.0.1:0"
        ) as cluster,
        make_client(cluster, set_as_default=False) as client,
    ):
        client.wait_for_workers(2, timeout=120)
        start_s = time.perf_counter() - began
        return [
            machine_check(ctx),
            _compare(ctx, "pandas_udf", pandas_udf, n, client, start_s),
            _compare(ctx, "python", python_loop, n, client, start_s),
        ]
