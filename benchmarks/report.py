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
        return "mean of 2 runs each (side by side: each system went first once)"
    return f"medians of {repeats} runs each (alternating which system goes first)"


def meta(*, dsn: str, server: str, sizes: Sizes, seconds: float) -> dict[str, Any]:
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
        "sizes": dataclasses.asdict(sizes),
        "seconds": round(seconds, 1),
    }


def publish(facts: dict[str, Any], rows: list[Row], path: Path) -> None:
    """Print the heading, the table and the notes on stdout; write everything to ``path``."""
    who = f"pgq_nb vs PgQueuer {facts['pgqueuer']}" if any(r.pgqueuer for r in rows) else "pgq_nb"
    print()
    print(
        f"{who} — {facts['mode']} run, {facts['figures']}, "
        f"PostgreSQL {facts['postgres']} ({facts['server']}), {facts['cpus']} CPUs, "
        f"{facts['seconds']:.0f} s"
    )
    print()
    print(table(rows))
    print()
    print(
        "ratio > 1: pgq_nb did better (rates: pgq_nb / PgQueuer; times: PgQueuer / pgq_nb); "
        "rows of pgq_nb alone say in their note what their ratio compares."
    )
    for r in rows:
        if r.note:
            print(f"- {r.scenario}: {r.note}")
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": facts, "rows": [r.as_json() for r in rows]}
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {path}")
