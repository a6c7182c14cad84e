"""Per-key limits (issue #21, item 3): at most ``max_per_key`` jobs of one key run at once.

``@q.entrypoint("sync", concurrency_key="customer_id", max_per_key=1)`` keys each job of
``sync`` by its payload's ``customer_id`` (or by a function of the payload); across every
worker on every machine at most ``max_per_key`` jobs of one key run at once, while jobs of
other keys run freely. This module holds the pure parts: the options' checks, a job's key, and
the keys of a batch (refused whole, before anything is written, when one row cannot be keyed).

The key is computed when a job is enqueued and stored in ``jobs.concurrency_key`` (as text;
an int key is its decimal digits). A process that enqueues jobs it has no handler for keys them
from what the entrypoint's workers recorded (``entrypoints.key_field``); a key computed by a
function can only be computed where the handler is registered, so enqueuing such a job from
elsewhere is refused. How claims keep the limit is described in ``sql/queries/keys.sql``
(``claim_keyed``) and DESIGN.md.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from pgq_nb.errors import InvalidInputError
from pgq_nb.models import DEDUPE_KEY_LIMIT, check_int, check_text, refuse_frame

if TYPE_CHECKING:
    from pgq_nb.registry import EntrypointSpec, Registry

logger = logging.getLogger("pgq_nb.worker")

#: A concurrency_key option: a payload field's name, or a function of the payload.
KeyOption = str | Callable[[Any], Any]

#: The longest key (UTF-8 bytes), as for dedupe keys: keys are indexed.
KEY_LIMIT = DEDUPE_KEY_LIMIT

#: How many of an entrypoint's first queued jobs a keyed claim looks through before it reads
#: the queue key by key (at least this, or 4 batches): see claim_keyed in sql/queries/keys.sql.
LOOKAHEAD = 256


class KeySource(NamedTuple):
    """Where an entrypoint's keys come from: ``field`` of the payload, or ``function``
    (None when the function is registered in another process only)."""

    entrypoint: str
    field: str | None
    function: Callable[[Any], Any] | None


def check_options(
    name: str, concurrency_key: object, max_per_key: object
) -> tuple[KeyOption | None, int | None]:
    """The checked ``(concurrency_key, max_per_key)`` of ``@q.entrypoint(name, ...)``:
    ``max_per_key`` defaults to 1 when a key is given, and needs one."""
    if concurrency_key is None:
        if max_per_key is not None:
            raise InvalidInputError(
                f"@q.entrypoint({name!r}, max_per_key={max_per_key!r}) needs a key to count "
                "by: add concurrency_key='a payload field' (or a function of the payload)"
            )
        return None, None
    if isinstance(concurrency_key, str):
        if not concurrency_key.strip():
            raise InvalidInputError(
                "concurrency_key must name a payload field (a non-empty str) or be a function "
                "of the payload"
            )
        check_text("concurrency_key", concurrency_key)
    elif not callable(concurrency_key):
        raise InvalidInputError(
            f"concurrency_key must name a payload field (a str) or be a function of the "
            f"payload, not {type(concurrency_key).__name__}"
        )
    if max_per_key is None:
        return concurrency_key, 1
    cap = check_int("max_per_key", max_per_key)
    if cap < 1:
        raise InvalidInputError(
            f"max_per_key must be at least 1 (jobs of one key running at once), not "
            f"{cap}; leave out concurrency_key for no per-key limit"
        )
    return concurrency_key, cap


def source(registry: Registry, entrypoint: str) -> KeySource | None:
    """Where ``entrypoint``'s keys come from: its handler here, else what its workers recorded
    (``registry.remote_keys``, read with the names an enqueue checks); None: not keyed."""
    spec = registry.handlers.get(entrypoint)
    if spec is not None:
        option = spec.concurrency_key
        if option is None:
            return None
        if isinstance(option, str):
            return KeySource(entrypoint, option, None)
        return KeySource(entrypoint, None, option)
    recorded = registry.remote_keys.get(entrypoint)
    if recorded is None or recorded[0] is None:  # no max_per_key recorded
        return None
    return KeySource(entrypoint, recorded[1], None)


def payload_data(payload: Any) -> Any:
    """The payload as the handler's ``job.data`` sees it: bytes holding JSON are decoded."""
    if isinstance(payload, bytes | bytearray | memoryview):
        try:
            return json.loads(bytes(payload))
        except (ValueError, UnicodeDecodeError):
            return payload
    return payload


def key_text(value: Any, what: str) -> str:
    """A key value as stored: a str as it is, an int as its digits; else InvalidInputError."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidInputError(
            f"{what} is {value!r} ({type(value).__name__}); a concurrency_key must be a str "
            "or an int: convert it, or key by another field"
        )
    text = value if isinstance(value, str) else str(value)
    return check_text(what, text, limit=KEY_LIMIT, in_bytes=True)


def key_of(src: KeySource, payload: Any, job: str) -> str | None:
    """The key of one job (``job`` names it in errors: "job 3", "row 'a'"). A function may
    return None: that job has no key, and no per-key limit."""
    if src.field is not None:
        data = payload_data(payload)
        if not isinstance(data, Mapping):
            raise InvalidInputError(
                f"{job} of entrypoint {src.entrypoint!r} has no field {src.field!r} (its "
                f"concurrency_key): its payload is {type(data).__name__}, not a JSON object; "
                "enqueue a dict with that field"
            )
        if src.field in data and data[src.field] is None:
            raise InvalidInputError(
                f"{job} of entrypoint {src.entrypoint!r} has {src.field!r} (its concurrency_key) "
                "set to null: give every job a key (a str or an int), or key by a function "
                "that returns None for jobs without a limit; nothing was enqueued"
            )
        if data.get(src.field) is None:
            raise InvalidInputError(
                f"{job} of entrypoint {src.entrypoint!r} has no field {src.field!r} (its "
                f"concurrency_key; fields: {sorted(map(str, data))[:10]}): add it to every "
                "payload; nothing was enqueued"
            )
        return key_text(data[src.field], f"the concurrency_key {src.field!r} of {job}")
    if src.function is None:
        raise InvalidInputError(
            f"entrypoint {src.entrypoint!r} is keyed by a function (concurrency_key=callable), "
            "registered only in its workers' process, so this process cannot compute its "
            f"jobs' keys: register the handler here too (@q.entrypoint({src.entrypoint!r}, "
            "concurrency_key=..., max_per_key=...)), or key it by a payload field"
        )
    try:
        value = src.function(payload_data(payload))
    except Exception as exc:
        raise InvalidInputError(
            f"the concurrency_key function of entrypoint {src.entrypoint!r} raised "
            f"{type(exc).__name__}: {exc} for {job}; fix the function or the payload; "
            "nothing was enqueued"
        ) from exc
    if value is None:
        return None
    return key_text(value, f"the concurrency_key of {job} (returned by the function)")


def batch_keys(
    registry: Registry,
    entrypoints: Sequence[str],
    payloads: Sequence[Any],
    job: Callable[[int], str],
) -> list[str | None] | None:
    """The keys of a batch, lined up with it (None: no entrypoint of it is keyed). The first
    row that cannot be keyed raises, so nothing of the batch is written."""
    sources = {e: source(registry, e) for e in set(entrypoints)}
    if not any(sources.values()):
        return None
    keys: list[str | None] = []
    for i, (entrypoint, payload) in enumerate(zip(entrypoints, payloads, strict=True)):
        src = sources[entrypoint]
        keys.append(None if src is None else key_of(src, payload, job(i)))
    return keys


async def enqueue_keys(
    registry: Registry, conn: Any, entrypoint: Any, payload: Any
) -> list[str | None] | None:
    """The concurrency keys of the jobs of a ``q.enqueue`` (None: none is keyed); see
    :mod:`pgq_nb.keys`. Reads the names' records first when some have no handler here."""
    names = list(entrypoint) if isinstance(entrypoint, list | tuple) else [entrypoint]
    if not all(isinstance(n, str) for n in names):
        return None  # the enqueue refuses them, with its own message
    for name in set(names):
        check_text("entrypoint", name)
    if not set(names) <= registry.handlers.keys():
        await registry.prepare(set(names), conn)
    if isinstance(entrypoint, str):
        refuse_frame(payload, f"q.enqueue_df({entrypoint!r}, {{rows}})")
        return batch_keys(registry, [entrypoint], [payload], lambda i: "the job")
    if payload is None:  # no payloads: each job's is None
        payload = [None] * len(names)
    if not isinstance(payload, Sequence) or len(payload) != len(names):
        return None  # the enqueue refuses it, with its own message
    return batch_keys(registry, names, payload, lambda i: f"payloads[{i}]")


def remote(rows: Sequence[Mapping[str, Any]]) -> dict[str, tuple[int | None, str | None]]:
    """``entrypoint_keys`` rows as ``{name: (max_per_key, key_field)}``."""
    return {r["name"]: (r["max_per_key"], r["key_field"]) for r in rows}


async def apply(
    queries: Mapping[str, str], conn: Any, ids: Sequence[int | None], keys: Any
) -> None:
    """Give jobs just written, in the caller's transaction, their keys (lined up with
    ``ids``; None ids are rows skipped as duplicates, None keys jobs without one)."""
    rows = [(i, k) for i, k in zip(ids, keys, strict=True) if i is not None and k is not None]
    if rows:
        await conn.execute(queries["set_job_keys"], [r[0] for r in rows], [r[1] for r in rows])


async def record(queries: Mapping[str, str], conn: Any, name: str, option: Any, cap: Any) -> None:
    """A starting worker records an entrypoint's per-key limit (cleared when it has none).
    The last worker to start sets it for every worker (as ``max_running``); one that changes
    what another recorded says so in the log, since the others follow it at once."""
    field = option if isinstance(option, str) else None
    was = await conn.fetchrow(queries["set_key_limit"], name, cap, field)
    if was is not None and was["max_per_key"] is not None and was["max_per_key"] != cap:
        logger.warning(
            "this worker changed entrypoint %r's max_per_key from %s to %s for every worker "
            "(the last worker to start sets it): start every worker of it with the same "
            "@q.entrypoint options",
            name,
            was["max_per_key"],
            cap,
            extra={"entrypoint": name, "was": was["max_per_key"], "now": cap},
        )


def lookahead(batch: int) -> int:
    """How many of the first queued jobs a keyed claim of ``batch`` jobs looks through."""
    return max(LOOKAHEAD, 4 * batch)


async def lock_claims(queries: Mapping[str, str], conn: Any, names: Sequence[str]) -> None:
    """Take the locks that serialise keyed claims of ``names`` until ``conn``'s transaction
    ends; before any claim statement of that transaction (see ``lock_keyed_claims``)."""
    await conn.execute(queries["lock_keyed_claims"], list(names))


async def claim(
    queries: Mapping[str, str], conn: Any, spec: EntrypointSpec, n: int, worker_id: int | None
) -> list[Any]:
    """Claim up to ``n`` jobs of keyed ``spec`` (its lock held: :func:`lock_claims`), in a
    statement that starts once the lock is held, so it counts every claim committed before."""
    rows: list[Any] = await conn.fetch(
        queries["claim_keyed"], spec.name, n, worker_id, spec.max_per_key, lookahead(n)
    )
    return rows
