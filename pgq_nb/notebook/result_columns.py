"""The columns of ``q.results()``, built chunk by chunk as the rows stream in.

:mod:`pgq_nb.notebook.results` reads the succeeded jobs through a server-side cursor,
:data:`~pgq_nb.notebook.results.RESULTS_CHUNK` rows at a time, and hands each chunk to
:class:`Columns`, which decodes its payloads and results and keeps, per column, only the
values: numbers packed into numpy arrays (8 bytes a value and a mask, instead of a Python
object each), anything else as the decoded objects. The asyncpg records, the JSON texts and
the per-row dicts of a chunk are dropped before the next one is fetched. At the end each
column is unpacked back into exactly the values the rows held (one column at a time) and typed
as before (:func:`pgq_nb.notebook.dtypes.restored`, :func:`~pgq_nb.notebook.columns.inferred`),
so the frame is the same as one built from all the rows at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pgq_nb.notebook.columns import decode_payload

__all__ = ["Columns", "Packed", "pack", "result_rows"]

_INT64 = (-(2**63), 2**63 - 1)

# A packed run of values: ("none", n), ("int", values, missing), ("float", values, missing),
# or ("list", values).
Packed = tuple[Any, ...]


def pack(values: list[Any]) -> Packed:
    """``values`` in a compact form that :func:`unpack` turns back into an equal list (the
    same types: ints stay ints, floats floats, None None)."""
    kinds = set(map(type, values))
    if kinds <= {type(None)}:
        return ("none", len(values))
    missing = np.fromiter((v is None for v in values), bool, len(values))
    if kinds <= {int, type(None)}:
        low, high = _INT64
        present = [v for v in values if v is not None]
        if min(present) >= low and max(present) <= high:
            filled = np.array([0 if v is None else v for v in values], dtype="int64")
            return ("int", filled, missing if missing.any() else None)
    if kinds <= {float, type(None)}:
        floats = np.array([0.0 if v is None else v for v in values], dtype="float64")
        return ("float", floats, missing if missing.any() else None)
    return ("list", values)


def unpack(part: Packed) -> list[Any]:
    """The values :func:`pack` was given."""
    if part[0] == "none":
        return [None] * int(part[1])
    if part[0] == "list":
        return list(part[1])
    values: list[Any] = part[1].tolist()
    if part[2] is not None:
        for position in np.flatnonzero(part[2]).tolist():
            values[position] = None
    return values


def _length(part: Packed) -> int:
    return int(part[1]) if part[0] == "none" else len(part[1])


def result_rows(result: Any) -> list[Mapping[str, Any]]:
    """A handler's stored return value as rows: a dict is one row, a non-empty list of dicts
    (a DataFrame is stored as one) one row each, anything else one row with ``result``."""
    if result is None or result == []:
        return [{}]
    if isinstance(result, dict):
        return [result]
    if isinstance(result, list) and all(isinstance(item, dict) for item in result):
        return result
    return [{"result": result}]


class _Column:
    """One column's values so far, as packed runs."""

    def __init__(self, before: int) -> None:
        self.parts: list[Packed] = [("none", before)] if before else []

    def add(self, values: list[Any]) -> None:
        self.parts.append(pack(values))

    def dense(self) -> tuple[str, np.ndarray] | None:
        """("int" or "float", every value as one array) if every value is an int (in int64)
        or every value a float, none missing; else None."""
        kinds = {part[0] for part in self.parts}
        if len(kinds) != 1 or not kinds <= {"int", "float"}:
            return None
        if any(part[2] is not None for part in self.parts):
            return None
        return kinds.pop(), np.concatenate([part[1] for part in self.parts])

    def series(self, description: Mapping[str, Any] | None, restore: Any) -> pd.Series:
        """The column typed as ``restore(values, description)`` types it, and, for numbers
        that need no conversion, without a Python object per value."""
        dense = self.dense()
        if dense is not None:
            kind, array = dense
            wanted = None if description is None else dict(description)
            if kind == "int" and wanted in (None, {"dtype": "Int64"}):
                self.parts = []
                return pd.Series(pd.array(array, dtype="Int64"))
            if kind == "int" and wanted == {"dtype": "int64"}:
                self.parts = []
                return pd.Series(array)
            if kind == "float" and wanted in (None, {"dtype": "float64"}):
                self.parts = []
                return pd.Series(array)
        series: pd.Series = restore(self.values(), description)
        return series

    def values(self) -> list[Any]:
        """Every value, unpacked (the runs are dropped)."""
        parts, self.parts = self.parts, []
        values: list[Any] = [None] * sum(_length(part) for part in parts)  # one allocation
        at = 0
        for part in parts:
            if part[0] != "none":
                values[at : at + _length(part)] = unpack(part)
            at += _length(part)
        return values


class _Named:
    """Columns by name, in the order their names were first seen; a name first seen in a
    later chunk has None for the rows before."""

    def __init__(self) -> None:
        self.columns: dict[str, _Column] = {}
        self.rows = 0

    def add(self, chunk: Sequence[Mapping[str, Any]]) -> None:
        for name in dict.fromkeys(k for row in chunk for k in row):
            if name not in self.columns:
                self.columns[name] = _Column(self.rows)
        for name, column in self.columns.items():
            column.add([row.get(name) for row in chunk])
        self.rows += len(chunk)


class Columns:
    """What ``q.results()`` keeps of the rows seen so far (see the module's docstring)."""

    def __init__(self, expand: bool) -> None:
        self.expand = expand
        self.ids: list[np.ndarray] = []
        self.cached_from = _Column(0)
        self.keyed = False
        self.inputs = _Named()  # expand: payload keys, one value per job
        self.outputs = _Named()  # expand: result keys, one value per result row
        self.positions: list[np.ndarray] = []  # expand: the job of each result row
        self.payloads: list[Any] = []  # not expand: decoded payloads, results
        self.results: list[Any] = []
        self.jobs = 0

    def add(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Take in one chunk of rows (job_id, payload, result, cached_from, keyed)."""
        ids = np.fromiter((r["job_id"] for r in rows), "int64", len(rows))
        self.ids.append(ids)
        self.cached_from.add([r["cached_from"] for r in rows])
        self.keyed = self.keyed or any(r["keyed"] for r in rows)
        if not self.expand:
            self.payloads.extend(decode_payload(r["payload"]) for r in rows)
            self.results.extend(r["result"] for r in rows)
            self.jobs += len(rows)
            return
        inputs: list[Mapping[str, Any]] = []
        outputs: list[Mapping[str, Any]] = []
        positions: list[int] = []
        for position, row in enumerate(rows, start=self.jobs):
            payload = decode_payload(row["payload"])
            if payload is not None and not isinstance(payload, dict):
                payload = {"payload": payload}
            inputs.append(payload or {})
            for out in result_rows(row["result"]):
                positions.append(position)
                outputs.append(out)
        self.inputs.add(inputs)
        self.outputs.add(outputs)
        self.positions.append(np.asarray(positions, dtype="int64"))
        self.jobs += len(rows)

    def job_ids(self) -> np.ndarray:
        """Every job's id, in order (the chunks' arrays joined into one, kept as that one)."""
        if len(self.ids) != 1:
            self.ids = [np.concatenate(self.ids) if self.ids else np.empty(0, "int64")]
        return self.ids[0]

    def one_row_each(self) -> bool:
        """Whether every job gave exactly one row (no result was a list of several dicts)."""
        return sum(len(p) for p in self.positions) == self.jobs


def frame_of(columns: dict[str, pd.Series]) -> pd.DataFrame:
    """A DataFrame of ``columns`` without copying them (they are new, and dropped after)."""
    return pd.DataFrame(columns, copy=False)
