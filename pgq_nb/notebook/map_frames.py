"""``wf.map`` over a DataFrame: its rows as payloads written as ``q.enqueue_df`` writes them
(:mod:`pgq_nb.notebook.encode`), and its columns' dtypes, recorded with the steps' ids when the
workflow is submitted, so that ``q.results()`` gives them back (:mod:`pgq_nb.notebook.dtypes`).
"""

from __future__ import annotations

import json

import pandas as pd

from pgq_nb.errors import InvalidInputError
from pgq_nb.notebook import dtypes, encode
from pgq_nb.notebook.enqueue_args import payload_columns


def frame_payloads(frame: object, step: str) -> tuple[list[bytes], str]:
    """Every row of ``frame`` as a JSON payload, and the dtypes to record (JSON text)."""
    if not isinstance(frame, pd.DataFrame):
        raise InvalidInputError(
            f"map {step!r} takes a pandas DataFrame, not {type(frame).__name__}"
        )
    try:
        names = payload_columns(frame, None)
        payloads = encode.payloads(frame, names)
    except InvalidInputError as exc:
        message = str(exc).replace("; nothing was enqueued", "")
        raise type(exc)(f"map {step!r}: {message}; nothing was added to the workflow") from None
    return payloads, json.dumps(dtypes.record(frame, names), separators=(",", ":"))
