"""Recording finished attempts: the batch statement, workflow settling, transactional handlers.

A batch without workflow steps is one statement (``finish_jobs``). A batch with steps is one
transaction: the statement (which also counts succeeded steps off their children), the failure
of everything downstream of a step that failed for good, and the settling of runs that have
nothing left to do (under the run's row lock, so that two workers finishing a run's last steps
at once cannot both miss the end).

A value the server refuses (a NUL in an error, a result jsonb cannot hold) must fail only its
own job. Errors and tracebacks are made storable first (:func:`storable_rows`, no round trip);
if the statement is still refused (:func:`is_refusal`: bad data, not a bad connection), the
batch is recorded row by row, each in a savepoint when ``conn`` is in a transaction, and a row
the server refuses again is recorded as a failed attempt saying why, without its result. The
common path stays one statement (plus a SAVEPOINT when ``conn`` is in a transaction, without
which an aborted transaction could not go on row by row).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import asyncpg

from pgq_nb import workflow_maps
from pgq_nb.errors import UnstorableResultError
from pgq_nb.handler_runs import (
    ALREADY_RECORDED,
    AlreadyRecorded,
    Encoded,
    encode_off_loop,
    run_in_thread,
)
from pgq_nb.models import ERROR_LIMIT, TRACEBACK_LIMIT, Job, storable_text
from pgq_nb.transaction import AsyncTransaction, Transaction
from pgq_nb.workflow_state import settle_steps

if TYPE_CHECKING:
    from pgq_nb.registry import EntrypointSpec, Registry
    from pgq_nb.store import Store


class Finished(NamedTuple):
    """A finished attempt, its fields in the column order of the ``finish_jobs`` query (a
    batch goes to it as ``zip(*batch)``)."""

    id: int
    outcome: str
    result: str | None  #: the result as JSON
    error: str | None
    traceback: str | None
    started: dt.datetime | None  #: None: the start the job's row has (mark_started's)
    finished: dt.datetime
    retry_delay_s: float  #: a retry's (or a snooze's) delay
    #: a cached entrypoint's success: its cache key, and (served from the cache) the job whose
    #: handler really ran (pgq_nb.caching)
    cache_key: str | None = None
    cached_from: int | None = None


logger = logging.getLogger("pgq_nb.completion")

#: The most text (results, errors, tracebacks, in characters) one ``finish_jobs`` statement
#: carries; a bigger batch is recorded in several statements. Postgres refuses a message over
#: 1 GiB, and each result may be up to ``encoding.RESULT_LIMIT`` (16 MiB).
STATEMENT_TEXT_LIMIT = 64 * 1024 * 1024

_SAVEPOINT = "SAVEPOINT pgq_nb_finish"
_ROLLBACK_TO = "ROLLBACK TO SAVEPOINT pgq_nb_finish"
_RELEASE = "RELEASE SAVEPOINT pgq_nb_finish"


def is_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` says a value of the statement cannot be stored (bad data: a NUL, an
    invalid escape, a value too large), as opposed to a lost connection or a conflict. Such an
    error comes back every time the same rows are sent: retrying the batch cannot help."""
    if isinstance(exc, asyncpg.DataError | asyncpg.ProgramLimitExceededError):
        return True  # asyncpg raises DataError for arguments it cannot encode, too
    return isinstance(exc, asyncpg.InternalServerError) and "alloc request size" in str(exc)


def storable_rows(batch: Sequence[Finished]) -> list[Finished]:
    """``batch`` with every error and traceback made storable (:func:`storable_text`: NUL
    shown as ``\\x00``, lone surrogates replaced, cut to ERROR_LIMIT / TRACEBACK_LIMIT)."""
    rows = list(batch)
    for position, row in enumerate(rows):
        error, trace = row.error, row.traceback
        if error is None and trace is None:
            continue
        fixed_error = storable_text(error, ERROR_LIMIT)
        fixed_trace = storable_text(trace, TRACEBACK_LIMIT)
        if fixed_error is not error or fixed_trace is not trace:
            rows[position] = row._replace(error=fixed_error, traceback=fixed_trace)
    return rows


def _parts(rows: list[Finished]) -> list[list[Finished]]:
    """``rows`` in parts of at most STATEMENT_TEXT_LIMIT characters of text (usually one;
    none for no rows: ``finish_jobs`` with no arrays at all is an error, not a no-op)."""
    if not rows:
        return []
    parts: list[list[Finished]] = [[]]
    total = 0
    for row in rows:
        size = sum(len(text) for text in (row.result, row.error, row.traceback) if text)
        if parts[-1] and total + size > STATEMENT_TEXT_LIMIT:
            parts.append([])
            total = 0
        parts[-1].append(row)
        total += size
    return parts


def _in_transaction(conn: Any) -> bool:
    """Whether ``conn`` is a connection inside a transaction (a pool is not)."""
    check = getattr(conn, "is_in_transaction", None)
    return bool(check()) if callable(check) else False


def _as_refused(row: Finished, exc: BaseException) -> Finished:
    """``row`` as an attempt that failed because the server refused to store it: no result, a
    readable error. A success becomes a failure; a retry, failure or cancellation stays one."""
    what = "the handler's result" if row.outcome == "succeeded" else "this attempt's error"
    reason = storable_text(f"{type(exc).__name__}: {exc}", 2_000)
    error = (
        f"the result/error could not be stored: {what} was refused by Postgres ({reason}); "
        "return values and raise errors Postgres can store (no NUL characters, results of "
        "at most pgq_nb.encoding.RESULT_LIMIT characters of JSON)"
    )
    outcome = "failed" if row.outcome == "succeeded" else row.outcome
    return row._replace(outcome=outcome, result=None, error=error, traceback=None)


def columns(batch: Sequence[Finished]) -> list[list[Any] | None]:
    """The finish statement's array parameters for ``batch``, one per field of
    :class:`Finished`; a column of nothing but None goes as NULL (``unnest`` of several arrays
    pads a NULL one with NULLs, the same rows): the driver then checks no element of it, which
    was a tenth of a no-op job's time in the worker's process (results, errors, tracebacks and
    cache fields are None for most batches)."""
    if not batch:
        return [[] for _ in Finished._fields]
    out: list[list[Any] | None] = []
    for column in zip(*batch, strict=True):
        out.append(None if all(value is None for value in column) else list(column))
    return out


async def _finish(conn: Any, statement: str, worker_id: int | None, rows: list[Finished]) -> Any:
    return await conn.fetch(statement, worker_id, *columns(rows))


async def _finish_isolated(
    conn: Any, statement: str, worker_id: int | None, rows: list[Finished], in_tx: bool
) -> list[Any]:
    """``finish_jobs`` for ``rows``; if the server refuses them, row by row (in a savepoint
    each inside a transaction), a refused row recorded as failed with the reason."""
    if in_tx:
        await conn.execute(_SAVEPOINT)
    try:
        done: list[Any] = await _finish(conn, statement, worker_id, rows)
        return done
    except Exception as exc:
        if not is_refusal(exc):
            raise
        if in_tx:
            await conn.execute(_ROLLBACK_TO)
        if len(rows) == 1:
            refused = exc
        else:
            logger.warning(
                "the server refused a batch of completions; recording them one by one",
                extra={"error": storable_text(str(exc), 2_000), "jobs": len(rows)},
            )
            refused = None
    done = []
    for row in rows:
        if refused is None:
            try:
                done.extend(await _finish_one(conn, statement, worker_id, row, in_tx))
                continue
            except Exception as exc:
                if not is_refusal(exc):
                    raise
                refused = exc
        logger.warning(
            "the server refused to store a job's result or error; the job fails",
            extra={"job_id": row.id, "error": storable_text(str(refused), 2_000)},
        )
        done.extend(await _finish_one(conn, statement, worker_id, _as_refused(row, refused), in_tx))
        refused = None
    return done


async def _finish_one(
    conn: Any, statement: str, worker_id: int | None, row: Finished, in_tx: bool
) -> list[Any]:
    if not in_tx:
        return list(await _finish(conn, statement, worker_id, [row]))
    # A savepoint of our own (not conn.transaction(): asyncpg refuses to nest one in a
    # transaction begun by a plain BEGIN, as the claim's is): the transaction survives a refusal.
    await conn.execute(_SAVEPOINT)
    try:
        done = list(await _finish(conn, statement, worker_id, [row]))
    except Exception:
        await conn.execute(_ROLLBACK_TO)
        raise
    await conn.execute(_RELEASE)
    return done


async def record(
    conn: Any,
    queries: dict[str, str],
    worker_id: int | None,
    batch: Sequence[Finished],
    *,
    steps: bool,
    slots: Sequence[int] = (),
    isolate: bool = True,
    sources: Sequence[int] | None = None,
) -> list[Any]:
    """Record ``batch`` on ``conn`` (in a transaction when ``steps`` or ``slots``); returns the
    jobs that moved to history. ``slots``: ids of jobs holding a global-concurrency slot.
    With ``steps``, the succeeded sources of map_overs make their steps (``sources``: which
    ids of the batch may be ones, as the claim said; None: any).

    ``conn`` is a pool or a connection. With ``isolate`` (the default) a row the server
    refuses fails its own job and no other (see the module's docstring); without it the
    refusal is raised (for a transaction that must commit all or nothing)."""
    rows = storable_rows(batch)
    statement = queries["finish_jobs"]
    in_tx = isolate and _in_transaction(conn)
    done: list[Any] = []
    for part in _parts(rows):
        if isolate:
            done.extend(await _finish_isolated(conn, statement, worker_id, part, in_tx))
        else:
            done.extend(await _finish(conn, statement, worker_id, part))
    if slots:
        await conn.execute(queries["release_slots"], worker_id, list(slots))
    if not steps:
        return done
    await workflow_maps.expand(conn, queries, rows, done, sources)
    dead = [r for r in done if r["outcome"] != "succeeded"]
    await settle_steps(conn, queries, dead, [r["workflow_id"] for r in done])
    return done


async def run_transactional(
    store: Store,
    registry: Registry,
    spec: EntrypointSpec,
    job: Job,
    worker_id: int | None,
    started: dt.datetime,
    executor: Any,
    *,
    slotted: bool = False,
    cancel_requested: Callable[[], bool] = lambda: False,
    marked: Callable[[], Awaitable[None]] | None = None,
) -> AlreadyRecorded:
    """Run a ``transactional=True`` handler with ``job.tx`` open, and record its success in
    that same transaction. If the handler raises, everything it wrote is rolled back and the
    exception propagates (the attempt then fails like any other). A ``def`` handler's
    transaction stays open until its thread returns, timeout or not (see
    :func:`pgq_nb.handler_runs.run_in_thread`); the caller applies an async one's timeout.
    ``marked`` is awaited before the success is recorded: the attempt's start mark, sent on
    another connection, must land first, or it would find the job gone and leave the attempt
    uncounted (as the worker's own completions wait for it)."""
    async with store.pool.acquire() as conn, conn.transaction():
        tx = AsyncTransaction(store, registry, conn, already_open=True)

        encoded: Encoded
        if spec.is_async:
            job.tx = tx
            encoded = await encode_off_loop(await spec.handler(job))
        else:
            job.tx = Transaction(tx)
            encoded = await run_in_thread(  # encodes in the handler's thread
                executor,
                spec.handler,
                job,
                timeout=spec.timeout,
                cancel_requested=cancel_requested,
            )
        if (wrong := workflow_maps.result_error(job, encoded.json, encoded.series)) is not None:
            raise wrong  # rolls the handler's writes back; the attempt fails for good
        finished = dt.datetime.now(dt.UTC)
        row = Finished(job.id, "succeeded", encoded.json, None, None, started, finished, 0.0)
        slots = [job.id] if slotted else []
        steps = job.workflow_id is not None
        if marked is not None:
            await marked()
        try:  # all or nothing: a completion the server refuses rolls the handler's writes back
            done = await record(
                conn,
                store.queries,
                worker_id,
                [row],
                steps=steps,
                slots=slots,
                isolate=False,
                sources=[job.id] if job._expands else [],
            )
        except Exception as exc:
            if not is_refusal(exc):
                raise
            raise UnstorableResultError(
                "the result could not be stored: Postgres refused it "
                f"({storable_text(f'{type(exc).__name__}: {exc}', 2_000)}); the handler's "
                "writes are rolled back; return a value Postgres jsonb can hold"
            ) from None
        if not done:
            raise RuntimeError(
                "the job was taken back from this worker (its heartbeat went stale) while the "
                "handler ran; its writes are rolled back and the job runs again elsewhere"
            )
    return ALREADY_RECORDED
