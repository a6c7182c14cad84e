"""Typed columns for the views: a fixed dtype per column, whatever the rows hold.

A view declares its columns as ``{name: kind}``; :func:`frame` builds the DataFrame with those
dtypes even when there are no rows or every value is NULL:

===================  ====================================================================
kind                 dtype
===================  ====================================================================
``int``              ``Int64`` (nullable)
``count``            ``int64`` (never missing)
``float``            ``float64`` (NaN when missing)
``str``              pandas ``str``
``time``             ``datetime64[us, UTC]``
``status``           :data:`STATUS_DTYPE`, a categorical of the seven job statuses
``workflow_status``  :data:`WORKFLOW_STATUS_DTYPE`, of the four run statuses
``json``             ``object``: jsonb decoded to dicts, lists, str, numbers, bools, None
``payload``          ``object``: the payload bytes decoded from JSON (raw bytes kept)
===================  ====================================================================

Columns expanded from JSON (``q.results``) get a dtype inferred from their values by
:func:`inferred`. ``q.jobs()`` and ``q.failed()`` show a payload longer than
``frames.PAYLOAD_PREVIEW`` bytes as a ``str`` in the same ``object`` column: its first bytes,
decoded, then ``... [payload cut: ...]`` (``payloads=True`` gives whole ones).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from pgq_nb.errors import InvalidInputError
from pgq_nb.models import STATUSES, WORKFLOW_STATUSES

Kind = Literal[
    "int", "count", "float", "str", "time", "status", "workflow_status", "json", "payload"
]

#: Every job status, live then final, in lifecycle order (unordered: no status is "less").
STATUS_DTYPE = pd.CategoricalDtype(list(STATUSES), ordered=False)
#: Every status of a workflow run: running, succeeded, failed, cancelled.
WORKFLOW_STATUS_DTYPE = pd.CategoricalDtype(list(WORKFLOW_STATUSES), ordered=False)
TIMESTAMP_DTYPE = pd.DatetimeTZDtype(unit="us", tz="UTC")


def decode_payload(payload: bytes | None) -> Any:
    """A stored payload as Python objects; raw (non-JSON) bytes are returned as they are."""
    if payload is None:
        return None
    try:
        return json.loads(payload)
    except ValueError:
        return payload


def _objects(values: Sequence[Any]) -> pd.Series:
    column = np.empty(len(values), dtype=object)
    for position, value in enumerate(values):
        column[position] = value
    return pd.Series(column, dtype=object)


def typed(values: Sequence[Any], kind: Kind) -> pd.Series:
    """``values`` (None for NULL) as a Series of ``kind``'s dtype."""
    if kind == "int":
        return pd.Series(pd.array(list(values), dtype="Int64"))
    if kind == "count":
        return pd.Series(np.asarray(values, dtype="int64"))
    if kind == "float":
        return pd.Series(np.asarray(values, dtype="float64"))
    if kind == "str":
        return pd.Series(pd.array(list(values), dtype="str"))
    if kind == "time":
        return pd.Series(pd.array(list(values), dtype=TIMESTAMP_DTYPE))
    if kind == "status":
        return pd.Series(pd.Categorical(list(values), dtype=STATUS_DTYPE))
    if kind == "workflow_status":
        return pd.Series(pd.Categorical(list(values), dtype=WORKFLOW_STATUS_DTYPE))
    if kind == "payload":
        return _objects([decode_payload(v) for v in values])
    return _objects(values)


def frame(rows: Sequence[Mapping[str, Any]], schema: Mapping[str, Kind]) -> pd.DataFrame:
    """A DataFrame of ``rows`` (asyncpg records) with exactly ``schema``'s columns and dtypes."""
    return pd.DataFrame(
        {name: typed([r[name] for r in rows], kind) for name, kind in schema.items()}
    )


def inferred(values: Sequence[Any]) -> pd.Series:
    """Values decoded from JSON as the narrowest fitting dtype: ``Int64`` for integers,
    ``float64`` for numbers, ``boolean``, ``str`` for strings, else ``object`` (dicts, lists,
    mixed, or all missing). ISO timestamps stay strings: ``pd.to_datetime(column)`` reads them.
    """
    kind = pd.api.types.infer_dtype(values, skipna=True)
    try:
        if kind == "integer":
            return pd.Series(pd.array(list(values), dtype="Int64"))
        if kind in ("floating", "mixed-integer-float"):
            return pd.Series(np.asarray(values, dtype="float64"))
        if kind == "boolean":
            return pd.Series(pd.array(list(values), dtype="boolean"))
        if kind == "string":
            return pd.Series(pd.array(list(values), dtype="str"))
    except (TypeError, ValueError, OverflowError):  # e.g. an integer beyond 64 bits
        pass
    return _objects(values)


def check_since(since: object, name: str = "since") -> dt.timedelta | dt.datetime:
    """The one check of a ``since=`` (``q.history``, ``q.stats``, ``q.plot_throughput``; also
    their ``until=``, named by ``name``): a positive timedelta or a duration string ("15min",
    "1h", "2d") means that long before now, returned as a timedelta; a timezone-aware datetime
    or ISO 8601 string a fixed time, returned as a datetime. InvalidInputError, with one
    message for each mistake, otherwise."""
    if isinstance(since, str):
        since = parse_time_text(since, name)
    if isinstance(since, dt.timedelta):
        if since <= dt.timedelta(0):
            raise InvalidInputError(f"{name}={since} must be a positive duration")
        return since
    if isinstance(since, dt.datetime):
        if since.tzinfo is None:
            raise InvalidInputError(
                f"{name}={since.isoformat()!r} has no time zone; add one (e.g. '+00:00' or "
                "tzinfo=timezone.utc) or give a duration ('1h') or a timedelta"
            )
        return since
    raise InvalidInputError(
        f"{name} must be a duration string ('1h'), a timedelta, a timezone-aware datetime or "
        f"an ISO 8601 string with a zone, not {type(since).__name__}"
    )


def since_time(since: object, name: str = "since") -> dt.datetime | None:
    """``since`` (or an ``until``, named by ``name``) as an aware datetime: None stays None,
    a duration counts back from now (this machine's clock); see :func:`check_since`."""
    if since is None:
        return None
    start = check_since(since, name)
    return dt.datetime.now(dt.UTC) - start if isinstance(start, dt.timedelta) else start


def time_span(since: object, until: object) -> tuple[dt.datetime | None, dt.datetime | None]:
    """``since`` and ``until`` as :func:`since_time` reads them; InvalidInputError when the
    span is empty (``until`` at or before ``since``): a duration counts back from now, so
    ``since="1h", until="2h"`` is an hour that ends before it starts."""
    start, end = since_time(since), since_time(until, "until")
    if start is not None and end is not None and end <= start:
        raise InvalidInputError(
            f"until= ({end:%Y-%m-%d %H:%M:%S %Z}) is not after since= "
            f"({start:%Y-%m-%d %H:%M:%S %Z}): the span is empty; a duration counts back from "
            'now, so the last hour but one is since="2h", until="1h"'
        )
    return start, end


def parse_time_text(text: str, name: str = "since") -> dt.timedelta | dt.datetime:
    """A duration ("15min", "1h", "2d") or an ISO 8601 time, as ``since=`` takes them;
    InvalidInputError otherwise. (A time without a zone is returned as is: see
    :func:`check_since`.)"""
    text = text.strip()
    try:
        delta: dt.timedelta = pd.Timedelta(text).to_pytimedelta()
        return delta
    except ValueError:
        pass
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInputError(
            f"{name}={text!r} is neither a duration ('15min', '1h', '2d') nor an ISO 8601 "
            "time with a zone ('2026-06-01T09:00+00:00')"
        ) from None
