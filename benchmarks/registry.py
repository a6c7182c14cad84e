"""Every scenario of ``python -m benchmarks``, by name, and the aliases ``--only`` takes."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from benchmarks import (
    scenario_cache,
    scenario_ceiling,
    scenario_claim,
    scenario_core,
    scenario_cron,
    scenario_dask,
    scenario_drain,
    scenario_enqueue,
    scenario_flow,
    scenario_keys,
    scenario_latency,
    scenario_map_over,
    scenario_metrics,
    scenario_peers,
    scenario_processes,
    scenario_retention,
    scenario_scale,
    scenario_stats,
    scenario_sustained,
    scenario_tags,
    scenario_web,
    scenario_workflow,
)
from benchmarks.common import Context, Row


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One scenario: its runner, whether PgQueuer runs beside pgq_nb, and what it measures."""

    name: str
    run: Callable[[Context], list[Row]]
    side_by_side: bool
    about: str


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "enqueue",
            scenario_enqueue.run,
            True,
            "bulk enqueue of N small JSON jobs (enqueue_df vs queries.enqueue per 1,000)",
        ),
        Scenario(
            "drain",
            scenario_drain.run,
            True,
            "N queued no-op jobs, one worker empties the queue; tuned vs tuned (swept), defaults",
        ),
        Scenario(
            "sustained",
            scenario_sustained.run,
            True,
            "one producer and one worker for a fixed time; jobs finished/s; tuned, defaults",
        ),
        Scenario(
            "latency",
            scenario_latency.run,
            True,
            "jobs enqueued 10 ms apart to an idle worker; p50 and p99 enqueue-to-start",
        ),
        Scenario(
            "peers",
            scenario_peers.run,
            True,
            "drain and bulk enqueue beside procrastinate, DBOS, Chancy, oban-py (pgq_nb[peers])",
        ),
        Scenario(
            "claim",
            scenario_claim.run,
            False,
            "the claim statement with a big backlog against 10,000 queued",
        ),
        Scenario(
            "ceiling",
            scenario_ceiling.run,
            False,
            "the worker's claim and completion statements alone in a tight loop vs the worker",
        ),
        Scenario("stats", scenario_stats.run, False, "q.stats() over a long history"),
        Scenario(
            "tags",
            scenario_tags.run,
            False,
            "q.history(tag=...) and meta= over a long tagged history (GIN indexes)",
        ),
        Scenario(
            "metrics",
            scenario_metrics.run,
            False,
            "one Prometheus scrape (pgq_nb.metrics.render) over a long history",
        ),
        Scenario(
            "web",
            scenario_web.run,
            False,
            "pgq-nb web: each page's response time over a long history",
        ),
        Scenario(
            "workflow",
            scenario_workflow.run,
            False,
            "extract -> N-step map -> fan-in: submit, finish, fan-in release delay",
        ),
        Scenario(
            "map_over",
            scenario_map_over.run,
            False,
            "extract returns N items -> wf.map_over -> fan-in: the expansion, the run",
        ),
        Scenario(
            "cron",
            scenario_cron.run,
            False,
            "an every-second schedule, idle worker: how late each tick's handler starts",
        ),
        Scenario(
            "flow_control",
            scenario_flow.run,
            False,
            "drain rate with max_running, rate_limit and concurrency, as a ratio to no limit",
        ),
        Scenario(
            "keys",
            scenario_keys.run,
            False,
            "per-key limits: 20 keys x 10 jobs of 50 ms over 3 workers; keyed claim and "
            "enqueue overhead",
        ),
        Scenario(
            "core",
            scenario_core.run,
            False,
            "enqueue (q.enqueue per 10,000) and drain (run_until_idle) rates of no-op jobs",
        ),
        Scenario(
            "retention",
            scenario_retention.run,
            False,
            "claim p99 while a worker drains N jobs, before and during retention purges",
        ),
        Scenario(
            "processes",
            scenario_processes.run,
            False,
            "CPU-bound handlers (pandas, pure Python): processes=2 vs the thread pool; no-op "
            "overhead; the kernel's memory",
        ),
        Scenario(
            "cache",
            scenario_cache.run,
            False,
            "drain rate of a cache=True entrypoint (all misses, all hits) vs a plain one",
        ),
        Scenario(
            "scale",
            scenario_scale.run,
            False,
            "issue #22 item 4: claim at 10M queued vs 10k, q.stats() at 10M history rows, "
            "enqueue_df and q.results() of 1M rows: peak memory / frame size",
        ),
        Scenario(
            "dask",
            scenario_dask.run,
            False,
            "CPU-bound handlers on a Dask LocalCluster of 2 worker processes vs the thread pool",
        ),
    )
}

ALIASES: dict[str, list[str]] = {
    "side_by_side": [s.name for s in SCENARIOS.values() if s.side_by_side],
    "pgq_nb": [s.name for s in SCENARIOS.values() if not s.side_by_side],
}


def select(only: list[str] | None) -> list[Scenario]:
    """The scenarios ``--only`` names (aliases expanded, in the given order), or all of them."""
    if not only:
        return list(SCENARIOS.values())
    names: list[str] = []
    for name in only:
        for each in ALIASES.get(name, [name]):
            if each not in names:
                names.append(each)
    return [SCENARIOS[n] for n in names]


def listing() -> str:
    """What ``--list`` prints: every scenario and alias, one a line."""
    width = max(len(n) for n in [*SCENARIOS, *ALIASES])
    lines = ["scenarios (python -m benchmarks --only NAME):"]
    for s in SCENARIOS.values():
        kind = "side by side" if s.side_by_side else "pgq_nb alone"
        lines.append(f"  {s.name:{width}}  {kind:12}  {s.about}")
    lines.append("aliases:")
    for alias, names in ALIASES.items():
        lines.append(f"  {alias:{width}}  {', '.join(names)}")
    return "\n".join(lines)
