"""DataFrames of the queue's moving parts: schedules, workflow runs, flow limits, workers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from pgq_nb.errors import InvalidInputError
from pgq_nb.models import FINAL_STATUSES, STATUSES, check_int, check_text
from pgq_nb.notebook.columns import Kind, frame, typed
from pgq_nb.notebook.truncation import fetch_capped, warn_truncated
from pgq_nb.view_limits import WORKFLOWS_LIMIT

if TYPE_CHECKING:
    from pgq_nb.store import SqlTarget

SCHEDULES: dict[str, Kind] = {
    "name": "str",
    "entrypoint": "str",
    "source": "str",
    "expression": "str",
    "tz": "str",
    "catch_up": "str",
    "enabled": "json",
    "next_run": "time",
    "last_run": "time",
    "last_status": "status",
    "last_job_id": "int",
    "handler_registered": "json",
}

WORKFLOWS: dict[str, Kind] = {
    "workflow_id": "int",
    "name": "str",
    "status": "workflow_status",
    "steps": "count",
    "created": "time",
    "finished": "time",
}

WORKERS: dict[str, Kind] = {
    "worker_id": "int",
    "host": "str",
    "pid": "int",
    "entrypoints": "json",
    "concurrency": "int",
    "executor": "str",
    "processes": "int",
    "scheduler": "str",
    "started": "time",
    "heartbeat": "time",
}

FLOW: dict[str, Kind] = {
    "entrypoint": "str",
    "max_running": "int",
    "rate_per_s": "float",
    "paused": "json",
    "running": "count",
    "waiting": "count",
}

KEYS: dict[str, Kind] = {
    "entrypoint": "str",
    "key": "str",
    "max_per_key": "int",
    "running": "count",
    "waiting": "count",
}


def _bools(frame_: pd.DataFrame, *columns: str) -> pd.DataFrame:
    for column in columns:
        frame_[column] = frame_[column].astype("boolean")
    return frame_


def schedules_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per schedule; ``handler_registered`` False means nothing runs its ticks."""
    return _bools(frame(rows, SCHEDULES), "enabled", "handler_registered")


async def workflows(
    aq: SqlTarget, *, limit: int | None = WORKFLOWS_LIMIT, name: str | None = None
) -> pd.DataFrame:
    """The newest runs (of ``name``), at most ``limit`` (``None``: all); the default cap warns
    ViewTruncated when it leaves runs out."""
    if limit is not None and check_int("limit", limit, bits=64) < 0:
        raise InvalidInputError("limit must be 0 or more (or None for no limit)")
    if name is not None:
        check_text("name", name)
    q = aq.queries

    async def count(conn: Any) -> tuple[int, bool]:
        return int(await conn.fetchval(q["count_workflows"], name)), True

    rows, matched = await fetch_capped(
        aq, limit, lambda conn, n: conn.fetch(q["list_workflows"], n, name), count
    )
    if matched is not None:
        warn_truncated(
            "q.workflows()",
            len(rows),
            matched,
            what="workflow runs",
            narrower="name=" if name is None else "",
        )
    return workflows_frame(rows)


def workflows_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per run, newest first, with a column of steps per status and ``done``, the
    share of steps finished (0 to 1)."""
    out = frame([{**r, "workflow_id": r["id"]} for r in rows], WORKFLOWS)
    for status in STATUSES:
        out[status] = typed([int(r["counts"].get(status, 0)) for r in rows], "count")
    finished = out[list(FINAL_STATUSES)].sum(axis=1)
    out["done"] = (finished / out["steps"].astype("float64")).fillna(0.0).astype("float64")
    return out


def workers_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per live worker; ``entrypoints`` a list of names."""
    out = frame([{**r, "worker_id": r["id"]} for r in rows], WORKERS)
    out["entrypoints"] = typed([list(r["entrypoints"] or []) for r in rows], "json")
    return out


def flow_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Entrypoints with a global limit or a pause, with their running and waiting jobs."""
    return _bools(frame(rows, FLOW), "paused")


def keys_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The busiest keys of entrypoints with a per-key limit (pgq_nb.keys)."""
    return frame(rows, KEYS)
