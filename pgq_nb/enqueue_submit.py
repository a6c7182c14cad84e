"""``q.enqueue``'s entry: one job or a batch (:mod:`pgq_nb.enqueue`) with what rides along in
the same transaction: labels (``tags``, ``meta``), per-key limits' keys, ``cache=False``, the
tracing context; and the ANALYZE after a large batch.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pgq_nb import keys, runtime, tracing
from pgq_nb.caching import check_use_cache
from pgq_nb.enqueue import ANALYZE_AFTER_ROWS, Dedupe, enqueue_many, enqueue_one, refuse_reserved
from pgq_nb.labels import check_meta, check_tags, label

if TYPE_CHECKING:
    from pgq_nb.registry import Registry
    from pgq_nb.store import Store


async def submit(
    store: Store,
    registry: Registry,
    entrypoint: str | list[str],
    payload: Any,
    priority: Any,
    execute_after: dt.datetime | dt.timedelta | None,
    dedupe_key: Any,
    dedupe: Dedupe,
    connection: Any,
    analyze: Callable[[], Awaitable[None]],
    tags: Any = None,
    meta: Any = None,
    cache: bool | None = None,
) -> Any:
    """``q.enqueue``: one job or a batch on ``connection`` (or a pooled one); a large batch
    on a pooled connection then calls ``analyze``. ``tags`` and ``meta`` label the job (every
    job of a batch), written in the same transaction (:mod:`pgq_nb.labels`); without them,
    the statements are those of an enqueue without labels. ``cache=False`` marks the jobs to
    run whatever the cache holds (:mod:`pgq_nb.caching`), in the same transaction too."""
    refuse_reserved(entrypoint)
    labels = (check_tags(tags), check_meta(meta))
    uncached = not check_use_cache(cache)
    labelled = labels != (None, None) or uncached
    what = entrypoint if isinstance(entrypoint, str) else "batch"
    async with (
        store.connection(connection) as conn,
        tracing.enqueue_context(store, conn, what),
    ):
        # per-key limits: the keys, computed (or refused) before anything is written
        row_keys = await keys.enqueue_keys(registry, conn, entrypoint, payload)
        async with conn.transaction() if labelled or row_keys else contextlib.nullcontext():
            result = await _submit_on(
                store,
                registry,
                conn,
                entrypoint,
                payload,
                priority,
                execute_after,
                dedupe_key,
                dedupe,
                labels if labelled else None,
                row_keys,
                uncached,
            )
    if isinstance(result, list) and len(result) >= ANALYZE_AFTER_ROWS and connection is None:
        await analyze()
    return result


async def _submit_on(
    store: Store,
    registry: Registry,
    conn: Any,
    entrypoint: str | list[str],
    payload: Any,
    priority: Any,
    execute_after: dt.datetime | dt.timedelta | None,
    dedupe_key: Any,
    dedupe: Dedupe,
    labels: tuple[Any, Any] | None,
    row_keys: list[str | None] | None,
    uncached: bool = False,
) -> Any:
    """The writes of :func:`submit`, on ``conn`` (in a transaction when labelled, keyed or
    marked ``cache=False``)."""
    if isinstance(entrypoint, list | tuple):
        result: Any = await enqueue_many(
            store,
            registry,
            conn,
            list(entrypoint),
            payload,
            priority,
            execute_after,
            dedupe_key,
            dedupe,
        )
    else:
        result = await enqueue_one(
            store,
            registry,
            conn,
            entrypoint,
            payload,
            priority,
            execute_after,
            dedupe_key,
            dedupe,
        )
    ids = result if isinstance(result, list) else [result]
    if labels is not None:
        await label(store.queries, conn, ids, [labels[0]] * len(ids), [labels[1]] * len(ids))
    if row_keys is not None:
        await keys.apply(store.queries, conn, ids, row_keys)
    if uncached:
        await conn.execute(store.queries["uncache_jobs"], [i for i in ids if i is not None])
    return result


async def analyze_jobs(store: Store) -> None:
    """Refresh planner statistics of the jobs table (done after large bulk enqueues)."""
    async with store.pool.acquire() as conn:
        await conn.execute(store.queries["analyze_jobs"])


async def enqueue_on(
    store: Store,
    registry: Registry,
    entrypoint: str | list[str],
    payload: Any = None,
    priority: Any = 0,
    *,
    execute_after: dt.datetime | dt.timedelta | None = None,
    dedupe_key: Any = None,
    dedupe: Dedupe = "active",
    connection: Any = None,
    tags: Any = None,
    meta: Any = None,
    cache: bool | None = None,
) -> Any:
    """``q.enqueue`` (see :meth:`pgq_nb.queue.AsyncQueue.enqueue`), run on the loop of
    ``connection`` (or the pgq_nb loop)."""
    call = submit(
        store,
        registry,
        entrypoint,
        payload,
        priority,
        execute_after,
        dedupe_key,
        dedupe,
        connection,
        lambda: analyze_jobs(store),
        tags,
        meta,
        cache,
    )
    return await runtime.run_for(connection, call)
