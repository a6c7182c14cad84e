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
from pgq_nb.notebook.columns import inferred, typed
from pgq_nb.notebook.result_columns import Columns, frame_of

if TYPE_CHECKING:
    from pgq_nb.store import SqlTarget

__all__ = ["RESULTS_CHUNK", "results"]

#: Rows fetched (through a server-side cursor) and decoded at a time; only their values are
#: kept (:mod:`pgq_nb.notebook.result_columns`), so the rows are never all held as records.
RESULTS_CHUNK = 2_000


def _unique(name: str, taken: set[str], suffix: str = "_result") -> str:
    while name in taken:
        name += suffix
    return name


def _ids(ids: np.ndarray) -> pd.Series:
    """Job ids as ``typed(..., "int")`` makes them (never missing), wrapping ``ids``."""
    return pd.Series(pd.arrays.IntegerArray(ids, np.zeros(len(ids), bool)), copy=False)


def _expand(
    got: Columns, batches: Sequence[Mapping[str, Any]], cached: bool = False
) -> pd.DataFrame:
    """One row per result row (see results); payload columns of jobs from a recorded batch
    (``batches``: rows of payload_dtypes_for) get that batch's dtypes back. ``cached``: with
    the column ``cached_from`` after ``job_id``. Each column's values are unpacked, typed and
    dropped in turn."""
    job_ids = got.job_ids()
    owners = dtypes.batch_of(job_ids, batches)
    described = [dtypes.columns_of(b["dtypes"]) for b in batches]
    every = got.one_row_each()  # one row per job: no row is repeated
    positions = np.concatenate(got.positions) if got.positions and not every else None
    got.positions = []
    input_names = list(got.inputs.columns)
    output_names = list(got.outputs.columns)
    # job_id is always the job's id: a payload key job_id is shown as job_id_payload
    own = {"job_id", "cached_from"} if cached else {"job_id"}
    taken = {*own, *input_names}
    shown = {
        name: _unique(name, taken, "_payload") if name in own else name for name in input_names
    }
    taken.update(shown.values())
    renamed = {name: _unique(name, taken) for name in output_names}
    columns: dict[str, pd.Series] = {
        "job_id": _ids(job_ids if positions is None else job_ids[positions])
    }
    if cached:
        cached_from = got.cached_from.values()
        if positions is not None:
            cached_from = [cached_from[p] for p in positions.tolist()]
        columns["cached_from"] = typed(cached_from, "int")
    del job_ids
    got.ids = []
    # one batch (or none) holds every row
    only = int(owners[0]) if len(owners) and owners.min() == owners.max() else None
    for name in input_names:
        column = got.inputs.columns.pop(name)
        if only is not None:
            description = described[only].get(name) if only >= 0 else None
            restored = column.series(description, dtypes.restore)
        else:
            descriptions = [d.get(name) for d in described]
            restored = dtypes.restored(column.values(), owners, descriptions)
        del column
        columns[shown[name]] = (
            restored.reset_index(drop=True)
            if positions is None
            else restored.take(positions).reset_index(drop=True)
        )
    for name in output_names:
        columns[renamed[name]] = got.outputs.columns.pop(name).series(None, _inferred)
    return frame_of(columns)


def _inferred(values: Sequence[Any], description: None) -> pd.Series:
    return inferred(values)


async def _stream(
    aq: SqlTarget, got: Columns, entrypoint: str, wanted: list[int] | None, tags: Tags, meta: Meta
) -> list[Any]:
    """Feed the succeeded rows to ``got``, RESULTS_CHUNK at a time (through a server-side
    cursor unless filtered by labels); returns the recorded dtypes of their batches."""
    async with aq.pool.acquire() as conn, conn.transaction():
        if tagged.filtered(tags, meta):
            query = aq.queries["results_tagged"]
            rows = await tagged.fetch(conn, query, entrypoint, wanted, tags, meta)
            for start in range(0, len(rows), RESULTS_CHUNK):
                got.add(rows[start : start + RESULTS_CHUNK])
            del rows
        else:
            if wanted is None:
                cursor = await conn.cursor(aq.queries["succeeded_results"], entrypoint)
            else:
                cursor = await conn.cursor(aq.queries["succeeded_results_of"], entrypoint, wanted)
            while chunk := await cursor.fetch(RESULTS_CHUNK):
                got.add(chunk)
                del chunk
        ids = got.job_ids() if got.expand and got.jobs else None
        if ids is None:
            return []
        # in id order
        query = aq.queries["payload_dtypes_for"]
        return list(await conn.fetch(query, entrypoint, int(ids[0]), int(ids[-1])))


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
    got = Columns(expand)
    batches = await _stream(aq, got, entrypoint, wanted, tags, meta)
    cached = got.keyed
    if not expand:
        columns = {"job_id": _ids(got.job_ids())}
        if cached:
            columns["cached_from"] = typed(got.cached_from.values(), "int")
        columns["payload"] = typed(got.payloads, "json")
        columns["result"] = typed(got.results, "json")
        return frame_of(columns)
    return _expand(got, batches, cached)
