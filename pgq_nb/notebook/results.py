"""``q.results()``: succeeded jobs of an entrypoint as a DataFrame, payloads and return values
expanded into columns (moved out of :mod:`pgq_nb.notebook.frames`, which re-exports it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pgq_nb.labels import Meta, Tags
from pgq_nb.models import check_int, check_text
from pgq_nb.notebook import dtypes, tagged
from pgq_nb.notebook.columns import decode_payload, frame, inferred, typed

if TYPE_CHECKING:
    from pgq_nb.store import SqlTarget

__all__ = ["results"]


def _unique(name: str, taken: set[str], suffix: str = "_result") -> str:
    while name in taken:
        name += suffix
    return name


def _result_rows(result: Any) -> list[Mapping[str, Any]]:
    """A handler's stored return value as rows: a dict is one row, a non-empty list of dicts
    (a DataFrame is stored as one) one row each, anything else one row with ``result``."""
    if result is None or result == []:
        return [{}]
    if isinstance(result, dict):
        return [result]
    if isinstance(result, list) and all(isinstance(item, dict) for item in result):
        return result
    return [{"result": result}]


def _expand(
    rows: Sequence[Mapping[str, Any]], batches: Sequence[Mapping[str, Any]], cached: bool = False
) -> pd.DataFrame:
    """One row per result row (see results); payload columns of jobs from a recorded batch
    (``batches``: rows of payload_dtypes_for) get that batch's dtypes back. ``cached``: with
    the column ``cached_from`` after ``job_id``."""
    owners = dtypes.batch_of(np.fromiter((r["job_id"] for r in rows), "int64", len(rows)), batches)
    described = [dtypes.columns_of(b["dtypes"]) for b in batches]
    positions: list[int] = []
    inputs: list[dict[str, Any]] = []
    outputs: list[Mapping[str, Any]] = []
    for position, row in enumerate(rows):
        payload = decode_payload(row["payload"])
        if payload is not None and not isinstance(payload, dict):
            payload = {"payload": payload}
        inputs.append(payload or {})
        for out in _result_rows(row["result"]):
            positions.append(position)
            outputs.append(out)
    input_names = list(dict.fromkeys(k for p in inputs for k in p))
    output_names = list(dict.fromkeys(k for o in outputs for k in o))
    # job_id is always the job's id: a payload key job_id is shown as job_id_payload
    own = {"job_id", "cached_from"} if cached else {"job_id"}
    taken = {*own, *input_names}
    shown = {
        name: _unique(name, taken, "_payload") if name in own else name for name in input_names
    }
    taken.update(shown.values())
    renamed = {name: _unique(name, taken) for name in output_names}
    columns: dict[str, pd.Series] = {"job_id": typed([rows[p]["job_id"] for p in positions], "int")}
    if cached:
        columns["cached_from"] = typed([rows[p]["cached_from"] for p in positions], "int")
    for name in input_names:
        per_job = [payload.get(name) for payload in inputs]
        column = dtypes.restored(per_job, owners, [d.get(name) for d in described])
        columns[shown[name]] = column.take(positions).reset_index(drop=True)
    for name in output_names:
        columns[renamed[name]] = inferred([o.get(name) for o in outputs])
    return pd.DataFrame(columns)


async def results(
    aq: SqlTarget,
    entrypoint: str,
    *,
    expand: bool = True,
    ids: Sequence[int] | None = None,
    tags: Tags = None,
    meta: Meta = None,
) -> pd.DataFrame:
    """Succeeded jobs of ``entrypoint`` (only ``ids``, if given; ``<NA>`` ids are ignored, so
    the Series ``enqueue_df`` returned can be passed as it is), in enqueue order.

    With ``expand`` (the default): ``job_id``, a column per payload key (a payload that is not
    a JSON object is one column ``payload``), then a column per result key. A handler that
    returned a dict gives one row; a list of dicts (a returned DataFrame is stored as its
    records) gives one row per dict, each with the job's id and payload; any other value is a
    column ``result``. ``job_id`` is always the job's id: a payload key ``job_id`` is the column
    ``job_id_payload``, and result columns named like ``job_id`` or a payload column get the
    suffix ``_result`` (repeated while the name is taken).
    Payload columns of jobs enqueued with ``enqueue_df`` get back the dtypes of the frame they
    came from (recorded per call: :mod:`pgq_nb.notebook.dtypes`; rows of calls with different
    dtypes are put together as ``pd.concat`` would); other columns, and every result column,
    get a dtype inferred from the JSON values (integers ``Int64``, timestamps, Decimals and
    durations stay strings). Join back to the enqueued frame on the ids ``enqueue_df`` returned::

        ids = q.enqueue_df("score", df)
        ...
        scored = df.assign(job_id=ids).merge(q.results("score")[["job_id", "score"]])

    Without ``expand``: ``job_id``, ``payload`` and ``result``, decoded, one row per job.

    Of an entrypoint with ``cache=True`` (any row with a cache key), a column ``cached_from``
    follows ``job_id``: the job whose handler really ran, for a row served from the cache
    (``<NA>`` for a row whose handler ran); see :mod:`pgq_nb.caching`.
    """
    check_text("entrypoint", entrypoint)
    wanted: list[int] | None = None
    if ids is not None:
        present = [i for i in ids if not pd.isna(i)]  # enqueue_df's <NA>: rows not enqueued
        wanted = [check_int("ids", int(i) if isinstance(i, np.integer) else i, 64) for i in present]
    if tagged.filtered(tags, meta):
        async with aq.pool.acquire() as conn:
            query = aq.queries["results_tagged"]
            rows = await tagged.fetch(conn, query, entrypoint, wanted, tags, meta)
    elif wanted is None:
        rows = await aq.pool.fetch(aq.queries["succeeded_results"], entrypoint)
    else:
        rows = await aq.pool.fetch(aq.queries["succeeded_results_of"], entrypoint, wanted)
    cached = any(row["keyed"] for row in rows)
    if not expand:
        kinds: dict[str, Any] = {"job_id": "int", "payload": "payload", "result": "json"}
        if cached:
            kinds = {"job_id": "int", "cached_from": "int", "payload": "payload", "result": "json"}
        return frame(rows, kinds)
    batches: list[Any] = []
    if rows:  # in id order
        lowest, highest = rows[0]["job_id"], rows[-1]["job_id"]
        batches = await aq.pool.fetch(aq.queries["payload_dtypes_for"], entrypoint, lowest, highest)
    return _expand(rows, batches, cached)
