"""Workflow state: settling what a finished step decides (descendants of a dead step, runs
with nothing left to do) and grouping parents' results. A step has a job's statuses
(``models.STATUSES``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


async def settle_steps(
    conn: Any, queries: dict[str, str], dead: Sequence[Any], runs: Sequence[int | None]
) -> None:
    """After steps ended: what is downstream of the ``dead`` ones (failed or cancelled for
    good) can never run; runs left with nothing to do are over. Call in a transaction."""
    dead = [r for r in dead if r["workflow_id"]]
    if dead:
        await conn.execute(
            queries["fail_descendants"],
            [r["id"] for r in dead],
            [r["workflow_id"] for r in dead],
        )
    ids = sorted({r for r in runs if r} | {r["workflow_id"] for r in dead})
    if ids:
        await conn.execute(queries["lock_workflows"], ids)
        await conn.execute(queries["settle_workflows"], ids)


def group_results(rows: Any) -> dict[str, Any]:
    """{step name: result}, a map step's results as a list in row order (a map_over's
    placeholder row: its list, empty if it made no steps)."""
    out: dict[str, Any] = {}
    for r in rows:
        if r.get("source"):  # not a result: says the step is a map_over's source
            continue
        if r.get("placeholder"):
            out.setdefault(r["step_name"], [])
        elif r["step_index"] is None:
            out[r["step_name"]] = r["result"]
        else:
            out.setdefault(r["step_name"], []).append(r["result"])
    return out
