"""pgq_nb alone: cron tick lateness.

An every-second schedule (six fields, seconds first) and one idle worker
(``q.start_worker()``, defaults); lateness is each handler's start minus its tick's
``fire_time``, over the first ``Sizes.cron_ticks`` ticks due after the worker started (20; 5 in
--quick; catch-up ticks left out). One run: the figure is the median tick, the note its worst.
"""

from __future__ import annotations

import statistics
import time

import pgq_nb
from benchmarks.common import Context, Row, fresh_pgq_nb, log

EVERY_SECOND = "* * * * * *"  # six fields, seconds first


def _lateness(q: pgq_nb.Queue, ticks: int) -> list[float]:
    """Lateness in ms of the first ``ticks`` ticks due after the worker started."""
    fired: list[tuple[float, pgq_nb.Schedule]] = []

    @q.schedule("bench_tick", EVERY_SECOND)
    async def tick(schedule: pgq_nb.Schedule) -> None:
        fired.append((time.time(), schedule))

    began = time.time()

    def on_time() -> list[float]:
        due = [(t, s.fire_time.timestamp()) for t, s in fired]
        return [(t - d) * 1000 for t, d in due if d >= began]

    handle = q.start_worker()
    timeout = ticks * 3 + 10.0
    deadline = time.monotonic() + timeout
    try:
        while len(on_time()) < ticks and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        handle.stop(timeout=60)
    lateness = on_time()[:ticks]
    if len(lateness) < ticks:
        raise TimeoutError(f"{len(lateness)} of {ticks} ticks fired within {timeout:g} s")
    return lateness


def run(ctx: Context) -> list[Row]:
    ticks = ctx.sizes.cron_ticks
    with fresh_pgq_nb(ctx.dsn, ctx.schema("cron", 0)) as q:
        lateness = _lateness(q, ticks)
    median, worst = statistics.median(lateness), max(lateness)
    log(f"  cron         {ticks} ticks: median {median:.1f} ms, max {worst:.1f} ms")
    return [
        Row(
            scenario=f"cron tick lateness, median of {ticks} ticks (pgq_nb alone)",
            unit="ms",
            higher_is_better=False,
            pgq_nb=[median],
            note=f"every-second schedule, idle worker: max {worst:.1f} ms; handler start minus "
            "the tick's fire time",
        )
    ]
