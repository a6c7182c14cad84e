"""DataFrame columns to JSON payloads, one column at a time.

Every column becomes a list of JSON texts (one per row) by a conversion chosen once for its
dtype; rows are then assembled with one ``%`` template, so no Python code runs per cell for
numeric, boolean, string, timestamp and categorical columns. The text is what
``pgq_nb.encoding.encode_payload`` would write for the same values (compact separators, ASCII),
so ``job.data`` decodes it. (``enqueue_df`` also records each column's dtype, once per call,
so that ``q.results()`` can give the columns back as they were: :mod:`pgq_nb.notebook.dtypes`.)

How values are written:

- integers, floats, booleans (numpy or nullable): JSON numbers and ``true``/``false``;
- NaN, None, ``pd.NA``, ``NaT``: ``null``; an infinity is refused (JSON has none);
- tz-aware timestamps: ISO 8601 with their offset, ``"2024-06-01T12:00:00+02:00"``;
- naive timestamps: ISO 8601 without an offset, naive, as given (no time zone is assumed);
  seconds only when no value of the column has a fraction, else microseconds (nanoseconds if
  any value has them);
- ``Decimal``: a JSON string, ``"12.30"`` (exact; ``Decimal(job.data["x"])`` gets it back);
- ``datetime.date``: ``"YYYY-MM-DD"``; ``datetime.time``: ``"HH:MM:SS[.ffffff]"``;
- timedeltas: ISO 8601 durations, ``"P0DT0H1M30S"`` (``pd.Timedelta(text)`` reads them);
- categoricals: their values, converted like any other value;
- dicts, lists and tuples (nested at any depth, with the values above inside): JSON;
- strings as they are. Anything else (bytes, arbitrary objects) is refused with
  :class:`pgq_nb.PayloadError` naming the column and the row label.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from json.encoder import encode_basestring_ascii
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from pgq_nb.errors import PayloadError, article

Convert = Callable[[Any], str]


class Unstorable(Exception):
    """Internal: the value at ``position`` of a column cannot be written as JSON."""

    def __init__(self, position: int, value: object, reason: str = "") -> None:
        super().__init__(position, value)
        self.position = position
        self.value = value
        self.reason = reason


class _Refused(Exception):
    """Internal: a single value cannot be written (its position is added by the caller)."""


def _float(value: float) -> str:
    if math.isfinite(value):
        return repr(value)
    if value != value:  # NaN
        return "null"
    raise _Refused("an infinity has no JSON form; replace it (df.replace([np.inf, -np.inf], None))")


def _null(_: object) -> str:
    return "null"


def _bool(value: object) -> str:
    return "true" if value else "false"


def _decimal(value: Decimal) -> str:
    if value.is_nan():
        return "null"
    if value.is_infinite():
        raise _Refused("an infinite Decimal has no JSON form")
    return '"' + str(value) + '"'


def _iso(value: dt.date | dt.time) -> str:
    return '"' + value.isoformat() + '"'


def _timestamp(value: pd.Timestamp) -> str:
    return '"' + value.isoformat() + '"'  # NaT is not a Timestamp: _EXACT maps it to null


def _timedelta(value: dt.timedelta) -> str:
    return '"' + pd.Timedelta(value).isoformat() + '"'


def _datetime64(value: np.datetime64) -> str:
    return "null" if np.isnat(value) else _timestamp(pd.Timestamp(value))


def _plain(value: object) -> object:
    """A nested value as plain JSON types (used when json.dumps needs help)."""
    if isinstance(value, float) and not math.isfinite(value):
        if value != value:
            return None
        raise _Refused("an infinity has no JSON form")
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not (key is None or type(key) in (str, int, float, bool)):
                raise _Refused(f"a nested dict has a key of type {type(key).__name__}")
            out[key] = _plain(item)
        return out
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(item) for item in value]
    convert = _converter(type(value))
    if convert is None or convert is _nested:
        raise _Refused(f"a nested value of type {type(value).__name__} cannot be stored")
    return json.loads(convert(value))


def _nested(value: object) -> str:
    return json.dumps(_plain(value), separators=(",", ":"), allow_nan=False)


_EXACT: dict[type, Convert] = {
    str: encode_basestring_ascii,
    int: int.__repr__,
    float: _float,
    bool: _bool,
    type(None): _null,
    dict: _nested,
    list: _nested,
    tuple: _nested,
    Decimal: _decimal,
    dt.date: _iso,
    dt.time: _iso,
    dt.datetime: _iso,
    pd.Timestamp: _timestamp,
    type(pd.NaT): _null,
    type(pd.NA): _null,
}

#: Subclasses checked in order for a type not in _EXACT (numpy scalars and friends).
_BY_BASE: list[tuple[type | tuple[type, ...], Convert]] = [
    ((np.bool_, bool), _bool),
    ((np.integer, int), lambda v: repr(int(v))),
    ((np.floating, float), lambda v: _float(float(v))),
    (pd.Timestamp, _timestamp),
    ((dt.datetime, dt.date, dt.time), _iso),
    ((pd.Timedelta, dt.timedelta), _timedelta),
    (np.datetime64, _datetime64),
    (Decimal, _decimal),
    (str, lambda v: encode_basestring_ascii(str(v))),
    ((Mapping, list, tuple, np.ndarray), _nested),
]


def _converter(kind: type) -> Convert | None:
    found = _EXACT.get(kind)
    if found is not None:
        return found
    for base, convert in _BY_BASE:
        if issubclass(kind, base):
            return convert
    return None


def _objects(values: Sequence[object]) -> list[str]:
    """Per value, with one dict look-up of its type (the fallback for mixed columns)."""
    out: list[str] = []
    append = out.append
    seen: dict[type, Convert | None] = {}
    for position, value in enumerate(values):
        kind = type(value)
        convert = _EXACT.get(kind) or seen.get(kind)
        if convert is None:
            convert = seen[kind] = _converter(kind)
            if convert is None:
                raise Unstorable(position, value)
        try:
            append(convert(value))
        except _Refused as exc:
            raise Unstorable(position, value, str(exc)) from None
        except (TypeError, ValueError) as exc:
            raise Unstorable(position, value, str(exc)) from None
    return out


def _with_nulls(texts: list[str], missing: np.ndarray) -> list[str]:
    for position in np.flatnonzero(missing).tolist():
        texts[position] = "null"
    return texts


def _floats(values: np.ndarray) -> list[str]:
    finite = np.isfinite(values)
    if not finite.all():
        bad = np.flatnonzero(np.isinf(values))
        if len(bad):
            position = int(bad[0])
            raise Unstorable(position, values[position], "an infinity has no JSON form")
    if values.dtype != np.float64:  # float32 and float16: their own shortest repr
        texts = values.astype(str).tolist()
    else:
        texts = list(map(float.__repr__, values.tolist()))
    return _with_nulls(texts, ~finite)


_TICKS_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def _datetime_unit(values: npt.NDArray[np.datetime64]) -> Literal["s", "us", "ns"]:
    """The coarsest of s, us, ns that writes every value of a datetime64 array exactly."""
    unit = np.datetime_data(values.dtype)[0]
    per_second = _TICKS_PER_SECOND.get(unit)
    if per_second is None:  # days, months, ...: whole seconds
        return "s"
    ticks = values.view("int64")
    if not (ticks % per_second).any():
        return "s"
    return "ns" if unit == "ns" and (ticks % 1_000).any() else "us"


def _offset_text(seconds: int) -> str:
    sign = "+" if seconds >= 0 else "-"
    hours, rest = divmod(abs(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{sign}{hours:02d}:{minutes:02d}"
    return text + f":{secs:02d}" if secs else text


def _datetimes(series: pd.Series) -> list[str]:
    dtype = series.dtype
    aware = isinstance(dtype, pd.DatetimeTZDtype)
    wall = series.dt.tz_localize(None) if aware else series
    values: npt.NDArray[np.datetime64] = wall.to_numpy()
    missing = np.isnat(values)
    texts = np.datetime_as_string(values, unit=_datetime_unit(values[~missing])).tolist()
    if aware:
        utc = series.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
        delta = values - utc
        delta[missing] = np.timedelta64(0, "s")
        offsets = delta.astype("timedelta64[s]").astype("int64")
        names = {int(s): _offset_text(int(s)) for s in np.unique(offsets)}
        texts = [f'"{t}{names[o]}"' for t, o in zip(texts, offsets.tolist(), strict=True)]
    else:
        texts = [f'"{t}"' for t in texts]
    return _with_nulls(texts, missing)


def _categories(series: pd.Series) -> list[str]:
    categorical = series.cat
    try:
        texts = column_texts(pd.Series(categorical.categories))
    except Unstorable as exc:
        codes = categorical.codes.to_numpy()
        position = int(np.flatnonzero(codes == exc.position)[0])
        raise Unstorable(position, exc.value, exc.reason) from None
    lookup = np.array([*texts, "null"], dtype=object)  # code -1 (missing) takes the last
    taken: list[str] = lookup[categorical.codes.to_numpy()].tolist()
    return taken


def column_texts(series: pd.Series) -> list[str]:
    """The JSON text of every value of ``series``, in order.

    Raises :class:`Unstorable` with the position of the first value that has no JSON form.
    """
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return _categories(series)
    if isinstance(dtype, pd.DatetimeTZDtype) or (isinstance(dtype, np.dtype) and dtype.kind == "M"):
        return _datetimes(series)
    if isinstance(dtype, np.dtype):
        if dtype.kind in "iu":
            return list(map(int.__repr__, series.to_numpy().tolist()))
        if dtype.kind == "f":
            return _floats(series.to_numpy())
        if dtype.kind == "b":
            return ["true" if v else "false" for v in series.to_numpy().tolist()]
    elif isinstance(dtype, pd.StringDtype):
        missing = series.isna().to_numpy()
        texts = list(map(encode_basestring_ascii, series.fillna("").tolist()))
        return _with_nulls(texts, missing)
    elif pd.api.types.is_integer_dtype(dtype):
        missing = series.isna().to_numpy()
        ints = series.to_numpy(dtype="int64" if dtype.kind == "i" else "uint64", na_value=0)
        return _with_nulls(list(map(int.__repr__, ints.tolist())), missing)
    elif pd.api.types.is_float_dtype(dtype):
        return _floats(series.to_numpy(dtype="float64", na_value=np.nan))
    elif pd.api.types.is_bool_dtype(dtype):
        missing = series.isna().to_numpy()
        flags = series.to_numpy(dtype=bool, na_value=False).tolist()
        return _with_nulls(["true" if v else "false" for v in flags], missing)
    return _objects(series.astype(object).tolist())


def _key(name: str) -> str:
    return encode_basestring_ascii(name).replace("%", "%%") + ":%s"


def payloads(frame: pd.DataFrame, columns: Sequence[str]) -> list[bytes]:
    """Each row's ``columns`` of ``frame`` as a JSON object, encoded (one per row).

    ``columns`` must be unique string labels of ``frame``. Raises PayloadError naming the
    column and the row label of the first value that cannot be stored.
    """
    texts = []
    for name in columns:
        try:
            texts.append(column_texts(frame[name]))
        except Unstorable as exc:
            label = frame.index[exc.position]
            convert = (
                # astype(str) would store "b'...'": text is decoded, binary base64-encoded
                f"df[{name!r}].str.decode('utf-8') for text, or base64 for binary data"
                if isinstance(exc.value, (bytes, bytearray, memoryview))
                else f"df[{name!r}].astype(str)"
            )
            reason = exc.reason or (
                f"{article(type(exc.value).__name__)} has no JSON form; convert the column first "
                f"(for example {convert}) or leave it out with columns=[...]"
            )
            shown = repr(exc.value)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise PayloadError(
                f"column {name!r}, row {label!r}: cannot store {shown} in a payload: "
                f"{reason}; nothing was enqueued"
            ) from None
    if not texts:
        return [b"{}"] * len(frame)
    template = "{" + ",".join(_key(name) for name in columns) + "}"
    return [(template % row).encode() for row in zip(*texts, strict=True)]
