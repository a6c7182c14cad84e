"""The harness's output: the run's facts, the Markdown table on stdout, and the JSON file."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks import peers as peer_modules
from benchmarks.common import Row, Sizes, log


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


def ordered(rows: list[Row]) -> list[Row]:
    """The headline rows (tuned against tuned) first, the rest in the order they ran."""
    return [r for r in rows if r.headline] + [r for r in rows if not r.headline]


def label(row: Row) -> str:
    """The row's scenario, with the transport it ran over."""
    return f"{row.scenario} ({row.transport})" if row.transport else row.scenario


def table(rows: list[Row]) -> str:
    """The result table, as Markdown (paste-able into the README); a column per peer too."""
    others = list(dict.fromkeys(name for r in rows for name in r.others))
    head = ["scenario", "pgq_nb", "PgQueuer", *others, "ratio", "target"]
    body = [
        [
            label(r),
            _fmt(r.pgq_nb_median, r.unit),
            _fmt(r.pgqueuer_median, r.unit),
            *(_fmt(r.others_median(name), r.unit) for name in others),
            "—" if r.advantage is None else f"{r.advantage:.2f}x",
            r.target,
        ]
        for r in ordered(rows)
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=False)]
    left = {0, len(head) - 1}

    def line(cells: list[str]) -> str:
        padded = [
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), rule, *(line(b) for b in body)])


def settings_lines(rows: list[Row]) -> list[str]:
    """Every system's settings (each distinct one once) and each row's finished-job checks."""
    seen: dict[tuple[str, str], list[str]] = {}
    for r in ordered(rows):
        for system, what in r.settings.items():
            text = json.dumps(what, ensure_ascii=False) if isinstance(what, dict) else str(what)
            seen.setdefault((system, text), []).append(label(r))
    kinds = [system for system, _ in seen]
    out = [
        # where a system ran with different settings, say which row had which
        f"- {system}: {text}" + (f" [{', '.join(where)}]" if kinds.count(system) > 1 else "")
        for (system, text), where in seen.items()
    ]
    checks = [
        f"- {label(r)}: " + "; ".join(f"{system} {check}" for system, check in r.checks.items())
        for r in ordered(rows)
        if r.checks
    ]
    if checks:
        out += ["", "Finished-job checks (counted in each system's own tables):", *checks]
    return out


def _figures(repeats: int) -> str:
    if repeats == 1:
        return "one run each (no median)"
    if repeats == 2:
        return "mean of 2 runs each (side by side: each system went first once)"
    return f"medians of {repeats} runs each (alternating which system goes first)"


def meta(
    *,
    dsn: str,
    server: str,
    sizes: Sizes,
    seconds: float,
    transports: list[str] | None = None,
    peers: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The facts a reader needs to judge the figures: when, where, which versions, sizes."""
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if sizes.quick else "full",
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
        "transports": transports or [],
        "peers": {name: peer_modules.version(name) for name in peers},
        "sizes": dataclasses.asdict(sizes),
        "seconds": round(seconds, 1),
    }


def publish(facts: dict[str, Any], rows: list[Row], path: Path) -> None:
    """Print the heading, the table and the notes on stdout; write everything to ``path``."""
    who = f"pgq_nb vs PgQueuer {facts['pgqueuer']}" if any(r.pgqueuer for r in rows) else "pgq_nb"
    if facts.get("peers"):
        who += ", " + ", ".join(f"{n} {v}" for n, v in facts["peers"].items())
    over = " and ".join(facts.get("transports") or [])
    print()
    print(
        f"{who} — {facts['mode']} run, {facts['figures']}, "
        f"PostgreSQL {facts['postgres']} ({facts['server']}{', over ' + over if over else ''}), "
        f"Python {facts['python']}, {facts['cpus']} CPUs, {facts['seconds']:.0f} s"
    )
    print()
    print(table(rows))
    print()
    print(
        "ratio > 1: pgq_nb did better (rates: pgq_nb / PgQueuer; times: PgQueuer / pgq_nb); "
        "rows of pgq_nb alone say in their note what their ratio compares."
    )
    for r in ordered(rows):
        if r.note:
            print(f"- {label(r)}: {r.note}")
    lines = settings_lines(rows)
    if lines:
        print()
        print("Settings:")
        print("\n".join(lines))
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": facts, "rows": [r.as_json() for r in rows]}
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {path}")
