"""processes: CPU-bound handlers on the thread pool vs ``processes=2`` (issue #17).

Four handlers, each run over N queued jobs by a worker that stops when idle, as
``q.run_until_idle()`` does, on today's thread pool (``def`` handlers, concurrency 32) and
with ``processes=2``:

- ``pandas_udf``: a groupby of 36,000 rows into 360 groups with a Python function per group
  (``lambda s: (s * s).sum() / len(s)``: each call builds a Series and runs pandas' Python
  code on 100 values), about 20 ms, holding the GIL;
- ``pandas_builtin``: a groupby (sum, mean, max) of 450,000 rows by a string key, about 20 ms,
  much of it without the GIL, so threads already scale it (the frames are built once per
  process);
- ``python``: a pure-Python loop of about 20 ms;
- ``noop``: nothing, the overhead of running a job in a process, next to the same jobs as
  an ``async def`` no-op on the loop (the drain scenario's handler).

A GIL check first runs each CPU-bound handler in two threads at once against one thread in
this process (100 % = the GIL held throughout, 200 % = two cores), so that the ratios measure
the queue's overhead and not pandas' internals. Each run's clock includes starting the pool's
processes and their first imports (pandas), as a notebook's ``run_until_idle(processes=2)``
pays them. While the pandas jobs run in
processes, the benchmark's own resident memory (the kernel's, in a notebook) is sampled every
100 ms: the row gives its growth from the start to the peak. On a shared machine the rates
move with the other load: read the ratio, not the absolute figures.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any

import pgq_nb
from benchmarks.common import Context, Row, fresh_pgq_nb, log, noop, on_pgq_nb_loop

GROUPBY_ROWS = 450_000
UDF_ROWS = 36_000
LOOP_STEPS = 500_000
_frames: dict[str, Any] = {}


def _frame(kind: str) -> Any:
    """The handler's data, built once per process."""
    if kind not in _frames:
        import numpy as np
        import pandas as pd

        rng = np.random.default_rng(0)
        if kind == "builtin":
            keys = rng.integers(0, 1_000, GROUPBY_ROWS).astype(str)
            _frames[kind] = pd.DataFrame({"k": keys, "v": rng.random(GROUPBY_ROWS)})
        else:
            keys = rng.integers(0, UDF_ROWS // 100, UDF_ROWS)
            _frames[kind] = pd.DataFrame({"k": keys, "v": rng.random(UDF_ROWS)})
    return _frames[kind]


def pandas_udf(job: pgq_nb.Job) -> int:
    """About 20 ms of pandas that holds the GIL: a groupby with a Python function per group,
    as analysts write them (36,000 rows, 360 groups)."""
    frame = _frame("udf")
    return len(frame.groupby("k")["v"].agg(lambda s: (s * s).sum() / len(s)))


def pandas_builtin(job: pgq_nb.Job) -> int:
    """About 20 ms of pandas built-ins: a groupby (sum, mean, max) of 450,000 rows by a string
    key. Much of it runs without the GIL, so threads already use both cores."""
    return len(_frame("builtin").groupby("k")["v"].agg(["sum", "mean", "max"]))


def python_loop(job: pgq_nb.Job) -> int:
    """About 20 ms of pure Python."""
    total = 0
    for i in range(LOOP_STEPS):
        total += i * i % 7
    return total


def sync_noop(job: pgq_nb.Job) -> None:
    return None


_SPIN = "t = 0\nfor i in range(15_000_000):\n    t += i * i % 7"


def _spin(copies: int) -> float:
    """Seconds for ``copies`` interpreters each running the same pure-Python loop at once."""
    began = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", _SPIN]) for _ in range(copies)]
    for p in procs:
        p.wait()
    return time.perf_counter() - began


def machine_check(ctx: Context) -> Row:
    """How much of two cores this shared machine gave us just now: two loops at once vs one."""
    row = Row(
        scenario="machine check: work done by 2 CPU-bound processes at once, vs 1 alone",
        unit="%",
        higher_is_better=True,
        target="200 % = two free cores",
    )
    for _ in range(ctx.sizes.repeats):
        row.pgq_nb.append(200 * _spin(1) / _spin(2))
    row.note = f"load average {os.getloadavg()[0]:.1f} at the end; other users share the cores"
    return row


def _calls(handler: Any, n: int) -> None:
    for _ in range(n):
        handler(None)


def gil_check(ctx: Context, name: str, handler: Any, n: int = 50) -> Row:
    """Is ``handler``'s time Python holding the GIL? Two threads calling it n times each, vs
    one thread calling it n times, in this process: 100 % = the GIL held throughout (threads
    cannot help, processes can), 200 % = two cores used (threads already scale it)."""
    row = Row(
        scenario=f"{name} handler: work done by 2 threads at once, vs 1 (GIL check)",
        unit="%",
        higher_is_better=False,
        target="100 % = holds the GIL",
    )
    handler(None)  # its data built, its imports done
    for _ in range(ctx.sizes.repeats):
        began = time.perf_counter()
        _calls(handler, n)
        one = time.perf_counter() - began
        threads = [threading.Thread(target=_calls, args=(handler, n)) for _ in range(2)]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        row.pgq_nb.append(200 * one / (time.perf_counter() - began))
    row.note = f"{1000 * one / n:.1f} ms a call alone; load average {os.getloadavg()[0]:.1f}"
    return row


def _resident_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class _Sampler:
    """The resident memory of this process every 100 ms, in a thread."""

    def __init__(self) -> None:
        self.samples = [_resident_mb()]
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.1):
            self.samples.append(_resident_mb())

    def stop(self) -> list[float]:
        self._done.set()
        self._thread.join()
        self.samples.append(_resident_mb())
        return self.samples


def _drain(ctx: Context, name: str, handler: Any, n: int, processes: int | None) -> float:
    """Jobs/s of one worker emptying ``n`` queued jobs of ``handler``."""
    with fresh_pgq_nb(ctx.dsn, ctx.schema(f"proc_{name}", processes or 0)) as q:
        q.entrypoint(name)(handler)
        for start in range(0, n, 10_000):
            k = min(10_000, n - start)
            q.enqueue([name] * k)
        worker = pgq_nb.Worker(q.aio, stop_when_idle=True, processes=processes)
        began = time.perf_counter()
        stats = on_pgq_nb_loop(worker.run())
        elapsed = time.perf_counter() - began
    if stats.succeeded != n:
        raise RuntimeError(f"processes scenario {name}: {stats.succeeded} of {n} succeeded")
    return n / elapsed


def _compare(ctx: Context, name: str, handler: Any, n: int, target: str = ">= 1.8x") -> Row:
    row = Row(
        scenario=f"{name} handler, {n:,} jobs: processes=2 vs threads",
        unit="jobs/s",
        higher_is_better=True,
        target=target,
    )
    threads: list[float] = []
    for repeat in range(ctx.sizes.repeats):
        rate_threads = _drain(ctx, name, handler, n, None)
        rate_processes = _drain(ctx, name, handler, n, 2)
        threads.append(rate_threads)
        row.pgq_nb.append(rate_processes)
        log(
            f"  {name:14s} repeat {repeat + 1}  threads {rate_threads:9,.0f} jobs/s  "
            f"processes=2 {rate_processes:9,.0f} jobs/s"
        )
    median_threads = sorted(threads)[len(threads) // 2]
    median_processes = row.pgq_nb_median or 0.0
    row.ratio = median_processes / median_threads
    row.note = (
        f"processes=2 {median_processes:,.0f} jobs/s vs the thread pool {median_threads:,.0f} "
        "jobs/s (ratio = processes / threads; pool start-up included)"
    )
    return row


def _overhead(ctx: Context, n: int) -> Row:
    """No-op jobs in processes next to the same jobs as async no-ops on the loop."""
    row = Row(
        scenario=f"no-op jobs, {n:,}: processes=2 vs async def on the loop (the drain)",
        unit="jobs/s",
        higher_is_better=True,
    )
    on_loop: list[float] = []
    for _ in range(ctx.sizes.repeats):
        on_loop.append(_drain(ctx, "async_noop", noop, n, None))
        row.pgq_nb.append(_drain(ctx, "noop", sync_noop, n, 2))
        log(f"  no-op   on the loop {on_loop[-1]:9,.0f} jobs/s  processes=2 {row.pgq_nb[-1]:9,.0f}")
    loop_rate = sorted(on_loop)[len(on_loop) // 2]
    proc_rate = row.pgq_nb_median or 0.0
    row.ratio = proc_rate / loop_rate
    row.note = (
        f"in processes {proc_rate:,.0f} jobs/s ({1000 / proc_rate:.2f} ms a job) vs on the "
        f"loop {loop_rate:,.0f} jobs/s ({1000 / loop_rate:.2f} ms a job)"
    )
    return row


def _memory(ctx: Context, n: int) -> Row:
    sampler = _Sampler()
    _drain(ctx, "pandas_mem", pandas_udf, n, 2)
    samples = sampler.stop()
    growth = max(samples) - samples[0]
    return Row(
        scenario=f"the kernel's resident memory while {n:,} pandas jobs run in processes",
        unit="MB",
        higher_is_better=False,
        pgq_nb=[growth],
        note=(
            f"growth from {samples[0]:.0f} MB to a peak of {max(samples):.0f} MB, "
            f"{samples[-1]:.0f} MB at the end ({len(samples)} samples, pid {os.getpid()})"
        ),
    )


def run(ctx: Context) -> list[Row]:
    n = 500 if ctx.sizes.quick else 2_000
    return [
        machine_check(ctx),
        gil_check(ctx, "pandas_udf", pandas_udf),
        gil_check(ctx, "pandas_builtin", pandas_builtin),
        gil_check(ctx, "python", python_loop),
        _compare(ctx, "pandas_udf", pandas_udf, n),
        _compare(ctx, "pandas_builtin", pandas_builtin, n, target=""),
        _compare(ctx, "python", python_loop, n),
        _overhead(ctx, n),
        _memory(ctx, n),
    ]
