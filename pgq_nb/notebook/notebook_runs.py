"""``q.notebook_runs()``: the runs of notebook jobs as one DataFrame, a column per value the
notebooks recorded with ``pgq_nb.record`` (see :mod:`pgq_nb.nbjobs.records`)."""

from __future__ import annotations

import io
import json
from typing import Any

import pandas as pd

from pgq_nb.errors import InvalidInputError
from pgq_nb.models import check_int
from pgq_nb.nbjobs.records import KIND
from pgq_nb.notebook.columns import Kind, _objects, frame, inferred
from pgq_nb.notebook.truncation import fetch_capped, warn_truncated
from pgq_nb.store import SqlTarget

#: The columns every run has, before the recorded values.
SCHEMA: dict[str, Kind] = {
    "job_id": "int",
    "notebook": "str",
    "path": "str",
    "status": "status",
    "attempt": "int",
    "ok": "json",
    "error": "str",
    "started": "time",
    "duration_s": "float",
    "schedule_name": "str",
    "fire_time": "time",
    "parameters": "json",
}


def decode_value(value: Any) -> Any:
    """A recorded value as it was recorded: a DataFrame or Series from its table JSON."""
    if isinstance(value, dict) and value.get(KIND) in ("dataframe", "series"):
        table = pd.read_json(io.StringIO(json.dumps(value["table"])), orient="table")
        return table.iloc[:, 0] if value[KIND] == "series" else table
    return value


def _names(values: object) -> list[str] | None:
    if values is None:
        return None
    if isinstance(values, str) or not isinstance(values, list | tuple):
        raise InvalidInputError(
            f"values must be a list of recorded names (or None for all), not {values!r}; "
            "e.g. q.notebook_runs('report', values=['total'])"
        )
    for name in values:
        if not isinstance(name, str):
            raise InvalidInputError(f"values holds {name!r}: a recorded name is a str")
    return list(dict.fromkeys(values))


async def notebook_runs(
    aq: SqlTarget, path_or_name: str | None, limit: int | None, values: object = None
) -> pd.DataFrame:
    if path_or_name is not None and not isinstance(path_or_name, str):
        raise InvalidInputError(
            f"path_or_name must be a str (a notebook's path or name) or None, not "
            f"{type(path_or_name).__name__}"
        )
    if limit is not None and check_int("limit", limit, bits=64) < 0:
        raise InvalidInputError("limit must be 0 or more (or None for no limit)")
    wanted = _names(values)
    q = aq.queries

    async def count(conn: Any) -> tuple[int, bool]:
        return int(await conn.fetchval(q["notebook_runs_count"], path_or_name)), True

    rows, matched = await fetch_capped(
        aq, limit, lambda conn, n: conn.fetch(q["notebook_runs"], path_or_name, n, wanted), count
    )
    if matched is not None:
        warn_truncated(
            "q.notebook_runs()",
            len(rows),
            matched,
            what="runs",
            narrower="path_or_name=" if path_or_name is None else "",
        )
    base = [
        {**dict(r), "notebook": r["name"], "parameters": json.loads(r["parameters"])} for r in rows
    ]
    out = frame(base, SCHEMA)
    out["ok"] = pd.Series(pd.array([r["ok"] for r in rows], dtype="boolean"))
    recorded = [json.loads(r["recorded"]) for r in rows]
    names = wanted if wanted is not None else list(dict.fromkeys(n for f in recorded for n in f))
    for name in names:
        column_values = [decode_value(found.get(name)) for found in recorded]
        is_frame = any(isinstance(v, pd.DataFrame | pd.Series) for v in column_values)
        column = _objects(column_values) if is_frame else inferred(column_values)
        out[name if name not in out.columns else f"recorded_{name}"] = column
    return out
