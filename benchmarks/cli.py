"""``python -m benchmarks``: the one benchmark harness of pgq_nb.

    python -m benchmarks --list           # every scenario, side by side or pgq_nb alone
    python -m benchmarks --quick          # small sizes, 2 repeats (a few minutes)
    python -m benchmarks                  # full sizes, 3 repeats, medians
    python -m benchmarks --only drain --only core --dsn postgresql://user@host:5432/db
    python -m benchmarks --only side_by_side --transport tcp    # the headline transport only

Side-by-side scenarios run pgq_nb and PgQueuer (and, in ``peers``, procrastinate, DBOS,
Chancy) on the same server, taking turns, over TCP and over the unix socket
(``--transport``, see benchmarks.transport); the others measure pgq_nb alone, over the first
transport. Without --dsn it uses pgq_nb's embedded server (started if needed), which listens
on both. pgq_nb works in a fresh schema per run and the others in a fresh database per run
(so the role needs CREATEDB). Prints a table (ratio > 1 means pgq_nb did better), the
settings of every system, and writes JSON.
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

from benchmarks import peers, pgqueuer_env, registry, report, transport
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
        "--transport",
        choices=transport.CHOICES,
        default="both",
        help="reach the server over TCP on 127.0.0.1, the unix socket, or both (default; TCP "
        "first, the headline). With --dsn, the URL's own",
    )
    parser.add_argument(
        "--peer",
        action="append",
        choices=peers.NAMES,
        metavar="NAME",
        help=f"run only this peer in the peers scenario (repeatable): {', '.join(peers.NAMES)}; "
        "default: every one installed",
    )
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
        default=None,
        metavar="CONCURRENCY/BATCH",
        help="pgq_nb worker settings for 'tuned' (default: the best drain of 32/32 .. 1024/1024)",
    )
    parser.add_argument(
        "--tuned-pgqueuer",
        type=_pgqueuer_tuned,
        default=None,
        metavar="BATCH[/MAX_TASKS]",
        help="PgQueuer run() settings for 'tuned' (default: the best drain of batch_size "
        "10, 50, 100, 200, 500, 1000, no task cap)",
    )
    parser.add_argument(
        "--no-sweep",
        action="store_true",
        help="skip the sweeps that pick each system's tuned settings: pgq_nb 128/128, PgQueuer "
        "batch 100, each peer its module's CONCURRENCY (quicker; not the headline's method)",
    )
    parser.add_argument(
        "--analyze-pgqueuer",
        action="store_true",
        help="also ANALYZE PgQueuer's table in the drain at defaults (tuned always does: it "
        "does not do so itself; without it, its claim plan is stale and its drain is slower)",
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


def _servers(dsn: str | None, transports: list[str]) -> tuple[dict[str, tuple[str, str]], str]:
    """{transport: (pgq_nb's DSN, a DSN that may CREATE DATABASE)}, and how it was found."""
    if dsn:
        return {transports[0]: (dsn, dsn)}, "--dsn"
    from pgq_nb.embedded import EmbeddedServer

    log("starting (or reusing) pgq_nb's embedded Postgres ...")
    embedded = EmbeddedServer()
    embedded.ensure_running()
    # PgQueuer and the peers run in a database of their own per repeat: that needs the admin
    out = {}
    for t in transports:
        tcp = t == transport.TCP
        out[t] = (embedded.dsn(tcp=tcp), embedded.admin_dsn(tcp=tcp))
    return out, "embedded"


def _peers(chosen: list[str] | None) -> tuple[str, ...]:
    """The peers to run: those chosen (or all), less the ones that cannot run here (said why)."""
    names = chosen or list(peers.NAMES)
    for name in names:
        why = peers.missing(name)
        if why:
            log(f"note: {why}")
    return tuple(name for name in names if peers.missing(name) is None)


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

    try:
        transports = transport.wanted(args.transport, args.dsn)
    except transport.TransportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dsn and args.transport == "both":
        log(
            f"note: --dsn reaches the server over the {transports[0]} only; that is all this run "
            "measures (pass --transport to say so, or run again with a URL over the other)"
        )
    servers, server = _servers(args.dsn, transports)
    chosen_peers = _peers(args.peer) if any(s.name == "peers" for s in scenarios) else ()
    contexts = {
        t: Context(
            dsn=dsn,
            sizes=sizes,
            pgqueuer=pgqueuer,
            tuned_pgq_nb=args.tuned_pgq_nb or (128, 128),
            sweep_pgq_nb=args.tuned_pgq_nb is None and not args.no_sweep,
            tuned_pgqueuer=args.tuned_pgqueuer or ((100, None) if args.no_sweep else None),
            sweep_peers=not args.no_sweep,
            analyze_pgqueuer=args.analyze_pgqueuer,
            run_id=str(os.getpid()),
            admin_dsn=admin_dsn,
            transport=t,
            peers=chosen_peers,
        )
        for t, (dsn, admin_dsn) in servers.items()
    }
    began = time.perf_counter()
    mode = "quick" if sizes.quick else "full"
    names = ", ".join(s.name for s in scenarios)
    over = ", ".join(transports)
    log(f"{mode} run: {names}; {sizes.repeats} repeat(s) per scenario; over {over}")
    rows: list[Row] = []
    for scenario in scenarios:
        # side by side over every transport; pgq_nb alone over the first (the headline) only
        for t in transports if scenario.side_by_side else transports[:1]:
            if scenario.side_by_side and len(transports) > 1:
                log(f"[{t}]")
            for row in _run(scenario, contexts[t]):
                row.transport = t
                rows.append(row)
    first = contexts[transports[0]]
    facts = report.meta(
        dsn=first.dsn,
        server=server,
        sizes=sizes,
        seconds=time.perf_counter() - began,
        transports=transports,
        peers=chosen_peers,
    )
    report.publish(facts, rows, args.json)
    return 0
