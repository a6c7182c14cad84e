"""Payload and result encoding: what a job's payload and a handler's return value are stored as
(JSON; bytes as they are), and back."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pgq_nb.errors import InvalidInputError, PayloadError

#: The most JSON text a handler's result may take (16 MiB). jsonb holds up to 255 MiB, but
#: parsing text into jsonb needs many times its size: measured on PostgreSQL 18, 16 MiB of
#: ``[0,0,...]`` became 96 MiB of jsonb, 32 MiB became 192 MiB, and 64 MiB failed with
#: "invalid memory alloc request size". Large outputs belong in a table or a file.
RESULT_LIMIT = 16 * 1024 * 1024
# An escape in ASCII JSON text as json.dumps writes it (lowercase hex).
_ESCAPE = re.compile(r"\\(?:u([0-9a-f]{4})|.)", re.DOTALL)


def encode_payload(payload: object) -> bytes | None:
    """Bytes are stored as they are; dicts, lists, strings, numbers and bools as JSON."""
    if payload is None:
        return None
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, bytearray | memoryview):
        return bytes(payload)
    try:
        return json.dumps(payload, allow_nan=False, separators=(",", ":")).encode()
    except ValueError as exc:
        raise PayloadError(
            f"payload cannot be stored as JSON: {exc}; replace NaN and infinities with None"
        ) from None
    except TypeError as exc:
        raise PayloadError(
            f"payload of type {type(payload).__name__} cannot be stored: {exc}; pass bytes, or "
            "a dict, list, str, number or bool that json.dumps accepts"
        ) from None


def decode_payload(payload: bytes | None, *, job_id: int | None = None) -> Any:
    """The JSON value in ``payload``; raises PayloadError if it is not JSON."""
    if payload is None:
        return None
    try:
        return json.loads(payload)
    except ValueError:
        which = f"job {job_id}'s payload" if job_id is not None else "the payload"
        raise PayloadError(
            f"{which} is not JSON (it was enqueued as raw bytes); read job.payload instead"
        ) from None


def iso_duration(value: dt.timedelta) -> str:
    """``value`` as pandas writes a Timedelta (``pd.Timedelta(text)`` reads it back):
    ``P1DT2H3M4.5S``; a negative one as its days below zero plus a positive rest,
    ``P-1DT23H59M59S`` for minus one second. A pandas Timedelta keeps its nanoseconds."""
    isoformat = getattr(value, "isoformat", None)  # pandas' Timedelta, without importing it
    if callable(isoformat):
        text: str = isoformat()
        return text
    hours, rest = divmod(value.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    fraction = f".{value.microseconds:06d}".rstrip("0") if value.microseconds else ""
    return f"P{value.days}DT{hours}H{minutes}M{seconds}{fraction}S"


def _json_default(value: object) -> object:
    if isinstance(value, dt.datetime | dt.date | dt.time | dt.timedelta) and value != value:
        return None  # pandas' NaT (a datetime that is not equal to itself)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return iso_duration(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return dict(value)
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):  # pandas DataFrame / Series, without importing pandas
        value = with_index(value)
        to_dict = getattr(value, "to_dict", to_dict)
        try:
            return to_dict(orient="records")
        except TypeError:
            return to_dict()
    item = getattr(value, "item", None)
    if callable(item):  # numpy scalars
        return item()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _default_index(index: object) -> bool:
    """Whether a pandas index is the default one (0, 1, 2, ... unnamed), without pandas."""
    return (
        type(index).__name__ == "RangeIndex"
        and getattr(index, "start", None) == 0
        and getattr(index, "step", None) == 1
        and getattr(index, "name", None) is None
    )


def with_index(value: object) -> object:
    """A DataFrame whose index is not the default (a groupby result: its keys are in the
    index) with the index as its first columns, as ``reset_index()`` makes it, so that each
    row stored keeps it; anything else as it is (and a frame whose index would clash with a
    column's name: ``reset_index()`` refuses)."""
    if getattr(value, "columns", None) is None or _default_index(getattr(value, "index", None)):
        return value
    reset = getattr(value, "reset_index", None)
    if not callable(reset):
        return value
    try:
        return reset()
    except ValueError:  # "cannot insert region, already exists"
        return value


def is_series(value: object) -> bool:
    """Whether ``value`` looks like a pandas Series (without importing pandas)."""
    return (
        callable(getattr(value, "to_dict", None))
        and hasattr(value, "index")
        and hasattr(value, "dtype")
        and not hasattr(value, "columns")
    )


def _finite(value: object) -> object:
    """``value`` with NaN and infinities replaced by None (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def encode_result(value: object) -> str | None:
    """A handler's return value as JSON text for the ``history.result`` column.

    NaN and infinities become null, as pandas would write them. InvalidInputError for what
    jsonb cannot store: a NUL character (``\\u0000``) or a lone surrogate in any string or key,
    or more than :data:`RESULT_LIMIT` characters of JSON.
    """
    if value is None:
        return None
    try:
        try:
            text = json.dumps(value, default=_json_default, allow_nan=False, separators=(",", ":"))
        except ValueError:  # NaN somewhere: convert what the default hook produces, then retry
            plain = json.loads(json.dumps(value, default=_json_default, allow_nan=True))
            text = json.dumps(_finite(plain), allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise PayloadError(
            f"the handler returned a value pgq_nb cannot store as JSON ({exc}); return a dict, "
            "list, str, number, bool, None or a DataFrame"
        ) from None
    except RecursionError:
        raise PayloadError(
            "the handler returned a value nested too deeply (or containing itself) to store as "
            "JSON; return a flatter value"
        ) from None
    if len(text) > RESULT_LIMIT:
        raise InvalidInputError(
            f"the handler returned {len(text):,} characters of JSON; pgq_nb stores at most "
            f"{RESULT_LIMIT:,} (pgq_nb.encoding.RESULT_LIMIT): write large outputs to a table or "
            "a file and return where they are"
        )
    problem = _json_problem(text)
    if problem is not None:
        what, at = problem
        start = max(0, at - 30)
        near = text[start : at + 36]
        fix = (
            "text.replace('\\x00', '')"
            if "NUL" in what
            else "text.encode('utf-8', 'replace').decode()"
        )
        raise InvalidInputError(
            f"the handler returned a value with {what} in a string or key (near "
            f"{'...' if start else ''}{near}...), which Postgres jsonb cannot store; remove or "
            f"replace it, e.g. {fix}"
        )
    return text


def _json_problem(text: str) -> tuple[str, int] | None:
    """(what, position) of the first escape in ``text`` (ASCII JSON) that jsonb refuses:
    ``\\u0000``, or a surrogate escape that is not half of a pair."""
    if "\\u0000" not in text and "\\ud" not in text:
        return None
    lone = "a lone surrogate (not valid Unicode)"
    high: re.Match[str] | None = None  # a high surrogate escape waiting for its low half
    for match in _ESCAPE.finditer(text):
        code = match.group(1)
        if high is not None:
            if code is not None and match.start() == high.end() and "dc00" <= code <= "dfff":
                high = None
                continue
            return lone, high.start()
        if code is None:
            continue
        if code == "0000":
            return "a NUL character (\\u0000)", match.start()
        if "d800" <= code <= "dbff":
            high = match
        elif "dc00" <= code <= "dfff":
            return lone, match.start()
    return None if high is None else (lone, high.start())
