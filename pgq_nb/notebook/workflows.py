"""Workflow runs in a notebook: a step table as a DataFrame, and a progress bar."""

from __future__ import annotations

from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from pgq_nb.models import JobStatus

STATUS_DTYPE = pd.CategoricalDtype([s.value for s in JobStatus])
STEP_COLUMNS: dict[str, Any] = {
    "job_id": "Int64",
    "step": "str",
    "index": "Int64",
    "entrypoint": "str",
    "status": STATUS_DTYPE,
    "attempts": "Int64",
    "started": "datetime64[us, UTC]",
    "finished": "datetime64[us, UTC]",
    "duration_s": "Float64",
    "error": "str",
}


def steps_frame(steps: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per step, with a fixed schema even for an empty list."""
    rows = [
        {
            "job_id": s["id"],
            "step": s["step_name"],
            "index": s["step_index"],
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


class _Bar:
    """A tqdm bar advanced to an absolute count."""

    def __init__(self, name: str, total: int, enabled: bool | None) -> None:
        # default: on in a notebook or terminal, off when output is not interactive
        self._bar = tqdm(
            total=total,
            desc=f"workflow {name}",
            unit="step",
            disable=None if enabled is None else not enabled,
        )

    def update_to(self, n: int) -> None:
        if n > self._bar.n:
            self._bar.update(n - self._bar.n)

    def close(self) -> None:
        self._bar.close()


def progress_bar(name: str, total: int, enabled: bool | None) -> _Bar:
    """A bar of finished steps for ``run.wait()``."""
    return _Bar(name, total, enabled)
