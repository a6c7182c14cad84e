"""pgq_nb's own features, measured (no PgQueuer side):

    python -m benchmarks.features [--dsn DSN] [--quick]

- flow control: drain rate of no-op jobs with no limit, with `max_running`, with a
  `rate_limit` far above the drain rate (the cost of the bucket), and with a local
  `concurrency` cap; each as a ratio to no limit;
- workflow scale: one extract step, a 10,000-row map and a fan-in: time to submit, time to
  finish with the default worker, and the delay from the last map step's end to the fan-in
  step's start;
- cron: an every-second schedule for a minute with an idle worker: how late each tick's handler
  starts after its fire time (median and worst).

Uses the embedded Postgres unless --dsn (or PGQ_NB_DSN) names another; a schema of its own.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import pgq_nb

SCHEMA = "pgq_nb_bench_features"


def _fresh(dsn: str | None) -> pgq_nb.Queue:
    q = pgq_nb.connect(dsn, schema=SCHEMA)
    q.uninstall()
    q.install()
    return pgq_nb.connect(dsn, schema=SCHEMA)


def _drain(dsn: str | None, jobs: int, register: Callable[[pgq_nb.Queue], None]) -> float:
    q = _fresh(dsn)
    register(q)
    q.enqueue(["work"] * jobs)
    began = time.perf_counter()
    stats = q.run_until_idle(concurrency=64, wait_for_scheduled=0)
    assert stats.succeeded == jobs, stats
    return jobs / (time.perf_counter() - began)


async def _noop(job: pgq_nb.Job) -> None:
    return None


def flow_control(dsn: str | None, jobs: int) -> list[tuple[str, float]]:
    variants: dict[str, dict[str, Any]] = {
        "no limit": {},
        "max_running=32 (slots shared by all workers)": {"max_running": 32},
        "rate_limit=1000000/s (bucket, never empty)": {"rate_limit": "1000000/s"},
        "concurrency=32 (this process only)": {"concurrency": 32},
    }
    rates = []
    for name, kwargs in variants.items():
        rate = _drain(dsn, jobs, lambda q, kw=kwargs: q.entrypoint("work", **kw)(_noop))  # type: ignore[misc]
        rates.append((name, rate))
        print(f"  {name:48s} {rate:10,.0f} jobs/s")
    return rates


def workflow_scale(dsn: str | None, rows: int) -> dict[str, float]:
    q = _fresh(dsn)
    parents_done: list[float] = []
    child_start: list[float] = []

    @q.entrypoint("extract")
    async def extract(job: pgq_nb.Job) -> int:
        return rows

    @q.entrypoint("transform")
    async def transform(job: pgq_nb.Job) -> int:
        value = int(job.data) * 2
        parents_done.append(time.perf_counter())
        return value

    @q.entrypoint("total")
    async def total(job: pgq_nb.Job) -> int:
        child_start.append(time.perf_counter())
        return sum(job.parent_results()["transform"])

    began = time.perf_counter()
    wf = q.workflow("scale")
    raw = wf.step("extract")
    parts = wf.map("transform", range(rows), depends_on=raw)
    wf.step("total", depends_on=parts)
    run = wf.submit()
    submitted = time.perf_counter()
    q.run_until_idle(wait_for_scheduled=0)
    finished = time.perf_counter()
    assert run.state() == "succeeded"
    assert run.results()["total"] == 2 * sum(range(rows))
    figures = {
        "submit_s": submitted - began,
        "finish_s": finished - submitted,
        "fan_in_delay_ms": (child_start[0] - max(parents_done)) * 1000,
    }
    for key, value in figures.items():
        print(f"  {key:20s} {value:10.3f}")
    return figures


def cron_lateness(dsn: str | None, seconds: float) -> dict[str, float]:
    q = _fresh(dsn)
    late: list[float] = []

    @q.schedule("every_second", "* * * * * *")
    async def every_second(schedule: pgq_nb.Schedule) -> None:
        late.append(time.time() - schedule.fire_time.timestamp())

    handle = q.start_worker()
    try:
        time.sleep(seconds)
    finally:
        handle.stop(timeout=30)
    figures = {
        "ticks": float(len(late)),
        "median_ms": statistics.median(late) * 1000,
        "worst_ms": max(late) * 1000,
    }
    print(
        f"  {len(late)} ticks: median {figures['median_ms']:.1f} ms, "
        f"worst {figures['worst_ms']:.1f} ms"
    )
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="pgq_nb feature benchmarks")
    parser.add_argument("--dsn", default=None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, 15 s of cron")
    args = parser.parse_args(argv)
    jobs = 10_000 if args.quick else 30_000
    print(f"flow control: drain of {jobs:,} no-op jobs, concurrency 64")
    rates = flow_control(args.dsn, jobs)
    base = rates[0][1]
    for name, rate in rates[1:]:
        print(f"  {name:48s} {rate / base:10.2f}x of no limit")
    rows = 2_000 if args.quick else 10_000
    print(f"workflow: extract -> {rows:,}-row map -> fan-in")
    workflow_scale(args.dsn, rows)
    seconds = 15.0 if args.quick else 60.0
    print(f"cron: every-second schedule for {seconds:g} s, idle worker")
    cron_lateness(args.dsn, seconds)
    pgq_nb.connect(args.dsn, schema=SCHEMA).uninstall()


if __name__ == "__main__":
    main()
