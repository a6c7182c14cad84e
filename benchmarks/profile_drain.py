"""Where a no-op job's time goes in a drain (issue #22): ``python -m benchmarks.profile_drain``.

Drains N no-op ``async def`` jobs with one worker (``--concurrency``, ``--batch-size``) over
TCP or the unix socket of pgq_nb's embedded server, and reports per job: the wall time, the
CPU time of this process (the worker, its loop and asyncpg) and of the server's processes
(read from ``/proc``, Linux only: the postmaster and its children), then, with ``--profile``,
this process's CPU split by part (cProfile of the loop thread with its CPU clock, the time of
each function in itself, grouped by the module it is in): the statements' encoding and
decoding (asyncpg), the event loop's own work (tasks, callbacks, sockets), the worker's
dispatch and recording, and what is left. cProfile slows Python about twofold: read its
split as shares, the unprofiled run for the totals.

    python -m benchmarks.profile_drain --jobs 30000 --batch-size 128 --concurrency 256
    python -m benchmarks.profile_drain --transport socket --profile

Against an older checkout, run this file with that checkout first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pgq_nb
from benchmarks.common import (
    fresh_pgq_nb,
    noop,
    on_pgq_nb_loop,
    pgq_nb_enqueue_noops,
    pgq_nb_live_empty,
    pgq_nb_succeeded,
    start_pgq_nb_worker,
    stop_pgq_nb_worker,
    wait_until,
)

ENTRYPOINT = "bench_profile"
SCHEMA = "pgq_nb_bench_profile"
TICKS = os.sysconf("SC_CLK_TCK")

#: What each part of the profile is, by the file a function is defined in.
PARTS = (
    # (the abstract-class checks come from asyncpg's array encoding, see pgq_nb.completion)
    ("asyncpg: statements' encoding, decoding, protocol", ("asyncpg", "abc")),
    (
        "event loop: tasks, callbacks, sockets, selector",
        ("asyncio", "selectors", "select.", "_contextvars", "socket"),
    ),
    (
        "worker: claim, dispatch, recording (pgq_nb)",
        (
            "pgq_nb/worker",
            "pgq_nb/claiming",
            "pgq_nb/completion",
            "pgq_nb/models",
            "pgq_nb/encoding",
        ),
    ),
    (
        "handler call: the wrappers and the no-op",
        ("pgq_nb/handler_runs", "pgq_nb/tracing", "benchmarks/common"),
    ),
    ("hooks and metrics", ("pgq_nb/hooks", "pgq_nb/metrics")),
)


def _server_cpu(postmaster: int) -> float:
    """CPU seconds of the postmaster and its children so far (Linux /proc)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        pid, parent = int(entry.name), int(fields[1])
        if pid == postmaster or parent == postmaster:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def _part_of(filename: str) -> str:
    for name, marks in PARTS:
        if any(mark in filename for mark in marks):
            return name
    return "other"


def _split(profile: cProfile.Profile) -> tuple[dict[str, float], list[tuple[float, str]]]:
    """Seconds of the profile by part (each function's own time), and the biggest of what
    falls in no part."""
    parts: dict[str, float] = defaultdict(float)
    others: list[tuple[float, str]] = []
    stats: Any = pstats.Stats(profile)
    for (filename, line, function), row in stats.stats.items():
        where = filename if filename != "~" else function  # built-ins: by their name
        part = _part_of(where)
        parts[part] += row[2]
        if part == "other":
            others.append((row[2], f"{Path(filename).name}:{line} {function}"))
    return dict(parts), sorted(others, reverse=True)[:8]


async def _drain(
    q: pgq_nb.AsyncQueue, n: int, concurrency: int, batch: int, profile: cProfile.Profile | None
) -> tuple[float, float]:
    began = time.perf_counter()
    if profile is not None:
        profile.enable()
    worker, task = start_pgq_nb_worker(q, concurrency=concurrency, batch_size=batch)
    try:
        ended = await wait_until(lambda: pgq_nb_live_empty(q), timeout=600)
    finally:
        if profile is not None:
            profile.disable()
        await stop_pgq_nb_worker(worker, task)
    if await pgq_nb_succeeded(q) != n:
        raise RuntimeError("the drain did not finish every job")
    return began, ended


def run(args: argparse.Namespace) -> None:
    from pgq_nb.embedded import EmbeddedServer

    server = EmbeddedServer()
    server.ensure_running()
    postmaster = int((server.data_dir / "postmaster.pid").read_text().split()[0])
    dsn = server.dsn(tcp=args.transport == "tcp")
    with fresh_pgq_nb(dsn, SCHEMA) as q:
        q.entrypoint(ENTRYPOINT)(noop)
        pgq_nb_enqueue_noops(q, ENTRYPOINT, args.jobs)
        # CPU time of the loop's thread, so the selector's idle waits count nothing
        profile = cProfile.Profile(time.thread_time) if args.profile else None
        cpu, server_cpu = time.process_time(), _server_cpu(postmaster)
        began, ended = on_pgq_nb_loop(
            _drain(q.aio, args.jobs, args.concurrency, args.batch_size, profile)
        )
        cpu, server_cpu = time.process_time() - cpu, _server_cpu(postmaster) - server_cpu
    per = 1e6 / args.jobs
    print(
        f"{args.jobs:,} no-op jobs, concurrency {args.concurrency}, batch {args.batch_size}, "
        f"over {args.transport}{' (profiled)' if profile else ''}: "
        f"{args.jobs / (ended - began):,.0f} jobs/s"
    )
    print(
        f"  per job: wall {(ended - began) * per:.1f} us, this process's CPU {cpu * per:.1f} "
        f"us, the server's CPU {server_cpu * per:.1f} us"
    )
    if profile is not None:
        parts, others = _split(profile)
        for name, seconds in sorted(parts.items(), key=lambda kv: -kv[1]):
            print(f"  {name:55s} {seconds * per:6.1f} us (profiled)")
        print("  the most of 'other':")
        for seconds, where in others:
            print(f"    {where[:60]:60s} {seconds * per:6.1f} us")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_drain")
    parser.add_argument("--jobs", type=int, default=30_000)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--transport", choices=("tcp", "socket"), default="tcp")
    parser.add_argument("--profile", action="store_true", help="also split this process's CPU")
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
