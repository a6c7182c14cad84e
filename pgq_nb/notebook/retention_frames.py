"""The DataFrames of ``q.retention()`` and ``q.storage()`` (issue #20, item 1)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from pgq_nb.notebook.columns import Kind, frame

POLICIES: dict[str, Kind] = {
    "entrypoint": "str",
    "succeeded_s": "float",
    "failed_s": "float",
    "cancelled_s": "float",
    "keep_last": "int",
}

STORAGE: dict[str, Kind] = {
    "table": "str",
    "entrypoint": "str",
    "status": "status",
    "rows": "count",
    "bytes": "count",
}


def _seconds(value: dt.timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def policies_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per policy (entrypoint <NA>: the default); periods in seconds, NaN: for ever."""
    rows = [
        {
            "entrypoint": r["entrypoint"],
            "succeeded_s": _seconds(r["succeeded"]),
            "failed_s": _seconds(r["failed"]),
            "cancelled_s": _seconds(r["cancelled"]),
            "keep_last": r["keep_last"],
        }
        for r in records
    ]
    return frame(rows, POLICIES)


def storage_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per (table, entrypoint, status): rows and estimated bytes."""
    return frame(records, STORAGE)
