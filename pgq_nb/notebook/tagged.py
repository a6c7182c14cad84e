"""The views filtered by tag and meta (issue #20, item 2): the ``*_tagged`` queries of
``tags.sql``, run on a freshly prepared statement (:func:`pgq_nb.labels.fetch_planned`)."""

from __future__ import annotations

from typing import Any

from pgq_nb.labels import fetch_planned as fetch

__all__ = ["fetch", "filtered"]


def filtered(tags: list[str] | None, meta: dict[str, Any] | None) -> bool:
    """Whether a view was given a tag or meta filter."""
    return tags is not None or meta is not None
