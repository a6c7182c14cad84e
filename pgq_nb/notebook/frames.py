"""DataFrames in, DataFrames out: ``q.enqueue_df`` and the views, with fixed schemas.

Each function takes the :class:`~pgq_nb.store.Store` (or anything with its pool and queries)
first and runs on the pgq_nb loop
(``pgq_nb.views`` dispatches to them; ``Queue`` has blocking twins). Every view has the same
columns and dtypes whether it has rows or not (see :mod:`pgq_nb.notebook.columns`), and reads
history only through an index: counts come from the live ``jobs`` table and the
``finished_counts`` counters, lists walk ``history_finished_idx`` (or the per-entrypoint
index) newest first with a LIMIT. Views that show payloads (``jobs``, ``failed``) show a
preview of each (:data:`PAYLOAD_PREVIEW` bytes; only those are sent by the server) unless
asked for whole ones with ``payloads=True``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from pgq_nb.errors import InvalidInputError
from pgq_nb.labels import Meta, Tags
from pgq_nb.models import FINAL_STATUSES, LIVE_STATUSES, check_int, check_text
from pgq_nb.notebook import tagged
from pgq_nb.notebook.columns import (
    STATUS_DTYPE,
    Kind,
    decode_payload,
    frame,
    time_span,
    typed,
)
from pgq_nb.notebook.counting import stats
from pgq_nb.notebook.enqueue import enqueue_df
from pgq_nb.notebook.results import results
from pgq_nb.notebook.truncation import fetch_capped, warn_truncated
from pgq_nb.retention import purge_runs
from pgq_nb.view_limits import COUNT_CAP, FAILED_LIMIT, HISTORY_LIMIT, JOBS_LIMIT

if TYPE_CHECKING:
    from pgq_nb.store import SqlTarget

__all__ = ["STATUS_DTYPE", "enqueue_df", "failed", "history", "jobs", "purge_history"]
__all__ += ["results", "stats"]


#: purge_history() deletes this many rows per statement.
PURGE_BATCH = 100_000
#: ... and looks this many recorded dtypes (payload_dtypes rows) over per statement.
PURGE_DTYPES_BATCH = 1_000
#: jobs() and failed() show a payload longer than this many bytes as a str: its first bytes,
#: decoded, and a marker saying how long it is and where the whole one is.
PAYLOAD_PREVIEW = 1_000

JOBS: dict[str, Kind] = {
    "job_id": "int",
    "entrypoint": "str",
    "status": "status",
    "priority": "int",
    "attempts": "int",
    "created": "time",
    "execute_after": "time",
    "started": "time",
    "worker_id": "int",
    "dedupe_key": "str",
    "last_error": "str",
    "workflow_id": "int",
    "step_name": "str",
    "schedule_name": "str",
    "snoozes": "int",
    "payload": "payload",
}
HISTORY: dict[str, Kind] = {
    "job_id": "int",
    "entrypoint": "str",
    "status": "status",
    "attempts": "int",
    "priority": "int",
    "created": "time",
    "execute_after": "time",
    "started": "time",
    "finished": "time",
    "queue_wait_s": "float",
    "run_s": "float",
    "error": "str",
    "worker_id": "int",
    "dedupe_key": "str",
    "workflow_id": "int",
    "step_name": "str",
    "schedule_name": "str",
    "snoozes": "int",
    "cached_from": "int",
}
FAILED: dict[str, Kind] = {
    "job_id": "int",
    "entrypoint": "str",
    "attempts": "int",
    "error": "str",
    "errors": "json",
    "traceback": "str",
    "created": "time",
    "started": "time",
    "finished": "time",
    "payload": "payload",
}


def _limit(limit: int | None) -> int | None:
    if limit is None:
        return None
    if check_int("limit", limit, bits=64) < 0:
        raise InvalidInputError("limit must be 0 or more (or None for no limit)")
    return limit


def _status(status: str | None, allowed: tuple[str, ...], where: str) -> str | None:
    if status is None or status in allowed:
        return None if status is None else str(status)
    raise InvalidInputError(
        f"{where} holds jobs whose status is one of {list(allowed)}, not {status!r}"
    )


def _text(value: str | None, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidInputError(f"{name} must be a str or None, not {type(value).__name__}")
    return None if value is None else check_text(name, value)


def _preview(payloads: bool) -> int | None:
    if not isinstance(payloads, bool):
        raise InvalidInputError(f"payloads must be True or False, not {payloads!r}")
    return None if payloads else PAYLOAD_PREVIEW


def _with_payloads(
    rows: Sequence[Mapping[str, Any]], schema: dict[str, Kind], whole: str
) -> pd.DataFrame:
    """``frame(rows, schema)`` whose ``payload`` column holds each payload decoded, or for one
    the server cut (shorter than its ``payload_bytes``) a str preview with a marker."""
    result = frame(rows, {**schema, "payload": "json"})  # raw bytes; decoded below
    values: list[Any] = []
    for row in rows:
        payload, size = row["payload"], row["payload_bytes"]
        if payload is None or len(payload) >= size:
            values.append(decode_payload(payload))
            continue
        shown = payload.decode("utf-8", "replace")
        values.append(
            f"{shown}... [payload cut: {len(payload):,} of {size:,} bytes shown; "
            f"{whole} or q.get_job({row['job_id']}).payload has it all]"
        )
    result["payload"] = typed(values, "json")
    return result


async def jobs(
    aq: SqlTarget,
    *,
    status: str | None = None,
    entrypoint: str | None = None,
    limit: int | None = JOBS_LIMIT,
    payloads: bool = False,
    tags: Tags = None,
    meta: Meta = None,
) -> pd.DataFrame:
    """The live queue (queued, blocked and picked jobs), oldest first, one row per job.
    Payloads longer than PAYLOAD_PREVIEW bytes come as a preview unless ``payloads``. The
    default ``limit`` warns ViewTruncated when it leaves jobs out."""
    live = "q.jobs() (the live queue; finished jobs are in q.history())"
    wanted = _status(status, LIVE_STATUSES, live)
    name = _text(entrypoint, "entrypoint")
    preview = _preview(payloads)
    rows, matched = await fetch_capped(
        aq,
        _limit(limit),
        lambda conn, n: (
            tagged.fetch(conn, aq.queries["live_jobs_tagged"], wanted, name, n, preview, tags, meta)
            if tagged.filtered(tags, meta)
            else conn.fetch(aq.queries["live_jobs"], wanted, name, n, preview)
        ),
        lambda conn: (
            _more(limit)
            if tagged.filtered(tags, meta)
            else _exact(conn.fetchval(aq.queries["live_jobs_count"], wanted, name))
        ),
    )
    if matched is not None:
        warn_truncated(
            "q.jobs()",
            len(rows),
            matched,
            what="live jobs",
            which="oldest",
            narrower="status= or entrypoint=",
            count_with="q.stats()",
        )
    return _with_payloads(rows, JOBS, "q.jobs(payloads=True)")


async def _exact(count: Any) -> tuple[int, bool]:
    return int(await count), True


async def _more(limit: int | None) -> tuple[int, bool]:
    """What a capped view filtered by tag or meta matched: more than its cap (the counters
    have no labels, and counting the matches is left to q.stats(tag=...))."""
    return int(limit or 0) + 1, False


async def history(
    aq: SqlTarget,
    *,
    since: dt.datetime | dt.timedelta | str | None = None,
    until: dt.datetime | dt.timedelta | str | None = None,
    entrypoint: str | None = None,
    status: str | None = None,
    limit: int | None = HISTORY_LIMIT,
    tags: Tags = None,
    meta: Meta = None,
) -> pd.DataFrame:
    """Finished jobs, newest first: attempts, ``queue_wait_s`` (from due to last start),
    ``run_s`` (last attempt) and error. ``since`` (and ``until``, exclusive): an aware
    datetime, ISO string, or timedelta ago. The default ``limit`` warns ViewTruncated when it
    leaves jobs out, with how many (from the counters; over a ``since``/``until`` range
    counted up to :data:`~pgq_nb.view_limits.COUNT_CAP`)."""
    start, end = time_span(since, until)
    wanted = _status(status, FINAL_STATUSES, "q.history()")
    name = _text(entrypoint, "entrypoint")
    q = aq.queries

    def fetch(conn: Any, n: int | None) -> Any:
        if tagged.filtered(tags, meta):
            return tagged.fetch(conn, q["history_tagged"], start, end, wanted, n, name, tags, meta)
        if name is None:
            return conn.fetch(q["recent_history"], start, end, wanted, n)
        return conn.fetch(q["recent_history_of"], start, end, wanted, n, name)

    async def count(conn: Any) -> tuple[int, bool]:
        if tagged.filtered(tags, meta):
            return await _more(limit)
        if start is None and end is None:
            return int(await conn.fetchval(q["finished_total"], wanted, name)), True
        seen = COUNT_CAP + 1  # one more than the cap: the cap itself is still exact
        n = int(await conn.fetchval(q["history_count_between"], start, end, wanted, name, seen))
        return min(n, COUNT_CAP), n <= COUNT_CAP

    rows, matched = await fetch_capped(aq, _limit(limit), fetch, count)
    if matched is not None:
        ranged = since is not None or until is not None
        warn_truncated(
            "q.history()",
            len(rows),
            matched,
            what="finished jobs",
            narrower="a shorter since=/until=" if ranged else "since=... (or entrypoint=, status=)",
            count_with="q.stats(since=..., until=...)" if ranged else "q.stats()",
        )
    return frame(rows, HISTORY)


async def failed(
    aq: SqlTarget,
    *,
    entrypoint: str | None = None,
    limit: int | None = FAILED_LIMIT,
    payloads: bool = False,
    tags: Tags = None,
    meta: Meta = None,
) -> pd.DataFrame:
    """Jobs that failed for good, newest first: the last error, every attempt's error
    (``errors``, a list of ``{attempt, error, at}``), the traceback and the decoded payload
    (a preview of one longer than PAYLOAD_PREVIEW bytes, unless ``payloads``). The default
    ``limit`` warns ViewTruncated when it leaves jobs out (counted by the counters)."""
    preview = _preview(payloads)
    name = _text(entrypoint, "entrypoint")
    q = aq.queries

    def fetch(conn: Any, n: int | None) -> Any:
        if tagged.filtered(tags, meta):
            return tagged.fetch(conn, q["failed_tagged"], n, name, preview, tags, meta)
        if name is None:
            return conn.fetch(q["failed_view"], n, preview)
        return conn.fetch(q["failed_view_of"], n, name, preview)

    rows, matched = await fetch_capped(
        aq,
        _limit(limit),
        fetch,
        lambda conn: (
            _more(limit)
            if tagged.filtered(tags, meta)
            else _exact(conn.fetchval(q["finished_total"], "failed", name))
        ),
    )
    if matched is not None:
        warn_truncated(
            "q.failed()",
            len(rows),
            matched,
            what="failed jobs",
            narrower="entrypoint=" if name is None else "",
            count_with="q.stats()",
        )
    result = _with_payloads(rows, FAILED, "q.failed(payloads=True)")
    result["errors"] = typed([e if e is not None else [] for e in result["errors"]], "json")
    return result


async def purge_history(
    aq: SqlTarget, older_than: dt.timedelta, *, batch_size: int = PURGE_BATCH
) -> int:
    """Retention: delete every job that finished more than ``older_than`` ago (by the server's
    clock), oldest first, in statements of ``batch_size`` rows, each of which also subtracts its
    rows from ``finished_counts``; then the recorded dtypes of batches no job is left of, and
    the outputs of notebook jobs no longer kept.
    Returns how many jobs were deleted."""
    if not isinstance(older_than, dt.timedelta) or older_than < dt.timedelta(0):
        raise InvalidInputError("older_than must be a timedelta of 0 or more")
    if check_int("batch_size", batch_size) < 1:
        raise InvalidInputError("batch_size must be at least 1")
    async with aq.pool.acquire() as conn:
        cutoff = await conn.fetchval(aq.queries["server_now"]) - older_than
        total = 0
        while True:
            deleted = int(await conn.fetchval(aq.queries["purge_history"], cutoff, batch_size))
            total += deleted
            if deleted < batch_size:
                await _purge_dtypes(aq, conn)
                await conn.execute(aq.queries["purge_notebook_outputs"])
                await purge_runs(aq.queries, conn)
                return total


async def _purge_dtypes(aq: SqlTarget, conn: Any) -> None:
    """Forget the dtypes of batches no job is left of: below the lowest id left, then the rest."""
    await conn.execute(aq.queries["purge_payload_dtypes"])
    after, walk = 0, aq.queries["purge_unreferenced_dtypes"]
    while after is not None:
        after = await conn.fetchval(walk, after, PURGE_DTYPES_BATCH)
