"""The checks of ``enqueue_df``'s arguments against the frame (payload columns, priority,
``execute_after``, dedupe keys), before anything is written: each names the column and row
at fault. Used by :mod:`pgq_nb.notebook.enqueue` (and ``wf.map`` over a frame).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pgq_nb.enqueue_checks import check_delay, check_key, check_time
from pgq_nb.errors import InvalidInputError
from pgq_nb.models import DEDUPE_KEY_LIMIT, check_int

_INT32 = (-(2**31), 2**31 - 1)


def column(df: pd.DataFrame, name: str, role: str) -> pd.Series:
    if name not in df.columns:
        raise InvalidInputError(
            f"{role} names column {name!r}, which the frame does not have "
            f"(columns: {list(df.columns)[:20]})"
        )
    found = df[name]
    if isinstance(found, pd.DataFrame):
        raise InvalidInputError(f"{role}: the frame has more than one column named {name!r}")
    return found


def payload_columns(df: pd.DataFrame, columns: Sequence[str] | None) -> list[str]:
    if columns is None:
        names: list[Hashable] = list(df.columns)
        role = "the frame's column names"
    elif isinstance(columns, str) or not isinstance(columns, Sequence | pd.Index):
        raise InvalidInputError(
            f"columns must be a list of column names, not {type(columns).__name__} "
            f"(for one column write columns=[{columns!r}])"
        )
    else:
        names = list(columns)
        role = "columns"
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise InvalidInputError(
            f"{role} must be strings (they become JSON keys); found {bad[0]!r} of type "
            f"{type(bad[0]).__name__}: rename them, e.g. df.rename(columns=str)"
        )
    duplicated = sorted({n for n in names if names.count(n) > 1}, key=str)
    if duplicated:
        raise InvalidInputError(
            f"{role} must be unique; {duplicated[0]!r} appears more than once: rename or drop "
            "the duplicates, e.g. df.loc[:, ~df.columns.duplicated()]"
        )
    checked = [str(n) for n in names]
    if columns is not None:
        for name in checked:
            column(df, name, "columns")
    return checked


def priorities(df: pd.DataFrame, priority: object) -> list[int]:
    if not isinstance(priority, str):
        constant = int(priority) if isinstance(priority, np.integer) else priority
        return [check_int("priority", constant)] * len(df)
    values = column(df, priority, "priority")
    if not pd.api.types.is_integer_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
        raise InvalidInputError(
            f"priority column {priority!r} must hold integers, not {values.dtype}; convert it "
            f"with df[{priority!r}].astype(int)"
        )
    if values.isna().any():
        label = values.index[int(np.flatnonzero(values.isna().to_numpy())[0])]
        raise InvalidInputError(f"priority column {priority!r} is missing at row {label!r}")
    if len(values) and not (_INT32[0] <= values.min() and values.max() <= _INT32[1]):
        raise InvalidInputError(
            f"priority column {priority!r} has values outside the 32-bit integer range"
        )
    ints: list[int] = values.to_numpy(dtype="int64").tolist()
    return ints


Due = Callable[[dt.datetime], list[dt.datetime]]


def due(df: pd.DataFrame, execute_after: object) -> Due | None:
    """Check ``execute_after`` now; return how to get each row's due time once the server's
    ``now`` is known (it fills NaT and anchors timedeltas). None: the column default, now."""
    n = len(df)
    if execute_after is None:
        return None
    if isinstance(execute_after, dt.timedelta):
        delay = check_delay("execute_after", execute_after)
        return lambda now: [now + delay] * n
    if isinstance(execute_after, dt.datetime):
        check_time(execute_after)  # aware, and in range
        when = execute_after
        return lambda now: [when] * n
    if not isinstance(execute_after, str):
        raise InvalidInputError(
            "execute_after must be a timezone-aware datetime, a timedelta, a column name or "
            f"None, not {type(execute_after).__name__}"
        )
    values = column(df, execute_after, "execute_after")
    if pd.api.types.is_timedelta64_dtype(values.dtype):
        offsets = pd.to_timedelta(values)
        deltas: list[Any] = offsets.fillna(pd.Timedelta(0)).to_numpy("timedelta64[us]").tolist()
        return lambda now: [now + delta for delta in deltas]
    if not isinstance(values.dtype, pd.DatetimeTZDtype):
        try:
            values = pd.to_datetime(values, utc=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"execute_after column {execute_after!r} must hold timezone-aware timestamps "
                f"or timedeltas ({exc})"
            ) from None
        if not isinstance(values.dtype, pd.DatetimeTZDtype):
            raise InvalidInputError(
                f"execute_after column {execute_after!r} holds naive timestamps; give them a "
                f"time zone, e.g. df[{execute_after!r}].dt.tz_localize('UTC')"
            )
    utc = values.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    missing = utc.isna().to_numpy()
    times: list[Any] = list(utc.dt.to_pydatetime())

    def resolve(now: dt.datetime) -> list[dt.datetime]:
        for position in np.flatnonzero(missing).tolist():
            times[position] = now
        return times

    return resolve


def dedupe_keys(df: pd.DataFrame, dedupe_key: object) -> list[str | None] | None:
    if dedupe_key is None:
        return None
    if not isinstance(dedupe_key, str):
        raise InvalidInputError(
            f"dedupe_key must be a column name (str) or None, not {type(dedupe_key).__name__}"
        )
    values = column(df, dedupe_key, "dedupe_key")
    missing = values.isna().to_numpy()
    keys: list[str | None] = [str(v) for v in values.astype(object).tolist()]
    for position in np.flatnonzero(missing).tolist():
        keys[position] = None
    _check_keys(df, keys, dedupe_key)
    return keys


def _check_keys(df: pd.DataFrame, keys: list[str | None], column: str) -> None:
    """Every key storable (no NUL, no lone surrogate, at most DEDUPE_KEY_LIMIT bytes): for
    ASCII keys one pass over all of them; key by key otherwise, or to find the bad one."""
    present = [k for k in keys if k is not None]
    joined = "".join(present)
    longest = max(map(len, present), default=0)
    if joined.isascii() and "\x00" not in joined and longest <= DEDUPE_KEY_LIMIT:
        return
    for position, key in enumerate(keys):
        if key is not None:
            try:
                check_key("dedupe key", key)
            except InvalidInputError as exc:
                raise InvalidInputError(
                    f"dedupe_key column {column!r}, row {label(df, position)!r}: {exc}; "
                    "nothing was enqueued"
                ) from None


def label(df: pd.DataFrame, position: int) -> Any:
    """The index label at ``position`` as a Python value (``11``, not ``np.int64(11)``)."""
    return df.index[position : position + 1].tolist()[0]
