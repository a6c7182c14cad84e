"""pgq_nb alone: per-key limits (issue #21, item 3).

1. ``20 keys x 10 jobs`` of 50 ms, ``max_per_key=1``, over 3 worker processes (``pgq-nb
   worker --concurrency 8``: 24 slots, more than the keys) started and registered first; the
   jobs enqueued key by key (10 of one key, then the next: without the limit a claim would take
   several of one key at once). Time from the enqueue until the last is recorded, against the
   longest key's chain (10 x 50 ms = 0.5 s) and the sum of the runs (200 x 50 ms = 10 s).
2. The claim's overhead: N no-op jobs drained by ``run_until_idle(concurrency=64)`` in this
   process: no key; ``max_per_key=1`` over 1,000 keys interleaved (each claim's first jobs are
   of many keys: the walk of the head suffices); and over 1,000 keys in runs of N/1,000 (the
   head is a few full keys: each claim reads the queue key by key). Ratios to no key.
3. What keys cost an enqueue: ``q.enqueue`` of batches of 10,000 with and without a key.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Context, Row, fresh_pgq_nb, log, noop, on_pgq_nb_loop

KEYS, PER_KEY, SECONDS, WORKERS, CONCURRENCY = 20, 10, 0.05, 3, 8
DRAIN_KEYS = 1_000
REPO = Path(__file__).resolve().parent.parent


def _count(q: Any, sql: str) -> int:
    return int(on_pgq_nb_loop(q.aio.pool.fetchval(sql.replace("S.", f'"{q.aio.schema}".'))))


def _chains(ctx: Context, schema: str) -> float:
    """Seconds for 20 keys x 10 jobs of 50 ms over 3 worker processes."""
    env = dict(os.environ, PGQ_NB_DSN=ctx.dsn, PGQ_NB_SCHEMA=schema)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    with fresh_pgq_nb(ctx.dsn, schema) as q:
        q.entrypoint("bench_keys", concurrency_key="k", max_per_key=1)(noop)
        command = [sys.executable, "-m", "pgq_nb.cli", "--log-level", "WARNING", "worker"]
        args = ["benchmarks.keys_app:q", "--concurrency", str(CONCURRENCY)]
        procs = [subprocess.Popen([*command, *args], env=env) for _ in range(WORKERS)]
        try:
            deadline = time.monotonic() + 120
            while _count(q, "SELECT count(*) FROM S.workers") < WORKERS:
                if time.monotonic() > deadline:
                    raise RuntimeError("the keys benchmark's workers did not register")
                time.sleep(0.05)
            n = KEYS * PER_KEY
            began = time.perf_counter()
            q.enqueue(["bench_keys"] * n, [{"k": f"key{i // PER_KEY}"} for i in range(n)])
            while _count(q, "SELECT count(*) FROM S.history") < n:
                if time.perf_counter() - began > 120:
                    raise RuntimeError("the keys benchmark's jobs did not finish")
                time.sleep(0.01)
            elapsed = time.perf_counter() - began
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=60)
    return elapsed


VARIANTS = ("no key", "1,000 keys interleaved", "1,000 keys in runs")


def _payloads(variant: str, n: int) -> list[Any]:
    if variant == "no key":
        return [None] * n
    if variant == "1,000 keys interleaved":
        return [{"k": i % DRAIN_KEYS} for i in range(n)]
    run = max(1, n // DRAIN_KEYS)
    return [{"k": i // run} for i in range(n)]


def _drain(ctx: Context, schema: str, variant: str) -> float:
    n = ctx.sizes.flow_jobs
    with fresh_pgq_nb(ctx.dsn, schema) as q:
        options: dict[str, Any] = {} if variant == "no key" else {"concurrency_key": "k"}
        q.entrypoint("bench_drain", **options)(noop)
        payloads = _payloads(variant, n)
        for start in range(0, n, 10_000):
            part = payloads[start : start + 10_000]
            q.enqueue(["bench_drain"] * len(part), part)
        began = time.perf_counter()
        stats = q.run_until_idle(concurrency=64, wait_for_scheduled=0)
        elapsed = time.perf_counter() - began
    if stats.succeeded != n:
        raise RuntimeError(f"keys drain: {stats.succeeded} jobs succeeded, expected {n}")
    return n / elapsed


def _enqueue(ctx: Context, schema: str, keyed: bool) -> float:
    n = ctx.sizes.flow_jobs
    with fresh_pgq_nb(ctx.dsn, schema) as q:
        options: dict[str, Any] = {"concurrency_key": "k"} if keyed else {}
        q.entrypoint("bench_enqueue", **options)(noop)
        payloads = [{"k": i % DRAIN_KEYS} for i in range(n)]
        began = time.perf_counter()
        for start in range(0, n, 10_000):
            part = payloads[start : start + 10_000]
            q.enqueue(["bench_enqueue"] * len(part), part)
        return n / (time.perf_counter() - began)


def run(ctx: Context) -> list[Row]:
    n = ctx.sizes.flow_jobs
    chain = PER_KEY * SECONDS
    total = KEYS * PER_KEY * SECONDS
    chains = Row(
        scenario=f"keys: {KEYS} keys x {PER_KEY} jobs of 50 ms, max_per_key=1, {WORKERS} workers",
        unit="ms",
        higher_is_better=False,
        note=f"longest key's chain {chain * 1000:.0f} ms, sum of runs {total:.0f} s; ratio "
        f"column = the chain / this (1.0 is the best possible); pgq-nb worker --concurrency "
        f"{CONCURRENCY} each",
    )
    drains = {
        v: Row(
            scenario=f"keys: drain {n:,} no-op jobs, {v}",
            unit="jobs/s",
            higher_is_better=True,
            note="run_until_idle(concurrency=64)"
            + ("" if v == "no key" else "; max_per_key=1; ratio column = this / no key"),
        )
        for v in VARIANTS
    }
    enqueues = {
        keyed: Row(
            scenario=f"keys: enqueue {n:,} in batches of 10,000, {'keyed' if keyed else 'no key'}",
            unit="jobs/s",
            higher_is_better=True,
            note="q.enqueue([...]) " + ("; ratio column = this / no key" if keyed else ""),
        )
        for keyed in (False, True)
    }
    for repeat in range(ctx.sizes.repeats):
        seconds = _chains(ctx, ctx.schema("keys_chain", repeat))
        chains.pgq_nb.append(seconds * 1000)
        log(f"  keys repeat {repeat + 1}  20 keys x 10 jobs  {seconds:8.2f} s")
        turn = repeat % len(VARIANTS)
        for index, variant in enumerate(VARIANTS[turn:] + VARIANTS[:turn]):
            rate = _drain(ctx, ctx.schema(f"keys_drain{index}", repeat), variant)
            drains[variant].pgq_nb.append(rate)
            log(f"  keys repeat {repeat + 1}  drain, {variant:24s} {rate:12,.0f} jobs/s")
        for keyed in (repeat % 2 == 0, repeat % 2 == 1):
            rate = _enqueue(ctx, ctx.schema(f"keys_enq{int(keyed)}", repeat), keyed)
            enqueues[keyed].pgq_nb.append(rate)
            log(f"  keys repeat {repeat + 1}  enqueue, keyed={keyed!s:5s} {rate:12,.0f} jobs/s")
    median = chains.pgq_nb_median
    if median:
        chains.ratio = chain * 1000 / median
    base = drains["no key"].pgq_nb_median
    for variant, row in drains.items():
        if variant != "no key" and base and row.pgq_nb_median:
            row.ratio = row.pgq_nb_median / base
    plain, with_keys = enqueues[False].pgq_nb_median, enqueues[True].pgq_nb_median
    if plain and with_keys:
        enqueues[True].ratio = with_keys / plain
    return [chains, *drains.values(), *enqueues.values()]
