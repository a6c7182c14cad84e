"""``q.enqueue_df(..., tags=, meta=)``: the labels of each row (issue #20, item 2).

``tags`` is a list of str (every job of the batch carries it) or the name of a column whose
values are lists of str (None or NaN: no tags); ``meta`` is a dict (every job) or the name of
a column of dicts (None or NaN: none). A column named for labels is left out of the payload
unless ``columns=`` names it. Every row's labels are checked (:mod:`pgq_nb.labels`) before
anything is written; an error names the row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from pgq_nb.errors import InvalidInputError
from pgq_nb.labels import Meta, Tags, check_meta, check_tags


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)  # None or NaN


def _per_row(
    df: pd.DataFrame,
    value: object,
    name: str,
    check: Callable[[object, str], Any],
    label: Callable[[int], Any],
) -> list[Any] | None:
    if value is None:
        return None
    if not isinstance(value, str):
        one = check(value, name)
        return None if one is None else [one] * len(df)
    if value not in df.columns:
        raise InvalidInputError(
            f"{name}={value!r} names a column the frame does not have (columns: "
            f"{list(df.columns)[:20]}); give a column name, or the value itself for every row"
        )
    column = df[value]
    if isinstance(column, pd.DataFrame):
        raise InvalidInputError(f"{name}: the frame has more than one column named {value!r}")
    values = []
    for position, item in enumerate(column.tolist()):
        try:
            values.append(None if _missing(item) else check(item, name))
        except InvalidInputError as exc:
            raise InvalidInputError(
                f"column {value!r}, row {label(position)!r}: {exc}; nothing was enqueued"
            ) from None
    return values if any(v is not None for v in values) else None


def row_labels(
    df: pd.DataFrame, tags: object, meta: object, label: Callable[[int], Any]
) -> tuple[list[Tags], list[Meta]] | None:
    """Each row's tags and meta, lined up with ``df``'s rows (None: no row has labels)."""
    per_tags = _per_row(df, tags, "tags", check_tags, label)
    per_meta = _per_row(df, meta, "meta", check_meta, label)
    if per_tags is None and per_meta is None:
        return None
    n = len(df)
    return per_tags or [None] * n, per_meta or [None] * n


def label_columns(tags: object, meta: object, columns: Sequence[str] | None) -> set[str]:
    """Columns named for labels, left out of the default payload (``columns=None``)."""
    if columns is not None:
        return set()
    return {value for value in (tags, meta) if isinstance(value, str)}
