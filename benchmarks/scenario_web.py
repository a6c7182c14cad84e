"""pgq_nb alone: the web dashboard's pages (``pgq-nb web``) over a long history.

The history of the ``stats`` scenario (8 entrypoints, 1 % failed with an error, spread over
the last days, with their counters, 1,000 queued jobs), plus a schedule and a 1,000-step
workflow run. Each page is requested through the ASGI app in this process (Starlette's
TestClient: the app's work and its queries, not the network), median of the runs after two
warm-up requests. The table shows the slowest page's median; the note has each.
"""

from __future__ import annotations

import statistics
import time

import pgq_nb
from benchmarks.common import Context, Row, fresh_pgq_nb, log, on_pgq_nb_loop
from benchmarks.scenario_stats import WARMUP, _fill

PAGES = ("/", "/failures", "/failures?entrypoint=bench_ep_0", "/schedules", "/workflows")


def run(ctx: Context) -> list[Row]:
    from starlette.testclient import TestClient

    from pgq_nb.web.app import create_app
    from pgq_nb.web.config import WebConfig

    n = ctx.sizes.history_rows
    with fresh_pgq_nb(ctx.dsn, ctx.schema("web", 0)) as q:
        began = time.perf_counter()
        on_pgq_nb_loop(_fill(q.aio, n))
        log(f"  web          {n:,} history rows inserted in {time.perf_counter() - began:.1f} s")

        @q.schedule("bench_report", "*/5 * * * *")
        def report(schedule: pgq_nb.Schedule) -> None:
            pass

        q.schedule_list()
        q.entrypoint("bench_step")(lambda job: None)
        wf = q.workflow("bench_flow")
        wf.map("bench_step", [{"i": i} for i in range(1000)], depends_on=wf.step("bench_step"))
        run_id = wf.submit().id
        pages = [*PAGES, f"/workflows/{run_id}", f"/jobs/{n // 2}"]
        medians: dict[str, float] = {}
        with TestClient(create_app(q.aio, WebConfig()), base_url="http://127.0.0.1") as web:
            for page in pages:
                times = []
                for i in range(WARMUP + ctx.sizes.stats_runs):
                    began = time.perf_counter()
                    answer = web.get(page)
                    elapsed = (time.perf_counter() - began) * 1000
                    if answer.status_code != 200:
                        raise RuntimeError(f"{page} answered {answer.status_code}")
                    if i >= WARMUP:
                        times.append(elapsed)
                medians[page] = statistics.median(times)
                log(
                    f"  web          {page}: median {medians[page]:.1f} ms, max {max(times):.1f} ms"
                )
    slowest = max(medians, key=lambda p: medians[p])
    return [
        Row(
            scenario=f"web pages, {n:,} history rows (pgq_nb alone)",
            unit="ms",
            higher_is_better=False,
            pgq_nb=[medians[slowest]],
            target="<= 200 ms",
            note=f"slowest page {slowest}; "
            + ", ".join(f"{p} {m:.1f}" for p, m in medians.items())
            + f" (ms, median of {ctx.sizes.stats_runs})",
        )
    ]
