"""The dtypes of the columns a batch was enqueued from, recorded once per batch and given back
by ``q.results()``.

``q.enqueue_df`` writes payloads as JSON (:mod:`pgq_nb.notebook.encode`), which has no
Decimal, timestamp, duration or categorical. So that a ``q.results()`` in any kernel gives the
payload columns back as they went in, each batch also records one small description per column
(:func:`describe`), in the table ``payload_dtypes`` with the id ranges of its jobs
(:func:`id_runs`); ``q.results()`` finds the batch of each job it returns (:func:`batch_of`)
and rebuilds the column from the JSON values (:func:`restore`). Nothing is added per row: the
cost is one short statement per batch.

A description is a JSON object:

- ``{"dtype": "<name>"}``: any dtype that ``pd.api.types.pandas_dtype(name)`` gives back equal
  (numpy ints, floats, bools; ``Int64``, ``boolean``, ``Float64``; ``str``, ``string``;
  ``datetime64[<unit>]``; ``timedelta64[<unit>]``);
- ``{"dtype": "datetime64[<unit>]", "tz": "<zone>"}``: timezone-aware (an IANA name, or
  ``"+HH:MM"`` style fixed offsets as seconds in ``"offset"``);
- ``{"dtype": "category", "ordered": bool, "categories": <description>, "values": [...]}``;
- ``{"dtype": "object", "of": "decimal" | "date" | "time" | "datetime" | "timedelta" | "json"}``:
  an object column whose values are all of one such kind (``json``: anything else, given back as
  JSON decoded it).

A column with no description, or whose values cannot be rebuilt as described, gets the dtype
inferred from its JSON values (:func:`pgq_nb.notebook.columns.inferred`), as before.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import zoneinfo
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from pgq_nb.notebook import encode
from pgq_nb.notebook.columns import inferred

Description = dict[str, Any]

#: infer_dtype's kinds of object columns given back as that kind of Python value.
_OBJECT_KINDS = ("decimal", "date", "time", "datetime", "timedelta")


def _zone(tz: dt.tzinfo) -> dict[str, Any] | None:
    if isinstance(tz, zoneinfo.ZoneInfo):
        return {"tz": tz.key}
    if isinstance(tz, dt.timezone):
        offset = tz.utcoffset(None)
        return {"offset": int(offset.total_seconds())}
    name = getattr(tz, "zone", None)  # pytz
    if isinstance(name, str):
        return {"tz": name}
    return None


def _tz(description: Description) -> dt.tzinfo | str:
    if "offset" in description:
        return dt.timezone(dt.timedelta(seconds=int(description["offset"])))
    return str(description["tz"])


def describe_series(series: pd.Series) -> Description | None:
    """How to give ``series``'s dtype back from its JSON values, or None (inferred then)."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        categories = pd.Series(dtype.categories)
        inner = describe_series(categories)
        if inner is None or inner.get("dtype") == "category":
            return None
        values = json.loads("[" + ",".join(encode.column_texts(categories)) + "]")
        return {"dtype": "category", "ordered": bool(dtype.ordered), "categories": inner,
                "values": values}  # fmt: skip
    if isinstance(dtype, pd.DatetimeTZDtype):
        zone = _zone(dtype.tz)
        return None if zone is None else {"dtype": f"datetime64[{dtype.unit}]", **zone}
    if dtype == np.dtype(object):
        kind = pd.api.types.infer_dtype(series, skipna=True)
        return {"dtype": "object", "of": kind if kind in _OBJECT_KINDS else "json"}
    name = str(dtype)
    try:
        same = pd.api.types.pandas_dtype(name) == dtype
    except (TypeError, ValueError, ImportError):
        same = False
    return {"dtype": name} if same else None


def describe(frame: pd.DataFrame, columns: Sequence[str]) -> dict[str, Description]:
    """The description of each of ``columns`` that can be given back (see the module)."""
    found = {}
    for name in columns:
        description = describe_series(frame[name])
        if description is not None:
            found[name] = description
    return found


def record(frame: pd.DataFrame, columns: Sequence[str]) -> dict[str, Any]:
    """What ``payload_dtypes.dtypes`` holds for a batch of ``frame``'s ``columns``."""
    return {"version": 1, "columns": describe(frame, columns)}


def columns_of(recorded: Any) -> dict[str, Description]:
    """The descriptions per column of a ``payload_dtypes.dtypes`` value (decoded or text)."""
    if isinstance(recorded, str):
        recorded = json.loads(recorded)
    if not isinstance(recorded, dict) or recorded.get("version") != 1:
        return {}  # written by a newer pgq_nb: its columns are inferred
    found: dict[str, Description] = recorded.get("columns", {})
    return found


def id_runs(ids: Sequence[int] | np.ndarray) -> tuple[list[int], list[int]]:
    """Sorted ``ids`` as runs of consecutive ids: their starts and (exclusive) ends."""
    values = np.asarray(ids, dtype="int64")
    if not len(values):
        return [], []
    breaks = np.flatnonzero(np.diff(values) != 1) + 1
    starts = values[np.concatenate(([0], breaks))]
    ends = values[np.concatenate((breaks - 1, [len(values) - 1]))] + 1
    return starts.tolist(), ends.tolist()


def batch_of(job_ids: np.ndarray, batches: Sequence[Any]) -> np.ndarray:
    """For each of ``job_ids``, the position in ``batches`` (rows of ``payload_dtypes_for``:
    ``starts``, ``ends``) of the batch that holds it, or -1."""
    starts: list[int] = []
    ends: list[int] = []
    owners: list[int] = []
    for position, batch in enumerate(batches):
        starts.extend(batch["starts"])
        ends.extend(batch["ends"])
        owners.extend([position] * len(batch["starts"]))
    found = np.full(len(job_ids), -1, dtype="int64")
    if not starts:
        return found
    order = np.argsort(np.asarray(starts, dtype="int64"), kind="stable")
    low = np.asarray(starts, dtype="int64")[order]
    high = np.asarray(ends, dtype="int64")[order]
    owner = np.asarray(owners, dtype="int64")[order]
    at = np.searchsorted(low, job_ids, side="right") - 1
    inside = (at >= 0) & (job_ids < high[np.maximum(at, 0)])
    found[inside] = owner[at[inside]]
    return found


def _each(values: Sequence[Any], convert: Callable[[Any], Any]) -> pd.Series:
    column = np.empty(len(values), dtype=object)
    for position, value in enumerate(values):
        column[position] = None if value is None else convert(value)
    return pd.Series(column, dtype=object)


_NANOSECONDS = re.compile(r"\.\d{7}")


def _datetime(text: str) -> dt.datetime:
    """A datetime as it was written; a pandas Timestamp for nanoseconds (datetime has none, and
    fromisoformat would drop them)."""
    if _NANOSECONDS.search(text):
        stamp: dt.datetime = pd.Timestamp(text)
        return stamp
    return dt.datetime.fromisoformat(text)


_FROM_TEXT: dict[str, Callable[[str], Any]] = {
    "decimal": Decimal,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "datetime": _datetime,
    "timedelta": pd.Timedelta,
}


def _rebuilt(values: Sequence[Any], description: Description) -> pd.Series:
    name = description["dtype"]
    if name == "category":
        categories = _rebuilt(description["values"], description["categories"])
        kind = pd.CategoricalDtype(pd.Index(categories), ordered=description["ordered"])
        if categories.dtype.kind in "biuf":  # numbers and bools match as they are (and None)
            return pd.Series(pd.Categorical(_each(values, lambda v: v), dtype=kind))
        codes = _rebuilt(values, description["categories"])
        return pd.Series(pd.Categorical(codes, dtype=kind))
    if name == "object":
        convert = _FROM_TEXT.get(description["of"])
        return _each(values, convert) if convert else _each(values, lambda v: v)
    if "tz" in description or "offset" in description:
        utc = pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601")
        unit = name.removeprefix("datetime64[").removesuffix("]")
        return utc.astype(pd.DatetimeTZDtype(unit=unit, tz=_tz(description)))
    dtype = pd.api.types.pandas_dtype(name)
    if isinstance(dtype, np.dtype) and dtype.kind == "M":
        return pd.to_datetime(pd.Series(values, dtype=object), format="ISO8601").astype(dtype)
    if isinstance(dtype, np.dtype) and dtype.kind == "m":
        return pd.to_timedelta(pd.Series(values, dtype=object)).astype(dtype)
    if isinstance(dtype, np.dtype) and dtype.kind in "biu" and any(v is None for v in values):
        raise ValueError("missing values in a column without missing values")
    return pd.Series(list(values), dtype=dtype)


def restore(values: Sequence[Any], description: Description | None) -> pd.Series:
    """JSON-decoded ``values`` of one column as ``description`` says, or inferred."""
    if description is not None:
        try:
            return _rebuilt(values, description).reset_index(drop=True)
        except (TypeError, ValueError, KeyError, ArithmeticError, LookupError):
            pass  # not what the batch recorded (an edited row, an unknown zone): infer
    return inferred(values)


def restored(
    values: Sequence[Any], owners: np.ndarray, descriptions: Sequence[Description | None]
) -> pd.Series:
    """One column of rows from several batches: each batch's rows restored with its own
    description (``owners[i]``: the batch of row i, -1: none), then put together in row order
    (as ``pd.concat`` puts different dtypes together). A batch whose rows have no value in
    the column (another frame's column, say) only adds missing values to it."""
    batches = np.unique(owners)
    if len(batches) == 1:
        only = int(batches[0])
        return restore(values, descriptions[only] if only >= 0 else None)
    parts = []
    for batch in batches.tolist():
        rows = np.flatnonzero(owners == batch)
        mine = [values[i] for i in rows.tolist()]
        if all(value is None for value in mine):
            continue
        part = restore(mine, descriptions[batch] if batch >= 0 else None)
        parts.append(part.set_axis(rows))
    if not parts:
        return restore(values, None)
    if sum(map(len, parts)) < len(values):  # rows to fill: numpy ints and bools hold no NA
        parts = [_nullable(part) for part in parts]
    together: pd.Series = pd.concat(parts).sort_index().reindex(range(len(values)))
    return together


def _nullable(part: pd.Series) -> pd.Series:
    """``part`` as the nullable twin of a numpy int or bool dtype (else as it is), so that
    missing rows do not turn its integers into floats."""
    kind = part.dtype.kind if isinstance(part.dtype, np.dtype) else ""
    if not kind or kind not in "iub":
        return part
    twin = "boolean" if kind == "b" else part.dtype.name.replace("u", "U").replace("i", "I", 1)
    nullable: pd.Series = part.astype(pd.api.types.pandas_dtype(twin))
    return nullable
