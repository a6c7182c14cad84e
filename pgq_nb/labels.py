"""Tags and metadata of jobs (issue #20, item 2): checking them, and labelling jobs with them.

A job may carry ``tags`` (a list of short strings: what it belongs to, a dataset, an
experiment, a git commit) and ``meta`` (a small JSON object). Both are stored with the job,
kept in history, handed to the handler (``job.tags``, ``job.meta``) and filtered on by every
view (``tag="x"``, ``tags=[...]`` all of them, ``meta={"k": "v"}`` containment), through GIN
indexes.

Every value is checked before anything is written: a tag is a non-empty str of at most
:data:`TAG_LIMIT` characters without NUL; a job has at most :data:`TAGS_PER_JOB` of them; meta
is a dict with str keys that ``json.dumps`` accepts, at most :data:`META_LIMIT` bytes of JSON.
Jobs without labels store NULL and cost the indexes nothing (they are partial). Labels are
written right after the jobs, by one ``label_jobs`` UPDATE in the same transaction, so the
statements that add jobs without labels stay as they were.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pgq_nb.errors import InvalidInputError
from pgq_nb.models import check_text

#: The longest tag, in characters.
TAG_LIMIT = 200
#: The most tags one job may carry.
TAGS_PER_JOB = 64
#: The most bytes of JSON one job's meta may take (64 KiB): labels, not data.
META_LIMIT = 64 * 1024

Tags = list[str] | None
Meta = dict[str, Any] | None


def check_tags(value: object, name: str = "tags") -> Tags:
    """``value`` as a list of distinct tags in the order given (None or [] -> None); else
    InvalidInputError."""
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | set | frozenset):
        raise InvalidInputError(
            f"{name} must be a list of str, e.g. tags=['experiment-7'], not "
            f"{type(value).__name__} {value!r:.80}"
        )
    tags: list[str] = []
    for i, tag in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(tag, str):
            raise InvalidInputError(
                f"{where} is {type(tag).__name__} {tag!r:.80}; a tag must be a str "
                f"(write str({tag!r:.40}) to use its text)"
            )
        if not tag:
            raise InvalidInputError(f"{where} is an empty str; a tag needs at least one character")
        check_text(where, tag, limit=TAG_LIMIT)
        if tag not in tags:
            tags.append(tag)
    if len(tags) > TAGS_PER_JOB:
        raise InvalidInputError(
            f"{name} has {len(tags)} tags; a job may carry at most {TAGS_PER_JOB} "
            "(put the rest in meta=)"
        )
    return tags or None


def check_meta(value: object, name: str = "meta") -> Meta:
    """``value`` if it is a JSON object of at most META_LIMIT bytes (None or {} -> None);
    else InvalidInputError."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInputError(
            f"{name} must be a dict (a JSON object), e.g. meta={{'run': 7}}, not "
            f"{type(value).__name__} {value!r:.80}"
        )
    for key in value:
        if not isinstance(key, str):
            raise InvalidInputError(
                f"{name} has the key {key!r:.80} ({type(key).__name__}); JSON object keys "
                "must be str"
            )
    try:
        text = json.dumps(value, allow_nan=False, default=_numpy_scalar)
    except RecursionError:
        raise InvalidInputError(
            f"{name} is nested too deeply to encode as JSON; keep labels a few levels deep"
        ) from None
    except (TypeError, ValueError) as exc:  # ValueError: NaN, infinity, a circular reference
        raise InvalidInputError(
            f"{name} is not JSON-serialisable ({exc}); use str, numbers, bools, None, lists "
            "and dicts (convert dates with .isoformat())"
        ) from None
    if "\\u0000" in text:
        raise InvalidInputError(
            f"{name} contains a NUL character (\\x00), which Postgres jsonb cannot hold; "
            "remove or replace it"
        )
    size = len(text.encode())
    if size > META_LIMIT:
        raise InvalidInputError(
            f"{name} is {size:,} bytes of JSON; at most {META_LIMIT:,} are allowed "
            "(pgq_nb.labels.META_LIMIT): meta labels a job, the payload carries its data"
        )
    plain: dict[str, Any] = json.loads(text)  # numpy scalars now plain numbers
    return plain or None


def _numpy_scalar(value: object) -> Any:
    """json's ``default=``: a numpy scalar (np.int64(3), as a DataFrame's rows hold) as its
    Python value, without importing numpy; anything else is not JSON."""
    if type(value).__module__ == "numpy" and getattr(value, "shape", None) == ():
        return value.item()  # type: ignore[attr-defined]
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def check_filter(tag: object, tags: object, meta: object) -> tuple[Tags, Meta]:
    """A view's filter: ``tag`` (one) and ``tags`` (all of them) as one list, and ``meta``."""
    wanted = check_tags(tags) or []
    if tag is not None:
        if not isinstance(tag, str):
            raise InvalidInputError(
                f"tag must be a str (tags=[...] for several), not {type(tag).__name__}"
            )
        wanted = check_tags([tag, *wanted], "tag") or []
    return wanted or None, check_meta(meta)


async def fetch_planned(conn: Any, query: str, *args: Any) -> list[Any]:
    """The rows of ``query`` with ``args`` on a statement prepared afresh, so planned for these
    values (a custom plan): the ``($t IS NULL OR tags @> $t)`` filters of tags.sql fold to the
    bare containment the GIN indexes serve. (A cached statement switches to a generic plan after
    five runs, and a generic plan cannot use the index for such a filter.)"""
    statement = await conn.prepare(query)
    rows: list[Any] = await statement.fetch(*args)
    return rows


async def label(
    queries: dict[str, str],
    conn: Any,
    ids: Sequence[int | None],
    tags: Sequence[Tags],
    meta: Sequence[Meta],
) -> None:
    """Write each job's tags and meta (lined up with ``ids``; None ids are skipped rows)."""
    rows = [
        (i, t, m) for i, t, m in zip(ids, tags, meta, strict=True) if i is not None and (t or m)
    ]
    if rows:
        await conn.execute(
            queries["label_jobs"],
            [r[0] for r in rows],
            [None if r[1] is None else json.dumps(r[1]) for r in rows],
            [None if r[2] is None else json.dumps(r[2]) for r in rows],
        )
