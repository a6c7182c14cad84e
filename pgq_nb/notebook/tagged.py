"""The views filtered by tag and meta (issue #20, item 2): the ``*_tagged`` queries of
``tags.sql``, run on a freshly prepared statement.

Each of those queries has ``($t IS NULL OR tags @> $t)``-shaped filters; a statement prepared
afresh runs with a custom plan, in which the parameters are constants, so the arms of an unused
filter fold away and the planner sees the bare containment (``tags @> '{x}'``), which the GIN
indexes serve. (A cached statement would switch to a generic plan after five runs, and a
generic plan cannot use the index for ``$t IS NULL OR ...``.)
"""

from __future__ import annotations

from typing import Any


async def fetch(conn: Any, query: str, *args: Any) -> list[Any]:
    """The rows of ``query`` with ``args``, planned for these values."""
    statement = await conn.prepare(query)
    rows: list[Any] = await statement.fetch(*args)
    return rows


def filtered(tags: list[str] | None, meta: dict[str, Any] | None) -> bool:
    """Whether a view was given a tag or meta filter."""
    return tags is not None or meta is not None
