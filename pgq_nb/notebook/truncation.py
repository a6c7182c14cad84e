"""Capped views that say what they left out (see :mod:`pgq_nb.view_limits`).

:func:`fetch_capped` reads one row more than a view's default cap, and only when that row is
there counts what matched, in the same snapshot as the rows (a repeatable-read transaction):
so a view that shows everything costs no count, and a warning's numbers describe the rows
returned. A limit the caller passed (or ``None``) is fetched as it is, with no count and no
warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pgq_nb.view_limits import ViewTruncated, is_default, truncated_message

if TYPE_CHECKING:
    from pgq_nb.store import SqlTarget

#: fetch(connection, limit) -> rows
Fetch = Callable[[Any, "int | None"], Awaitable[list[Any]]]
#: count(connection) -> (rows that matched, whether that is exact or a lower bound)
Count = Callable[[Any], Awaitable[tuple[int, bool]]]


async def fetch_capped(
    target: SqlTarget, limit: int | None, fetch: Fetch, count: Count
) -> tuple[list[Any], tuple[int, bool] | None]:
    """The rows of ``fetch`` within ``limit``, and, when a default cap left rows out, what
    ``count`` says matched (else None)."""
    if not is_default(limit) or limit is None:
        async with target.pool.acquire() as conn:
            return await fetch(conn, limit), None
    cap = int(limit)
    async with (
        target.pool.acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        rows = await fetch(conn, cap + 1)
        if len(rows) <= cap:
            return rows, None
        matched = await count(conn)
    return rows[:cap], matched


def warn_truncated(view: str, shown: int, matched: tuple[int, bool], **words: str) -> None:
    """Warn :class:`~pgq_nb.view_limits.ViewTruncated` for a view that showed ``shown`` rows
    of ``matched``; ``words`` as :func:`~pgq_nb.view_limits.truncated_message` takes them.

    Shown every time, not once per place as Python's default filter would: the same view
    called again with the same rows left out still leaves them out. (Filters still apply:
    ``warnings.filterwarnings("ignore", category=pgq_nb.ViewTruncated)`` silences it.)"""
    total, exact = matched
    warning = ViewTruncated(
        truncated_message(view, shown=shown, total=total, exact=exact, **words),
        shown=shown,
        total=total,
        exact=exact,
    )
    # Said as from "pgq_nb", not from the line of pgq_nb that warns: a view runs on pgq_nb's
    # loop thread, so no frame of the caller's is there to point at, and a path into the
    # library and its source line would only add noise under the cell (as the worker's
    # notices do: pgq_nb.worker_notices.say).
    warnings.warn_explicit(warning, ViewTruncated, "pgq_nb", 0, module="pgq_nb", registry=None)
