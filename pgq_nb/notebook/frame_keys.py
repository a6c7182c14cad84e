"""``enqueue_df``'s per-key limits (issue #21, item 3): each row's concurrency key, from the
entrypoint's key (a payload column, or a function of the row's payload) or from the column
``concurrency_key=`` names, which overrides it. Every row is keyed before anything is written;
the first row that cannot be is named in the error. See :mod:`pgq_nb.keys`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from pgq_nb import keys
from pgq_nb.errors import InvalidInputError
from pgq_nb.notebook import encode
from pgq_nb.notebook import enqueue_args as args

if TYPE_CHECKING:
    from pgq_nb.registry import Registry


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _column_keys(df: pd.DataFrame, name: str, role: str) -> list[str | None]:
    values = args.column(df, name, role).tolist()  # numpy scalars as Python values
    out: list[str | None] = []
    for position, value in enumerate(values):
        row = f"row {args.label(df, position)!r}"
        if _missing(value):
            raise InvalidInputError(
                f"{row} has no {role} (column {name!r} is missing there): give every row a "
                "key; nothing was enqueued"
            )
        out.append(keys.key_text(value, f"the {role} of {row} (column {name!r})"))
    return out


def row_keys(
    registry: Registry,
    entrypoint: str,
    df: pd.DataFrame,
    names: Sequence[str],
    concurrency_key: str | None,
) -> list[str | None] | None:
    """Each row's key (None: the entrypoint has no per-key limit)."""
    src = keys.source(registry, entrypoint)
    if concurrency_key is not None:
        if not isinstance(concurrency_key, str):
            raise InvalidInputError(
                f"concurrency_key must name a column (a str), not {type(concurrency_key).__name__}"
            )
        if src is None:
            raise InvalidInputError(
                f"entrypoint {entrypoint!r} has no per-key limit, so concurrency_key="
                f"{concurrency_key!r} would limit nothing: register it with "
                f"@q.entrypoint({entrypoint!r}, concurrency_key=..., max_per_key=N)"
            )
        return _column_keys(df, concurrency_key, "concurrency_key")
    if src is None:
        return None
    if src.field is not None:
        if src.field not in names:
            raise InvalidInputError(
                f"entrypoint {entrypoint!r} is keyed by the payload field {src.field!r} "
                f"(its concurrency_key), which the payload columns do not have (columns: "
                f"{list(names)[:20]}): add that column, or name the key column with "
                "concurrency_key='column'"
            )
        return _column_keys(df, src.field, f"concurrency_key field {src.field!r}")
    texts = encode.payloads(df, names)
    return [
        keys.key_of(src, json.loads(text), f"row {args.label(df, i)!r}")
        for i, text in enumerate(texts)
    ]
