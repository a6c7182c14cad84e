"""DataFrames of the queue's moving parts: schedules, workflow runs, flow limits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from pgq_nb.models import FINAL_STATUSES, STATUSES
from pgq_nb.notebook.columns import Kind, frame, typed

SCHEDULES: dict[str, Kind] = {
    "name": "str",
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
    "status": "str",
    "steps": "int",
    "created": "time",
    "finished": "time",
}

FLOW: dict[str, Kind] = {
    "entrypoint": "str",
    "max_running": "int",
    "rate_per_s": "float",
    "paused": "json",
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


def workflows_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per run, newest first, with a column of steps per status and ``done``, the
    share of steps finished (0 to 1)."""
    out = frame([{**r, "workflow_id": r["id"]} for r in rows], WORKFLOWS)
    for status in STATUSES:
        out[status] = typed([int(r["counts"].get(status, 0)) for r in rows], "count")
    finished = out[list(FINAL_STATUSES)].sum(axis=1)
    out["done"] = (finished / out["steps"].astype("float64")).fillna(0.0).astype("float64")
    return out


def flow_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Entrypoints with a global limit or a pause, with their running and waiting jobs."""
    return _bools(frame(rows, FLOW), "paused")
