"""``q.enqueue_df``: one job per DataFrame row, written with COPY in one transaction.

The path of a call:

1. check the arguments and the entrypoint (nothing is written if either is wrong);
2. convert the payload columns to JSON (:mod:`pgq_nb.notebook.encode`), in a thread for big
   frames so the pgq_nb loop keeps serving heartbeats of in-notebook workers; a value that
   cannot be stored raises PayloadError before anything is written;
3. in one transaction, per chunk of ``chunk_size`` rows: draw the chunk's ids from the jobs
   sequence (one round trip; ascending across chunks, into one int64 array that becomes the
   ids returned) and COPY its rows (id, entrypoint, payload, priority, execute_after,
   dedupe_key), advancing the progress bar after each; then record the payload columns'
   dtypes for the ids (one row of ``payload_dtypes``). Only one chunk's JSON texts and
   records exist at a time (and the next chunk's, being converted). With a ``dedupe_key``
   the rows are copied into a temporary table and moved with ``INSERT ... ON CONFLICT DO
   NOTHING`` instead, since a COPY would abort on the first key that a live job holds;
4. after the commit, refresh the planner's statistics if many rows went in (not when the
   rows are part of the caller's transaction, ``connection=``: they are not committed yet).

The jobs table's statement-level INSERT trigger fires for COPY as for INSERT; NOTIFYs inside
one transaction with the same payload collapse into one, sent at commit.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable, Sequence
from itertools import repeat
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pgq_nb import enqueue as limits
from pgq_nb.caching import check_use_cache
from pgq_nb.enqueue import check_payload_size, refuse_reserved, warn_skipped
from pgq_nb.errors import InvalidInputError
from pgq_nb.keys import apply as apply_keys
from pgq_nb.labels import label
from pgq_nb.models import check_int, check_text
from pgq_nb.notebook import dtypes, encode, frame_keys, frame_labels
from pgq_nb.notebook import enqueue_args as args
from pgq_nb.notebook import progress as bars

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from pgq_nb.registry import Registry
    from pgq_nb.store import Store

#: Frames at least this long are converted to JSON in a thread, off the pgq_nb loop.
THREAD_AFTER_ROWS = 5_000

_STAGING = "pgq_nb_enqueue_staging"


def _kept_rows(keys: list[str | None] | None, n: int) -> np.ndarray:
    """Positions of the rows to write: all, or the first of each dedupe key (and keyless)."""
    if keys is None:
        return np.arange(n)
    keyed = pd.Series(keys, dtype=object)
    return np.flatnonzero(~keyed.duplicated(keep="first").to_numpy() | keyed.isna().to_numpy())


def _settle(task: asyncio.Future[Any] | None) -> None:
    """Forget a conversion still pending after a failure, and any error it had (so asyncio does
    not log 'exception never retrieved'): the failure that got us here is the one to raise."""
    if task is None:
        return
    if not task.done():
        task.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
    elif not task.cancelled():
        task.exception()


async def enqueue_df(
    store: Store,
    registry: Registry,
    analyze: Callable[[], Awaitable[None]],
    entrypoint: str,
    df: pd.DataFrame,
    *,
    columns: Sequence[str] | None = None,
    priority: int | str = 0,
    execute_after: dt.datetime | dt.timedelta | str | None = None,
    dedupe_key: str | None = None,
    progress: bool | None = None,
    chunk_size: int = 10_000,
    connection: Any = None,
    tags: Sequence[str] | str | None = None,
    meta: dict[str, Any] | str | None = None,
    concurrency_key: str | None = None,
    cache: bool | None = None,
) -> pd.Series:
    """One job per row of ``df``; returns the job ids as a Series aligned to ``df.index``.

    - ``columns`` (default: every column) become each job's JSON payload, keyed by column
      name; the index is not sent (``df.reset_index()`` sends it). Values are converted as
      :mod:`pgq_nb.notebook.encode` describes (naive timestamps as given, Decimal as a string);
      their dtypes are recorded with the batch, and ``q.results()`` gives them back
      (:mod:`pgq_nb.notebook.dtypes`).
    - ``priority``: an int, or the name of an integer column.
    - ``execute_after``: a timezone-aware datetime, a timedelta from now (the server's clock),
      the name of a column of aware timestamps or timedeltas (NaT: due now), or None (now).
    - ``dedupe_key``: the name of a column of keys (converted with ``str``; missing: no key).
      A row whose key is already in the frame (first one wins) or held by a live job (queued
      or running) is skipped: its id is ``<NA>``, and a ``pgq_nb.enqueue.DuplicatesSkipped``
      warning names the rows (its ``skipped`` maps row position to the job holding the key).
    - ``progress``: a tqdm bar; by default shown in a notebook for 10,000 rows or more.
    - ``chunk_size``: rows per COPY (the bar advances per chunk); all chunks share one
      transaction, so either every row is enqueued or none. While one chunk is copied the
      next is converted, in a thread.
    - ``connection``: an asyncpg connection inside a transaction of yours (``q.transaction()``);
      the rows are written in a savepoint of it and commit or roll back with it.
    - ``tags``, ``meta``: labels, one value for every row or the name of a column
      (:mod:`pgq_nb.notebook.frame_labels`), written in the same transaction.
    - ``concurrency_key``: the name of a column of keys (str or int) for an entrypoint with a
      per-key limit, instead of its own key (:mod:`pgq_nb.notebook.frame_keys`).
    - ``cache=False``: run every row's job even if its entrypoint has ``cache=True`` and a
      cached result exists (:mod:`pgq_nb.caching`); written in the same transaction. (The
      payloads a frame makes are always JSON objects, so a cached entrypoint takes them all.)

    The ids have dtype ``Int64`` (nullable, for skipped rows) and name ``job_id``; they join
    with the ``job_id`` column of ``q.results()`` and ``q.history()``.
    """
    check_text("entrypoint", entrypoint)
    refuse_reserved(entrypoint)
    if not isinstance(df, pd.DataFrame):
        raise InvalidInputError(f"df must be a pandas DataFrame, not {type(df).__name__}")
    if check_int("chunk_size", chunk_size) < 1:
        raise InvalidInputError("chunk_size must be at least 1")
    names = args.payload_columns(df, columns)
    labels = frame_labels.row_labels(df, tags, meta, lambda p: args.label(df, p))
    skip = frame_labels.label_columns(tags, meta, columns)
    names = [n for n in names if n not in skip]
    # a constant priority is checked here and copied per chunk; a column is read per row
    priorities = args.priorities(df if isinstance(priority, str) else df.iloc[:1], priority)
    keys = args.dedupe_keys(df, dedupe_key)
    due = args.due(df, execute_after)
    uncached = not check_use_cache(cache)
    async with store.connection(connection) as conn:
        await registry.prepare({entrypoint}, conn)
    limit_keys = frame_keys.row_keys(registry, entrypoint, df, names, concurrency_key)
    if len(df) == 0:
        return pd.Series(pd.array([], dtype="Int64"), index=df.index, name="job_id")

    recorded = json.dumps(dtypes.record(df, names), separators=(",", ":"))
    rows = None if keys is None else _kept_rows(keys, len(df))  # None: every row
    every_row = rows is None or len(rows) == len(df)
    kept = len(df) if rows is None else len(rows)
    copied = ["id", "entrypoint", "payload"]  # columns left out take the table's default
    if isinstance(priority, str) or priority != 0:
        copied.append("priority")
    if due is not None:
        copied.append("execute_after")
    if keys is not None:
        copied.append("dedupe_key")
    in_thread = kept >= THREAD_AFTER_ROWS

    def positions(start: int, stop: int) -> list[int]:
        """The frame's row positions of kept rows start..stop."""
        return list(range(start, min(stop, kept))) if rows is None else rows[start:stop].tolist()

    def convert(start: int) -> list[bytes]:
        stop = start + chunk_size
        part = df.iloc[start:stop] if every_row or rows is None else df.iloc[rows[start:stop]]
        texts = encode.payloads(part, names)
        if max(map(len, texts), default=0) > limits.PAYLOAD_LIMIT:
            at = next(i for i, text in enumerate(texts) if len(text) > limits.PAYLOAD_LIMIT)
            check_payload_size(f"the payload of row {args.label(part, at)!r}", texts[at])
        return texts

    async def converted(start: int) -> list[bytes]:
        return await asyncio.to_thread(convert, start) if in_thread else convert(start)

    # the ids, kept rows' order (every row's: also the ids returned), filled chunk by chunk
    new_ids = np.full(kept, -1, dtype="int64")
    starts: list[int] = []
    ends: list[int] = []
    bar = bars.bar(progress, kept, f"enqueue {entrypoint}")
    pending: asyncio.Future[list[bytes]] | None = None
    try:
        async with store.connection(connection) as conn, conn.transaction():
            pending = asyncio.ensure_future(converted(0))  # overlaps the first id reservation
            if keys is None:
                table, schema = "jobs", store.schema
            else:
                await conn.execute(store.queries["create_enqueue_staging"])
                table, schema = _STAGING, "pg_temp"
            times: Sequence[Any] | None = None
            for start in range(0, kept, chunk_size):
                stop = min(start + chunk_size, kept)
                # ids per chunk (one round trip each), ascending over the whole frame: a
                # sequence only grows
                reserved = await conn.fetchrow(store.queries["reserve_job_ids"], stop - start)
                chunk_ids = np.sort(np.fromiter(reserved["ids"], "int64", stop - start))
                new_ids[start:stop] = chunk_ids
                _add_runs(starts, ends, chunk_ids)
                if due is not None and times is None:
                    times = due(reserved["now"])  # now(): the same for the whole transaction
                del reserved
                assert pending is not None  # set before the loop and for every next chunk
                payloads = await pending
                pending = asyncio.ensure_future(converted(stop)) if stop < kept else None
                at = positions(start, stop) if len(copied) > 3 else []
                per_row: list[Sequence[Any]] = []
                if "priority" in copied and isinstance(priority, str):
                    per_row.append([priorities[i] for i in at])
                elif "priority" in copied:
                    per_row.append(priorities[:1] * len(at))  # the constant, checked
                if times is not None:
                    per_row.append([times[i] for i in at])
                if keys is not None:
                    per_row.append([keys[i] for i in at])
                records = list(
                    zip(chunk_ids.tolist(), repeat(entrypoint), payloads, *per_row, strict=False)
                )
                del payloads, per_row, at
                await conn.copy_records_to_table(
                    table, records=records, columns=copied, schema_name=schema
                )
                bar.update(len(records))
                del records
            await conn.execute(
                store.queries["record_payload_dtypes"], entrypoint, starts, ends, recorded
            )
            count = kept
            held: dict[str, int] = {}
            if keys is not None:
                assert rows is not None  # with keys, the kept rows are known
                done = await conn.fetch(store.queries["insert_staged_jobs"])
                await conn.execute(store.queries["drop_enqueue_staging"])
                count = len(done)
                if count < kept:
                    inserted = np.sort(np.fromiter((r["id"] for r in done), "int64", count))
                    lost = ~np.isin(new_ids, inserted, assume_unique=True)
                    taken = [keys[p] for p in rows[lost].tolist()]
                    found = await conn.fetch(store.queries["find_dedupe_many"], taken)
                    held = {r["dedupe_key"]: r["id"] for r in found}
                    new_ids[lost] = -1
            if labels is not None or limit_keys is not None:
                written = [None if i < 0 else i for i in new_ids.tolist()]
                kept_rows = range(kept) if rows is None else rows.tolist()
                if labels is not None:
                    await label(
                        store.queries,
                        conn,
                        written,
                        [labels[0][i] for i in kept_rows],
                        [labels[1][i] for i in kept_rows],
                    )
                if limit_keys is not None:
                    await apply_keys(
                        store.queries, conn, written, [limit_keys[i] for i in kept_rows]
                    )
            if uncached:
                await conn.execute(store.queries["uncache_jobs"], new_ids[new_ids >= 0].tolist())
    finally:
        _settle(pending)
        bar.close()
    if rows is None:
        ids = new_ids
    else:
        ids = np.full(len(df), -1, dtype="int64")
        ids[rows] = new_ids
    if keys is not None and count < len(df):
        _warn_skipped(df, keys, ids, held)
    if count >= limits.ANALYZE_AFTER_ROWS and connection is None:
        await analyze()
    values = pd.arrays.IntegerArray(ids, ids < 0)  # <NA>: rows skipped
    return pd.Series(values, index=df.index, name="job_id", copy=False)


def _add_runs(starts: list[int], ends: list[int], ids: np.ndarray) -> None:
    """Append sorted ``ids`` as runs of consecutive ids (``dtypes.id_runs``), joining the
    first to the last run so far when they meet."""
    more_starts, more_ends = dtypes.id_runs(ids)
    if starts and more_starts and more_starts[0] == ends[-1]:
        ends[-1] = more_ends[0]
        more_starts, more_ends = more_starts[1:], more_ends[1:]
    starts.extend(more_starts)
    ends.extend(more_ends)


def _warn_skipped(
    df: pd.DataFrame, keys: list[str | None], ids: np.ndarray, held: dict[str, int]
) -> None:
    """DuplicatesSkipped (as the batch ``q.enqueue`` warns): which rows, whose key, held by
    which job (None: by an earlier row of the frame)."""
    positions = np.flatnonzero(ids < 0).tolist()
    skipped: dict[int, int | None] = {}
    for position in positions:
        key = keys[position]
        skipped[position] = held.get(key) if key is not None else None
    warn_skipped(
        skipped,
        keys,
        len(df),
        noun="rows",
        label=lambda p: df.index[p],
        note="; their job_id is <NA>",
        stacklevel=2,
    )
