"""The queue's retention methods (a mixin of AsyncQueue): ``q.retention()`` to store and show
the policies workers apply (:mod:`pgq_nb.retention`), ``q.storage()`` to see what history
costs (:mod:`pgq_nb.storage`). The DataFrames are built by ``pgq_nb.notebook.retention_frames``,
imported on first use (so a worker never loads pandas)."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

from pgq_nb import runtime
from pgq_nb.errors import InvalidInputError
from pgq_nb.models import check_text
from pgq_nb.retention import (
    DEFAULT_KEY,
    Policy,
    check_keep_last,
    parse_period,
)
from pgq_nb.storage import storage_rows

if TYPE_CHECKING:
    import datetime as dt

    import pandas as pd

    from pgq_nb.store import Store


class Unset(enum.Enum):
    """An argument not given (``None`` means "kept for ever")."""

    UNSET = "unset"


UNSET = Unset.UNSET
#: The periods of a policy whose call leaves them out.
DEFAULTS = {"succeeded": "30d", "failed": "90d", "cancelled": "7d"}


class RetentionMethods:
    """Retention policies and storage (a mixin of AsyncQueue)."""

    store: Store

    @runtime.bridged
    async def retention(
        self,
        entrypoint: str | None = None,
        succeeded: str | dt.timedelta | Unset | None = UNSET,
        failed: str | dt.timedelta | Unset | None = UNSET,
        cancelled: str | dt.timedelta | Unset | None = UNSET,
        keep_last: int | Unset | None = UNSET,
        *,
        remove: bool = False,
    ) -> pd.DataFrame:
        """Store a retention policy, or show them.

        ``q.retention(succeeded="30d", failed="90d", cancelled="7d")`` sets the default policy
        (every entrypoint without one of its own); ``q.retention("score", succeeded="1d",
        keep_last=100)`` one entrypoint's. Periods are a duration ("30d", "12h", "90min",
        "1d12h", "2w"), a ``datetime.timedelta``, or ``None`` to keep those jobs for ever; a
        period left out takes its default (succeeded 30d, failed 90d (also upstream_failed),
        cancelled 7d). ``keep_last=N`` keeps each entrypoint's N newest jobs of each status
        whatever their age. A call replaces that entrypoint's whole policy;
        ``q.retention("score", remove=True)`` removes it.

        Every worker applies the policies in the background, a batch of at most 1,000 jobs per
        short transaction, one worker at a time, every 60 s (``PGQ_NB_RETENTION_INTERVAL``);
        claims never wait on it, the counters stay exact, and jobs of a workflow run still
        running are kept. ``q.purge_history()`` and ``pgq-nb purge`` purge once, by hand.

        With no policy argument (``q.retention()``): the stored policies, as a DataFrame
        (``entrypoint`` <NA> is the default policy; periods in seconds, NaN: kept for ever).
        :meth:`retention_list` has them as dicts."""
        key = DEFAULT_KEY if entrypoint is None else check_text("entrypoint", entrypoint)
        if entrypoint is not None and not key.strip():
            raise InvalidInputError(
                "entrypoint must name an entrypoint; leave it out (None) for the default policy"
            )
        given = {"succeeded": succeeded, "failed": failed, "cancelled": cancelled}
        setting = keep_last is not UNSET or any(v is not UNSET for v in given.values())
        if remove:
            if setting:
                raise InvalidInputError(
                    "remove=True takes only the entrypoint: q.retention('score', remove=True)"
                )
            await self.store.pool.execute(self.store.queries["drop_retention_policy"], key)
        elif setting:
            periods = {
                name: parse_period(name, DEFAULTS[name] if value is UNSET else value)
                for name, value in given.items()
            }
            kept = check_keep_last(None if keep_last is UNSET else keep_last)
            await self.store.pool.execute(
                self.store.queries["set_retention_policy"],
                key,
                periods["succeeded"],
                periods["failed"],
                periods["cancelled"],
                kept,
            )
        from pgq_nb.notebook import retention_frames

        frame: pd.DataFrame = retention_frames.policies_frame(await self.retention_list())
        return frame

    @runtime.bridged
    async def retention_list(self) -> list[dict[str, Any]]:
        """The stored retention policies as dicts: ``entrypoint`` (None: the default policy),
        ``succeeded``, ``failed``, ``cancelled`` (timedeltas; None: kept for ever) and
        ``keep_last`` (None: none)."""
        rows = await self.store.pool.fetch(self.store.queries["retention_policies"])
        return [Policy.from_row(r).as_record() for r in rows]

    @runtime.bridged
    async def storage(self) -> pd.DataFrame:
        """What the queue's tables cost: one row per table, entrypoint and status, with
        ``rows`` and ``bytes`` (history and jobs by entrypoint and status; payload_dtypes by
        entrypoint; notebook_outputs and notebooks under the notebook entrypoint; the workflow
        tables, workflows, job_deps and the map_over tables, with no entrypoint).

        ``rows`` are exact (history's from the counters, no scan). ``bytes`` are estimates,
        bounded however large history is: each table's real size on disk with its indexes and
        TOAST (``pg_total_relation_size``), shared among its rows by their widths sampled from
        about 20,000 rows (``TABLESAMPLE``). The bytes of a table add up to its size."""
        from pgq_nb.notebook import retention_frames

        frame: pd.DataFrame = retention_frames.storage_frame(await storage_rows(self.store))
        return frame
