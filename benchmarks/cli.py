"""``python -m benchmarks``: pgq_nb and PgQueuer side by side on one Postgres server.

    python -m benchmarks --quick          # 1-2 minutes: small sizes, 2 repeats (one each first)
    python -m benchmarks                  # full sizes, 3 repeats, medians
    python -m benchmarks --only drain --dsn postgresql://user@host:5432/db

Without --dsn it uses pgq_nb's embedded server (started if needed). pgq_nb works in a fresh
schema per run and PgQueuer in a fresh database per run (so the role needs CREATEDB); they take
turns within each scenario. Prints a table (ratio > 1 means pgq_nb did better) and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks import (
    pgqueuer_env,
    scenario_claim,
    scenario_drain,
    scenario_enqueue,
    scenario_hooks,
    scenario_latency,
    scenario_stats,
    scenario_sustained,
)
from benchmarks.common import Context, Row, Sizes, log

Scenario = Callable[[Context], list[Row]]

#: name -> (runner, needs PgQueuer)
SCENARIOS: dict[str, tuple[Scenario, bool]] = {
    "enqueue": (scenario_enqueue.run, True),
    "drain": (scenario_drain.run, True),
    "sustained": (scenario_sustained.run, True),
    "latency": (scenario_latency.run, True),
    "claim": (scenario_claim.run, False),
    "stats": (scenario_stats.run, False),
    "hooks": (scenario_hooks.run, False),
}
ALIASES = {"pgq_nb": ["claim", "stats", "hooks"], "side_by_side": list(SCENARIOS)[:4]}
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"


def _pair(text: str) -> tuple[int, int]:
    try:
        a, b = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers like 64/64, not {text!r}") from None
    return a, b


def _pgqueuer_tuned(text: str) -> tuple[int, int | None]:
    if "/" in text:
        return _pair(text)
    try:
        return int(text), None
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected BATCH or BATCH/MAX_TASKS, not {text!r}"
        ) from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="pgq_nb and PgQueuer side by side on the same Postgres server.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, 2 repeats (~1-2 min)")
    parser.add_argument("--dsn", help="a postgresql:// URL (default: pgq_nb's embedded server)")
    parser.add_argument(
        "--only",
        action="append",
        choices=[*SCENARIOS, *ALIASES],
        metavar="SCENARIO",
        help=f"run only this scenario (repeatable): {', '.join([*SCENARIOS, *ALIASES])}",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument("--repeats", type=int, help="repeats per scenario (default 3, quick 2)")
    parser.add_argument(
        "--tuned-pgq-nb",
        type=_pair,
        default=(128, 128),
        metavar="CONCURRENCY/BATCH",
        help="pgq_nb worker settings for 'tuned' (default 128/128: best of 32..256 here)",
    )
    parser.add_argument(
        "--tuned-pgqueuer",
        type=_pgqueuer_tuned,
        default=(100, None),
        metavar="BATCH[/MAX_TASKS]",
        help="PgQueuer run() settings for 'tuned' (default batch_size=100, no task cap)",
    )
    parser.add_argument(
        "--analyze-pgqueuer",
        action="store_true",
        help="ANALYZE PgQueuer's table after the drain's bulk enqueue (it does not do so itself; "
        "without it, its claim plan is stale and its drain is slower)",
    )
    return parser.parse_args(argv)


def _selected(only: list[str] | None) -> list[str]:
    if not only:
        return list(SCENARIOS)
    names: list[str] = []
    for name in only:
        for each in ALIASES.get(name, [name]):
            if each not in names:
                names.append(each)
    return names


async def _server_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "ms":
        return f"{value:,.2f} ms" if value < 100 else f"{value:,.0f} ms"
    return f"{value:,.0f} {unit}"


def table(rows: list[Row]) -> str:
    """The result table, as Markdown (paste-able into the README)."""
    head = ["scenario", "pgq_nb", "PgQueuer", "ratio", "target"]
    body = [
        [
            r.scenario,
            _fmt(r.pgq_nb_median, r.unit),
            _fmt(r.pgqueuer_median, r.unit),
            "—" if r.advantage is None else f"{r.advantage:.2f}x",
            r.target,
        ]
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=False)]

    def line(cells: list[str]) -> str:
        padded = [
            c.ljust(w) if i == 0 or i == 4 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), rule, *(line(b) for b in body)])


def _figures(repeats: int) -> str:
    if repeats == 1:
        return "one run each (no median)"
    if repeats == 2:
        return "mean of 2 runs each (each system went first once)"
    return f"medians of {repeats} runs each (alternating which system goes first)"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = _selected(args.only)
    sizes = Sizes.quick_run() if args.quick else Sizes.full()
    if args.repeats:
        sizes = dataclasses.replace(sizes, repeats=args.repeats)

    pgqueuer: Any = None
    if any(SCENARIOS[n][1] for n in names):
        try:
            pgqueuer = pgqueuer_env.load()
        except pgqueuer_env.MissingPgQueuer as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if pgqueuer_env.version(pgqueuer) != pgqueuer_env.PINNED:
            log(f"warning: PgQueuer {pgqueuer_env.version(pgqueuer)} is not the pinned 1.6.0")

    if args.dsn:
        dsn, server, admin_dsn = args.dsn, "--dsn", args.dsn
    else:
        from pgq_nb.embedded import EmbeddedServer

        log("starting (or reusing) pgq_nb's embedded Postgres ...")
        embedded = EmbeddedServer()
        dsn, server = embedded.ensure_running(), "embedded"
        admin_dsn = embedded.admin_dsn()  # PgQueuer runs in a database of its own per repeat

    ctx = Context(
        dsn=dsn,
        sizes=sizes,
        pgqueuer=pgqueuer,
        tuned_pgq_nb=args.tuned_pgq_nb,
        tuned_pgqueuer=args.tuned_pgqueuer,
        analyze_pgqueuer=args.analyze_pgqueuer,
        run_id=str(os.getpid()),
        admin_dsn=admin_dsn,
    )
    began = time.perf_counter()
    mode = "quick" if sizes.quick else "full"
    log(f"{mode} run: {', '.join(names)}; {sizes.repeats} repeat(s) per scenario")
    rows: list[Row] = []
    for name in names:
        log(f"{name}:")
        t0 = time.perf_counter()
        try:
            rows.extend(SCENARIOS[name][0](ctx))
        except Exception as exc:  # one broken scenario must not lose the others' figures
            traceback.print_exc()
            note = f"failed: {type(exc).__name__}: {exc}"
            rows.append(Row(scenario=name, unit="", higher_is_better=True, note=note[:300]))
        log(f"  ({time.perf_counter() - t0:.0f} s)")
    elapsed = time.perf_counter() - began

    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": mode,
        "repeats": sizes.repeats,
        "figures": _figures(sizes.repeats),
        "server": server,
        "postgres": asyncio.run(_server_version(dsn)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "pgq_nb": _version("pgq_nb"),
        "pgqueuer": _version("pgqueuer"),
        "asyncpg": _version("asyncpg"),
        "sizes": dataclasses.asdict(sizes),
        "seconds": round(elapsed, 1),
    }
    print()
    print(
        f"pgq_nb vs PgQueuer {meta['pgqueuer']} — {mode} run, {meta['figures']}, "
        f"PostgreSQL {meta['postgres']} ({server}), {meta['cpus']} CPUs, {elapsed:.0f} s"
    )
    print()
    print(table(rows))
    print()
    print("ratio > 1: pgq_nb did better (rates: pgq_nb / PgQueuer; times: PgQueuer / pgq_nb).")
    for r in rows:
        if r.note:
            print(f"- {r.scenario}: {r.note}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "rows": [r.as_json() for r in rows]}
    args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {args.json}")
    return 0
