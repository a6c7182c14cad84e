"""Enqueue and drain rates of pgq_nb alone, for 50,000 no-op jobs.

    python -m benchmarks.core [--jobs 50000] [--dsn DSN] [--concurrency 32] [--repeats 3]

Uses the embedded Postgres unless --dsn (or PGQ_NB_DSN) names another server; works in a
schema of its own (`pgq_nb_bench`), dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import pgq_nb

SCHEMA = "pgq_nb_bench"


def _one_round(q: pgq_nb.Queue, jobs: int, concurrency: int, batch: int) -> dict[str, float]:
    q.aio.handlers.clear()
    q.entrypoint("noop")(_noop)
    began = time.perf_counter()
    for start in range(0, jobs, batch):
        n = min(batch, jobs - start)
        q.enqueue(["noop"] * n, [None] * n, [0] * n)
    enqueue_s = time.perf_counter() - began
    began = time.perf_counter()
    stats = q.run_until_idle(concurrency=concurrency, wait_for_scheduled=0.0)
    drain_s = time.perf_counter() - began
    assert stats.succeeded == jobs, stats
    return {"enqueue_jobs_per_s": jobs / enqueue_s, "drain_jobs_per_s": jobs / drain_s}


async def _noop(job: pgq_nb.Job) -> None:
    return None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dsn", default=None)
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--enqueue-batch", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)

    q = pgq_nb.connect(args.dsn, schema=SCHEMA)
    rounds = []
    try:
        for _ in range(args.repeats):
            q.uninstall()
            q.install()
            rounds.append(_one_round(q, args.jobs, args.concurrency, args.enqueue_batch))
    finally:
        q.uninstall()
    result = {
        "jobs": args.jobs,
        "concurrency": args.concurrency,
        "enqueue_batch": args.enqueue_batch,
        "rounds": rounds,
        "median": {k: statistics.median(r[k] for r in rounds) for k in rounds[0]},
    }
    print(f"{args.jobs} no-op jobs, {args.repeats} rounds (median):")
    for key, value in result["median"].items():
        print(f"  {key:20s} {value:10,.0f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()
