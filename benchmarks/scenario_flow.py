"""pgq_nb alone: what flow-control limits cost the drain of no-op jobs.

``Sizes.flow_jobs`` no-op jobs (30,000; 10,000 in --quick) queued with one ``q.enqueue`` call,
then drained with ``q.run_until_idle(concurrency=64)``, once per variant of the entrypoint: no
limit, ``max_running=32`` (slots shared by all workers), ``rate_limit="1000000/s"`` (a bucket
that never runs dry: its bookkeeping alone) and ``concurrency=32`` (this process only). Each
variant in a fresh schema; the order of the variants turns every repeat; medians. The ratio
column is a variant's drain rate over the no-limit one.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.common import Context, Row, fresh_pgq_nb, log, noop

ENTRYPOINT = "bench_flow"
VARIANTS: dict[str, dict[str, Any]] = {
    "no limit": {},
    "max_running=32": {"max_running": 32},
    "rate_limit=1000000/s": {"rate_limit": "1000000/s"},
    "concurrency=32": {"concurrency": 32},
}
ABOUT = {
    "no limit": "the baseline",
    "max_running=32": "slots shared by all workers",
    "rate_limit=1000000/s": "a bucket that never runs dry",
    "concurrency=32": "a cap in this process only",
}


def _drain(ctx: Context, schema: str, limits: dict[str, Any]) -> float:
    n = ctx.sizes.flow_jobs
    with fresh_pgq_nb(ctx.dsn, schema) as q:
        q.entrypoint(ENTRYPOINT, **limits)(noop)
        q.enqueue([ENTRYPOINT] * n)
        began = time.perf_counter()
        stats = q.run_until_idle(concurrency=ctx.sizes.flow_concurrency, wait_for_scheduled=0)
        elapsed = time.perf_counter() - began
    if stats.succeeded != n:
        raise RuntimeError(f"flow control: {stats.succeeded} jobs succeeded, expected {n}")
    return n / elapsed


def run(ctx: Context) -> list[Row]:
    n = ctx.sizes.flow_jobs
    rows = {
        name: Row(
            scenario=f"flow control: drain {n:,}, {name} (pgq_nb alone)",
            unit="jobs/s",
            higher_is_better=True,
            note=f"{ABOUT[name]}; run_until_idle(concurrency={ctx.sizes.flow_concurrency})",
        )
        for name in VARIANTS
    }
    names = list(VARIANTS)
    for repeat in range(ctx.sizes.repeats):
        turn = repeat % len(names)
        for index, name in enumerate(names[turn:] + names[:turn]):
            rate = _drain(ctx, ctx.schema(f"flow{index}", repeat), VARIANTS[name])
            rows[name].pgq_nb.append(rate)
            log(f"  flow control repeat {repeat + 1}  {name:22s} {rate:12,.0f} jobs/s")
    base = rows["no limit"].pgq_nb_median
    for name, row in rows.items():
        median = row.pgq_nb_median
        if name != "no limit" and base and median:
            row.ratio = median / base
            row.note += "; ratio column = this drain / the no-limit drain"
    return list(rows.values())
