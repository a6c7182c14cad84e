"""``python -m benchmarks``: the one benchmark harness of pgq_nb.

    python -m benchmarks --list           # every scenario, side by side or pgq_nb alone
    python -m benchmarks --quick          # small sizes, 2 repeats (a few minutes)
    python -m benchmarks                  # full sizes, 3 repeats, medians
    python -m benchmarks --only drain --only core --dsn postgresql://user@host:5432/db

Side-by-side scenarios run pgq_nb and PgQueuer on the same server, taking turns; the others
measure pgq_nb alone. Without --dsn it uses pgq_nb's embedded server (started if needed).
pgq_nb works in a fresh schema per run and PgQueuer in a fresh database per run (so the role
needs CREATEDB). Prints a table (ratio > 1 means pgq_nb did better) and writes JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks import pgqueuer_env, registry, report
from benchmarks.common import Context, Row, Sizes, log

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
    names = [*registry.SCENARIOS, *registry.ALIASES]
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="pgq_nb's benchmarks: side by side with PgQueuer on the same Postgres "
        "server, and pgq_nb's own features alone.",
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--quick", action="store_true", help="small sizes, 2 repeats")
    parser.add_argument("--dsn", help="a postgresql:// URL (default: pgq_nb's embedded server)")
    parser.add_argument(
        "--only",
        action="append",
        choices=names,
        metavar="NAME",
        help=f"run only this scenario or alias (repeatable): {', '.join(names)}",
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


def _load_pgqueuer(scenarios: list[registry.Scenario]) -> tuple[Any, str]:
    """The pgqueuer module if a selected scenario needs it (None otherwise), or an error."""
    if not any(s.side_by_side for s in scenarios):
        return None, ""
    try:
        pgqueuer = pgqueuer_env.load()
    except pgqueuer_env.MissingPgQueuer as exc:
        return None, str(exc)
    if pgqueuer_env.version(pgqueuer) != pgqueuer_env.PINNED:
        log(f"warning: PgQueuer {pgqueuer_env.version(pgqueuer)} is not the pinned 1.6.0")
    return pgqueuer, ""


def _server(dsn: str | None) -> tuple[str, str, str]:
    """(pgq_nb's DSN, how the server was found, a DSN that may CREATE DATABASE)."""
    if dsn:
        return dsn, "--dsn", dsn
    from pgq_nb.embedded import EmbeddedServer

    log("starting (or reusing) pgq_nb's embedded Postgres ...")
    embedded = EmbeddedServer()
    # PgQueuer runs in a database of its own per repeat: that needs the admin role
    return embedded.ensure_running(), "embedded", embedded.admin_dsn()


def _run(scenario: registry.Scenario, ctx: Context) -> list[Row]:
    """One scenario's rows; a failure becomes a row saying so (the others' figures stay)."""
    log(f"{scenario.name}:")
    t0 = time.perf_counter()
    try:
        rows = scenario.run(ctx)
    except Exception as exc:
        traceback.print_exc()
        note = f"failed: {type(exc).__name__}: {exc}"
        rows = [Row(scenario=scenario.name, unit="", higher_is_better=True, note=note[:300])]
    log(f"  ({time.perf_counter() - t0:.0f} s)")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        print(registry.listing())
        return 0
    scenarios = registry.select(args.only)
    sizes = Sizes.quick_run() if args.quick else Sizes.full()
    if args.repeats:
        sizes = dataclasses.replace(sizes, repeats=args.repeats)
    pgqueuer, missing = _load_pgqueuer(scenarios)
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        return 2

    dsn, server, admin_dsn = _server(args.dsn)
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
    names = ", ".join(s.name for s in scenarios)
    log(f"{mode} run: {names}; {sizes.repeats} repeat(s) per scenario")
    rows = [row for scenario in scenarios for row in _run(scenario, ctx)]
    facts = report.meta(dsn=dsn, server=server, sizes=sizes, seconds=time.perf_counter() - began)
    report.publish(facts, rows, args.json)
    return 0
