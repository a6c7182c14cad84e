"""Retention (issue #20, item 1): policies, and their continuous application by workers.

``q.retention(...)`` stores a policy per entrypoint (or the default one) in
``retention_policies``; every worker runs :func:`retention_loop` in the background. Each turn
(every :data:`INTERVAL_ENV` seconds, default 60) walks the (entrypoint, status) pairs history
holds and deletes, for each, at most :data:`BATCH` rows per short transaction (the named query
``retention_purge``: an index range, ``SKIP LOCKED``, counters taken off in the same
statement), pausing :data:`PAUSE_S` between batches. A transaction-level advisory lock, taken
without waiting, lets one worker at a time do it. Claims never wait on it: they lock rows of
``jobs``, the purge deletes rows of ``history``.

The core never imports pandas: periods are parsed here (:func:`parse_period`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import math
import os
import re
import zlib
from typing import Any

from pgq_nb import db
from pgq_nb.errors import ConfigurationError, InvalidInputError

logger = logging.getLogger("pgq_nb.retention")

#: Seconds between a worker's retention turns (read at each worker start).
INTERVAL_ENV = "PGQ_NB_RETENTION_INTERVAL"
DEFAULT_INTERVAL_S = 60.0
#: History rows deleted per transaction, at most.
BATCH = 1000
#: Seconds between two batches of one turn: other work gets the server in between.
PAUSE_S = 0.05
#: The payload_dtypes rows looked at per statement when purging them.
DTYPES_BATCH = 1000
#: purge_side_tables() looks at this many workflow runs per statement.
RUNS_BATCH = 1000
#: The longest period accepted (as enqueue's MAX_DELAY: nothing is older).
MAX_PERIOD = dt.timedelta(days=365_000)
#: Which period of a policy holds for which history status.
STATUS_FIELD = {
    "succeeded": "succeeded",
    "failed": "failed",
    "upstream_failed": "failed",
    "cancelled": "cancelled",
}
#: The default policy's key in retention_policies.
DEFAULT_KEY = ""

_UNITS = {
    "w": 604800.0, "week": 604800.0, "weeks": 604800.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
    "h": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
    "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
}  # fmt: skip
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*")


def parse_period(name: str, value: object) -> dt.timedelta | None:
    """A retention period: a timedelta, a duration text ("30d", "12h", "1d12h", "90min",
    "2 weeks") or None (kept for ever). InvalidInputError otherwise, or when negative."""
    if value is None:
        return None
    if isinstance(value, dt.timedelta):
        delta = value
    elif isinstance(value, str):
        delta = _parse_text(name, value)
    else:
        raise InvalidInputError(
            f"{name} must be a duration such as '30d', a datetime.timedelta or None (kept "
            f"for ever), not {type(value).__name__}"
        )
    if delta < dt.timedelta(0):
        raise InvalidInputError(f"{name}={value!r} is negative; give a period of 0 or more")
    if delta > MAX_PERIOD:
        raise InvalidInputError(f"{name}={value!r} is more than 1,000 years; use None to keep")
    return delta


def _parse_text(name: str, text: str) -> dt.timedelta:
    lowered = text.strip().lower()
    seconds, at = 0.0, 0
    while at < len(lowered):
        part = _PART.match(lowered, at)
        if part is None or part.group(2) not in _UNITS:
            break
        seconds += float(part.group(1)) * _UNITS[part.group(2)]
        at = part.end()
    else:
        if lowered:
            # before timedelta(): a huge number overflows it (or is a float infinity)
            if not math.isfinite(seconds) or seconds > MAX_PERIOD.total_seconds():
                raise InvalidInputError(
                    f"{name}={text!r} is more than 1,000 years ({MAX_PERIOD.days:,} days); "
                    "give a shorter period, or None to keep for ever"
                )
            return dt.timedelta(seconds=seconds)
    raise InvalidInputError(
        f"{name}={text!r} is not a duration: write a number and a unit, such as '30d', '12h', "
        "'90min', '45s', '2w' or '1d12h'"
    )


@dataclasses.dataclass(frozen=True)
class Policy:
    """One stored policy: periods per status (None: kept for ever) and keep_last."""

    entrypoint: str | None  # None: the default policy
    succeeded: dt.timedelta | None
    failed: dt.timedelta | None
    cancelled: dt.timedelta | None
    keep_last: int | None

    def period(self, status: str) -> dt.timedelta | None:
        field = STATUS_FIELD.get(status)
        return None if field is None else getattr(self, field)

    @classmethod
    def from_row(cls, row: Any) -> Policy:
        key = row["entrypoint"]
        return cls(
            None if key == DEFAULT_KEY else key,
            row["succeeded"],
            row["failed"],
            row["cancelled"],
            row["keep_last"],
        )

    def as_record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_keep_last(value: object) -> int | None:
    """keep_last: None or a positive int (each entrypoint keeps at least its that many newest
    jobs of each status, whatever their age)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**31:
        raise InvalidInputError(
            f"keep_last must be a positive int (such as keep_last=100) or None, not {value!r}"
        )
    return value


def interval_s() -> float:
    """Seconds between retention turns: PGQ_NB_RETENTION_INTERVAL, or 60."""
    raw = os.environ.get(INTERVAL_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{INTERVAL_ENV}={raw!r} is not a number of seconds") from None
    if not value > 0:
        raise ConfigurationError(f"{INTERVAL_ENV}={raw!r} must be a positive number of seconds")
    return value


def lock_key(schema: str) -> int:
    """The advisory lock key of a schema's retention (one per schema, as a bigint)."""
    return zlib.crc32(f"pgq_nb.retention:{schema}".encode()) | (0x5247 << 32)


def pick(policies: list[Policy], entrypoint: str) -> Policy | None:
    """The policy that holds for ``entrypoint``: its own, else the default, else none."""
    default = None
    for policy in policies:
        if policy.entrypoint == entrypoint:
            return policy
        if policy.entrypoint is None:
            default = policy
    return default


async def apply_once(store: Any, *, batch: int = BATCH, pause: float = PAUSE_S) -> int | None:
    """One turn: apply every policy, a batch per short transaction. Returns how many jobs went,
    or None when another worker holds the turn."""
    q = store.queries
    key = lock_key(store.schema)
    async with store.pool.acquire() as conn:
        policies = [Policy.from_row(r) for r in await conn.fetch(q["retention_policies"])]
        if not policies:
            return 0
        targets = await conn.fetch(q["retention_targets"])
    total = 0
    for target in targets:
        policy = pick(policies, target["entrypoint"])
        period = None if policy is None else policy.period(target["status"])
        if policy is None or period is None:
            continue
        while True:
            async with store.pool.acquire() as conn, conn.transaction():
                if not await conn.fetchval(q["retention_try_lock"], key):
                    return None if total == 0 else total
                args = (target["entrypoint"], target["status"], period, policy.keep_last)
                deleted = int(await conn.fetchval(q["retention_purge"], *args, batch))
            total += deleted
            if deleted < batch:
                break
            await asyncio.sleep(pause)
    if total:
        async with store.pool.acquire() as conn:
            await purge_side_tables(q, conn)
    return total


async def purge_side_tables(q: dict[str, str], conn: Any) -> None:
    """Forget what only purged jobs used: the dtypes of batches no job is left of (below the
    lowest id left, then the rest in walks of DTYPES_BATCH), notebook outputs, and the
    workflow runs no step is left of, with their map_overs (walks of RUNS_BATCH runs)."""
    await conn.execute(q["purge_payload_dtypes"])
    after: int | None = 0
    while after is not None:
        after = await conn.fetchval(q["purge_unreferenced_dtypes"], after, DTYPES_BATCH)
    await conn.execute(q["purge_notebook_outputs"])
    await purge_runs(q, conn)


async def purge_runs(q: dict[str, str], conn: Any) -> None:
    """Forget the workflow runs no step is left of, with their map_overs, in walks of
    RUNS_BATCH runs (q.purge_history and the retention policies)."""
    after: int | None = 0
    while after is not None:
        after = await conn.fetchval(q["purge_workflow_runs"], after, RUNS_BATCH)


async def retention_loop(store: Any) -> None:
    """A worker's background task: a retention turn every interval_s() seconds, for ever.
    Transient database errors skip a turn (logged); anything else ends the task, as the
    worker's other background tasks do."""
    every = interval_s()
    while True:
        await asyncio.sleep(every)
        try:
            deleted = await apply_once(store)
        except db.TRANSIENT_ERRORS as exc:
            logger.warning("retention turn failed; trying again later", extra={"error": str(exc)})
            continue
        if deleted:
            logger.info("retention purged jobs", extra={"deleted": deleted})
