"""Workflow runs in a notebook: a step table as a DataFrame (``run.wait``'s bar is
:mod:`pgq_nb.notebook.progress`'s)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from pgq_nb.notebook.columns import STATUS_DTYPE

STEP_COLUMNS: dict[str, Any] = {
    "job_id": "Int64",
    "step": "str",
    "index": "Int64",
    "path": "object",  # a map_over's step: its source's place, then its item's (a list)
    "entrypoint": "str",
    "status": STATUS_DTYPE,
    "attempts": "Int64",
    "started": "datetime64[us, UTC]",
    "finished": "datetime64[us, UTC]",
    "duration_s": "float64",
    "error": "str",
}


def steps_frame(steps: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per step, with a fixed schema even for an empty list."""
    rows = [
        {
            "job_id": s["id"],
            "step": s["step_name"],
            "index": s["step_index"],
            "path": s.get("step_path"),
            "entrypoint": s["entrypoint"],
            "status": s["status"],
            "attempts": s["attempts"],
            "started": s["started"],
            "finished": s["finished"],
            "duration_s": (s["finished"] - s["started"]).total_seconds()
            if s["finished"] is not None and s["started"] is not None
            else None,
            "error": s["error"],
        }
        for s in steps
    ]
    frame = pd.DataFrame(rows, columns=list(STEP_COLUMNS))
    for column, dtype in STEP_COLUMNS.items():
        if str(dtype).startswith("datetime64"):
            frame[column] = pd.to_datetime(frame[column], utc=True).astype(dtype)
        else:
            frame[column] = frame[column].astype(dtype)
    return frame
