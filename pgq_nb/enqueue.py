"""Enqueue: one job, or many in one statement (the PgQueuer list shape), with dedupe keys.

A dedupe key keeps a second job with the same key out, in one of three scopes:

- ``"active"`` (default): while a job with the key is queued or running;
- ``"queued"``: while it is queued (once it starts, the same key may be enqueued again);
- a ``timedelta``: for that long after the first job was enqueued, even once it finished.

One job with a taken key raises DuplicateJobError. In a batch, rows whose key is taken (by a
live job or an earlier row of the batch) are skipped, the rest go in; the returned list has
None at the skipped rows and a DuplicatesSkipped warning names them and the jobs holding them.

Everything is checked before anything is written (a server error would abort the caller's
transaction): entrypoint names (at most ``models.NAME_LIMIT`` characters) and dedupe keys (at
most ``models.DEDUPE_KEY_LIMIT`` bytes of UTF-8) without NUL characters or lone surrogates,
payloads of at most :data:`PAYLOAD_LIMIT` bytes (:data:`BATCH_PAYLOAD_LIMIT` for one batch),
delays and dedupe windows within :data:`pgq_nb.enqueue_checks.MAX_DELAY`.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pgq_nb.caching import check_cacheable
from pgq_nb.encoding import encode_payload
from pgq_nb.enqueue_checks import check_key, check_scope, check_time
from pgq_nb.errors import DuplicateJobError, InvalidInputError, PayloadError
from pgq_nb.models import check_int, check_text, refuse_frame
from pgq_nb.nbjobs.content import ENTRYPOINT as NOTEBOOK_ENTRYPOINT
from pgq_nb.registry import parse_rate as parse_rate
from pgq_nb.registry import rate_burst as rate_burst

if TYPE_CHECKING:
    from pgq_nb.registry import Registry
    from pgq_nb.store import Store

Dedupe = str | dt.timedelta

#: Bulk enqueues at least this large refresh the planner's statistics afterwards.
ANALYZE_AFTER_ROWS = 5_000

#: The largest payload one job may carry (64 MiB). A bytea holds up to 1 GiB, but every
#: payload is read by the claim, copied into history and shipped to a worker: a queue carries
#: references to data (a path, a key), not the data.
PAYLOAD_LIMIT = 64 * 1024 * 1024
#: The most payload bytes one batch enqueue sends (256 MiB): Postgres refuses a message over
#: 1 GiB ("invalid memory alloc request size"), and the arrays are copied on the way.
BATCH_PAYLOAD_LIMIT = 256 * 1024 * 1024


class DuplicatesSkipped(UserWarning):
    """Rows of a batch enqueue were skipped because their dedupe_key was taken."""

    def __init__(self, message: str, skipped: dict[int, int | None]) -> None:
        super().__init__(message)
        #: row position -> id of the job holding its key (None: an earlier row of the batch)
        self.skipped = skipped


def warn_skipped(
    skipped: dict[int, int | None],
    keys: Sequence[str | None],
    total: int,
    *,
    noun: str,
    label: Callable[[int], object] = lambda position: position,
    note: str = "",
    stacklevel: int,
) -> None:
    """Warn DuplicatesSkipped (the one message, for ``q.enqueue`` batches and enqueue_df):
    ``skipped`` maps row positions to the job holding their key (None: an earlier row);
    ``label`` names a row (its position, or a DataFrame's index); ``note`` ends the message."""
    shown = ", ".join(
        f"row {label(p)!r} (key {keys[p]!r}: "
        f"{'an earlier row' if skipped[p] is None else f'job {skipped[p]}'})"
        for p in list(skipped)[:10]
    )
    more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
    warnings.warn(
        DuplicatesSkipped(
            f"{len(skipped)} of {total} {noun} skipped, their dedupe_key is taken: "
            f"{shown}{more}{note}",
            skipped,
        ),
        stacklevel=stacklevel + 1,
    )


def check_payload_size(name: str, data: bytes | None) -> bytes | None:
    """``data`` if it is at most PAYLOAD_LIMIT bytes; else PayloadError."""
    if data is not None and len(data) > PAYLOAD_LIMIT:
        raise PayloadError(
            f"{name} is {len(data):,} bytes; a payload may be at most {PAYLOAD_LIMIT:,} bytes "
            "(pgq_nb.enqueue.PAYLOAD_LIMIT): store the data elsewhere (a table, a file) and "
            "enqueue where it is"
        )
    return data


async def enqueue_one(
    store: Store,
    registry: Registry,
    conn: Any,
    entrypoint: str,
    payload: Any,
    priority: Any,
    execute_after: Any,
    dedupe_key: str | None,
    dedupe: Dedupe,
) -> int:
    """Add one job; DuplicateJobError if its dedupe_key is taken."""
    if not isinstance(entrypoint, str):
        raise InvalidInputError(
            f"entrypoint must be a str or a list of str, not {type(entrypoint).__name__}"
        )
    check_text("entrypoint", entrypoint)
    refuse_frame(payload, f"q.enqueue_df({entrypoint!r}, {{rows}})")
    data = check_payload_size("the payload", encode_payload(payload))
    check_cacheable(registry, [entrypoint], [data])  # cache=True: deterministic JSON only
    prio = check_int("priority", priority)
    when = check_time(execute_after)
    if dedupe_key is not None:
        if not isinstance(dedupe_key, str):
            raise InvalidInputError("dedupe_key must be a str or None")
        check_key("dedupe_key", dedupe_key)
    scope, window = check_scope(dedupe)
    await registry.prepare({entrypoint}, conn)
    q = store.queries
    if dedupe_key is not None and window is not None:
        job_id = await conn.fetchval(
            q["enqueue_windowed"], entrypoint, data, prio, when, dedupe_key, window
        )
        find = q["find_windowed"]
    else:
        job_id = await conn.fetchval(
            q["enqueue_one"], entrypoint, data, prio, when, dedupe_key, scope
        )
        find = q["find_dedupe"]
    if job_id is None:
        existing = await conn.fetchval(find, dedupe_key)
        held = "within its window" if window is not None else f"while {scope}"
        raise DuplicateJobError(
            f"dedupe_key {dedupe_key!r} is taken by job {existing} ({held}); wait for it, "
            "or use another key",
            dedupe_key=str(dedupe_key),
            existing_id=existing,
        )
    return int(job_id)


def _check_batch(
    entrypoints: list[str],
    payloads: Sequence[Any] | None,
    priorities: Sequence[int] | int,
    dedupe_keys: Sequence[str | None] | None,
) -> tuple[list[bytes | None], list[int], list[str | None] | None]:
    n = len(entrypoints)
    if payloads is None:
        payloads = [None] * n
    if isinstance(priorities, int) and not isinstance(priorities, bool):
        priorities = [priorities] * n
    refuse_frame(payloads, "q.enqueue_df(entrypoint, {rows})")
    if isinstance(payloads, bytes | str | dict) or not isinstance(payloads, Sequence):
        raise InvalidInputError("with a list of entrypoints, payload must be a list too")
    if not isinstance(priorities, Sequence):
        raise InvalidInputError("with a list of entrypoints, priority must be a list or int")
    if not len(payloads) == len(priorities) == n:
        raise InvalidInputError(
            f"entrypoints, payloads and priorities must have the same length; got "
            f"{n}, {len(payloads)} and {len(priorities)}"
        )
    keys: list[str | None] | None = None
    if dedupe_keys is not None:
        if isinstance(dedupe_keys, str) or len(dedupe_keys) != n:
            raise InvalidInputError(
                "with a list of entrypoints, dedupe_key must be a list of the same length "
                "(None where a row has no key)"
            )
        keys = list(dedupe_keys)
        if not all(k is None or isinstance(k, str) for k in keys):
            raise InvalidInputError("dedupe keys must be str or None")
        for i, key in enumerate(keys):
            if key is not None:
                check_key(f"dedupe_keys[{i}]", key)
    for i, ep in enumerate(entrypoints):
        if not isinstance(ep, str):
            raise InvalidInputError(f"entrypoints[{i}] is {type(ep).__name__}, not str")
    for ep in set(entrypoints):
        check_text("entrypoint", ep)
    encoded = []
    total = 0
    for i, p in enumerate(payloads):
        try:
            data = check_payload_size("the payload", encode_payload(p))
        except InvalidInputError as exc:
            raise type(exc)(f"payloads[{i}]: {exc}") from None
        total += len(data or b"")
        encoded.append(data)
    if total > BATCH_PAYLOAD_LIMIT:
        raise PayloadError(
            f"this batch's payloads add up to {total:,} bytes; one enqueue may send at most "
            f"{BATCH_PAYLOAD_LIMIT:,} (pgq_nb.enqueue.BATCH_PAYLOAD_LIMIT): enqueue it in "
            "smaller batches"
        )
    prios = [check_int(f"priorities[{i}]", p) for i, p in enumerate(priorities)]
    return encoded, prios, keys


async def enqueue_many(
    store: Store,
    registry: Registry,
    conn: Any,
    entrypoints: list[str],
    payloads: Sequence[Any] | None,
    priorities: Sequence[int] | int,
    execute_after: Any,
    dedupe_keys: Sequence[str | None] | None,
    dedupe: Dedupe,
) -> list[int | None]:
    """Add many jobs in one statement; ids in input order (None for skipped duplicates)."""
    encoded, prios, keys = _check_batch(entrypoints, payloads, priorities, dedupe_keys)
    check_cacheable(registry, entrypoints, encoded)
    when = check_time(execute_after)
    scope, window = check_scope(dedupe)
    if window is not None and keys is not None:
        raise InvalidInputError(
            "a dedupe window applies to single enqueues; enqueue windowed keys one at a time"
        )
    n = len(entrypoints)
    if n == 0:
        return []
    await registry.prepare(set(entrypoints), conn)
    q = store.queries
    if keys is None or all(k is None for k in keys):
        rows = await conn.fetch(q["enqueue_many"], entrypoints, encoded, prios, [when] * n)
        return sorted(r["id"] for r in rows)
    ids: list[int] = (await conn.fetchrow(q["reserve_job_ids"], n))["ids"]
    rows = await conn.fetch(
        q["enqueue_many_deduped"], ids, entrypoints, encoded, prios, [when] * n, keys, scope
    )
    inserted = {r["id"] for r in rows}
    result: list[int | None] = [i if i in inserted else None for i in ids]
    skipped_rows = [pos for pos, i in enumerate(result) if i is None]
    if skipped_rows:
        held = {
            r["dedupe_key"]: r["id"]
            for r in await conn.fetch(q["find_dedupe_many"], [keys[p] for p in skipped_rows])
        }
        skipped = {p: held.get(keys[p]) for p in skipped_rows}
        warn_skipped(skipped, keys, n, noun="jobs", stacklevel=4)
    return result


RESERVED_MESSAGE = (
    "{entrypoint!r} is the built-in entrypoint that runs notebooks and takes only the payload "
    "q.enqueue_notebook() makes (it names the notebook's stored content): use "
    "q.enqueue_notebook(path, parameters={{...}}), or q.add_schedule(name, cron, "
    "notebook=path, parameters={{...}}) for a schedule"
)


def refuse_reserved(entrypoint: object) -> None:
    """InvalidInputError if ``entrypoint`` (a name or a list of names) is the notebook runner's:
    its jobs are made by ``q.enqueue_notebook``, whose payload a hand-made one would not match
    (the job would fail at run time)."""
    names = entrypoint if isinstance(entrypoint, list | tuple) else [entrypoint]
    if NOTEBOOK_ENTRYPOINT in names:
        raise InvalidInputError(RESERVED_MESSAGE.format(entrypoint=NOTEBOOK_ENTRYPOINT))
