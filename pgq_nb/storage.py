"""What history costs (issue #20, item 1): rows and bytes by table, entrypoint and status,
behind ``q.storage()``.

Estimates, bounded on any size: the bytes of a table are its real size with indexes and TOAST
(``pg_total_relation_size``), shared out among its (entrypoint, status) groups by their rows
times their average row width, and the widths come from a sample of about
:data:`SAMPLE_ROWS` rows (``TABLESAMPLE SYSTEM``, which reads only the sampled pages). The
rows are exact: history's from the counters (``finished_counts``, no scan), the live jobs and
the side tables by count (they are small next to history).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pgq_nb.nbjobs.content import ENTRYPOINT as NOTEBOOK_ENTRYPOINT

#: About how many rows of a table the row widths are sampled from.
SAMPLE_ROWS = 20_000

Group = tuple[str | None, str | None]  # (entrypoint, status)


def sample_percent(total_rows: int) -> float:
    """The TABLESAMPLE percentage that reads about SAMPLE_ROWS of ``total_rows`` rows."""
    if total_rows <= SAMPLE_ROWS:
        return 100.0
    return max(100.0 * SAMPLE_ROWS / total_rows, 0.0001)


def share_bytes(
    table_bytes: int, rows: dict[Group, int], sample: Iterable[Any]
) -> dict[Group, int]:
    """``table_bytes`` shared among the groups of ``rows`` by rows times the average width
    sampled for the group (a group the sample missed: the width of the whole sample; an empty
    sample: shared by rows alone)."""
    widths: dict[Group, float] = {}
    sampled_rows = sampled_bytes = 0
    for r in sample:
        if r["rows"]:
            widths[(r["entrypoint"], r["status"])] = r["bytes"] / r["rows"]
            sampled_rows += r["rows"]
            sampled_bytes += r["bytes"]
    overall = sampled_bytes / sampled_rows if sampled_rows else 1.0
    weights = {g: n * widths.get(g, overall) for g, n in rows.items()}
    total = sum(weights.values())
    if total <= 0:
        return dict.fromkeys(rows, 0)
    return {g: round(table_bytes * w / total) for g, w in weights.items()}


async def storage_rows(store: Any) -> list[dict[str, Any]]:
    """One dict per (table, entrypoint, status): ``table``, ``entrypoint``, ``status`` (None
    where the table has none), ``rows`` and ``bytes`` (an estimate: see the module)."""
    q = store.queries
    out: list[dict[str, Any]] = []
    async with store.pool.acquire() as conn:
        sizes = {
            r["table_name"]: r["bytes"] for r in await conn.fetch(q["storage_tables"], store.schema)
        }
        for table in ("history", "jobs"):
            counted = await conn.fetch(q[f"storage_{table}_rows"])
            rows: dict[Group, int] = {(r["entrypoint"], r["status"]): r["rows"] for r in counted}
            percent = sample_percent(sum(rows.values()))
            sample = await conn.fetch(q[f"storage_{table}_sample"], percent) if rows else []
            shares = share_bytes(sizes.get(table, 0), rows, sample)
            out += [_row(table, g, n, shares[g]) for g, n in sorted(rows.items(), key=_order)]
        dtypes: dict[Group, int] = {
            (r["entrypoint"], None): r["rows"] for r in await conn.fetch(q["storage_dtypes_rows"])
        }
        shares = share_bytes(sizes.get("payload_dtypes", 0), dtypes, [])
        out += [
            _row("payload_dtypes", g, n, shares[g]) for g, n in sorted(dtypes.items(), key=_order)
        ]
        notebooks = await conn.fetchrow(q["storage_notebook_rows"])
        runs = await conn.fetch(q["storage_workflow_rows"])
    for table, n in (
        ("notebook_outputs", notebooks["outputs"]),
        ("notebooks", notebooks["notebooks"]),
    ):
        if n:
            out.append(_row(table, (NOTEBOOK_ENTRYPOINT, None), n, sizes.get(table, 0)))
    # workflow runs, their edges and map_overs: no entrypoint of their own
    out += [
        _row(r["table_name"], (None, None), r["rows"], sizes.get(r["table_name"], 0))
        for r in runs
        if r["rows"]
    ]
    return out


def _order(item: tuple[Group, int]) -> tuple[str, str]:
    (entrypoint, status), _ = item
    return (entrypoint or "", status or "")


def _row(table: str, group: Group, rows: int, nbytes: int) -> dict[str, Any]:
    return {
        "table": table,
        "entrypoint": group[0],
        "status": group[1],
        "rows": rows,
        "bytes": nbytes,
    }
