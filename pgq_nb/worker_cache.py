"""How a worker serves cached entrypoints (issue #21, item 4; see :mod:`pgq_nb.caching`).

After each claim, the jobs of entrypoints with ``cache=True`` get their cache keys, and the
keys of those that may use the cache (not enqueued with ``cache=False``) are looked up in one
statement (``cache_lookup``). A batch without such jobs costs nothing: no key, no statement.

A hit runs no handler: its attempt is an awaitable that returns the stored result at once,
and goes through the worker's usual path (slots, workflow steps, hooks, the batched
``finish_jobs``), recorded as succeeded with its cache key and ``cached_from``. A miss runs
the handler; its success records the key. A payload that cannot be cached fails its job for
good with UncacheablePayloadError.

The look-up runs in the claim's own transaction (after the claim, before the COMMIT), under
its planner settings (no sequential scan, no sort): a plan made while history was small
would otherwise read all of it for every batch once it has grown (measured: a 10,000-job
drain went from 2 s to 50 s). A look-up that fails fails the claim, which is retried as a
claim is.

A base class of :class:`pgq_nb.worker.Worker`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from pgq_nb.caching import cache_key, uncacheable_message
from pgq_nb.errors import UncacheablePayloadError
from pgq_nb.handler_runs import Encoded

if TYPE_CHECKING:
    from pgq_nb.models import Job
    from pgq_nb.registry import EntrypointSpec
    from pgq_nb.store import Store

#: Batches with more payload bytes than this of cached entrypoints make their keys in a
#: thread, off the worker's loop.
THREAD_AFTER_BYTES = 1_000_000


def _keys(jobs: list[tuple[Job, str]]) -> list[str | UncacheablePayloadError]:
    """Each job's cache key (its entrypoint, ``version``, payload), or why it has none."""
    keys: list[str | UncacheablePayloadError] = []
    for job, version in jobs:
        try:
            keys.append(cache_key(job.entrypoint, version, job.payload, job._parents))
        except UncacheablePayloadError as exc:
            where = f"the payload of job {job.id}"
            keys.append(
                UncacheablePayloadError(uncacheable_message(job.entrypoint, str(exc), where))
            )
    return keys


async def _stored(result: str | None) -> Encoded:
    return Encoded(result)


async def _refused(error: UncacheablePayloadError) -> Any:
    raise error


class Caching:
    """Cache look-ups and hits of a worker; see the module's docstring."""

    store: Store
    specs: dict[str, EntrypointSpec]
    _q: dict[str, str]

    def _cache_state(self) -> None:
        #: job id -> (cache key, job its result came from), until its outcome is recorded
        self._cache_of: dict[int, tuple[str | None, int | None]] = {}
        #: job id -> the stored result of a hit (JSON), or the error of an uncacheable payload
        self._cache_hits: dict[int, str | UncacheablePayloadError | None] = {}

    async def _look_up_cache(self, conn: Any, jobs: list[Job]) -> None:
        """Key the claimed ``jobs`` of cached entrypoints and look their keys up (one
        statement on ``conn``, in the claim's transaction, whose planner settings keep it on
        the indexes); see the module's docstring."""
        cached: list[tuple[Job, str]] = []
        ttls: list[float | None] = []
        for job in jobs:
            options = self.specs[job.entrypoint].cache
            if options is not None and options.version is not None:
                cached.append((job, options.version))
                ttls.append(options.ttl)
        if not cached:
            return
        size = sum(len(job.payload or b"") for job, _ in cached)
        keys = (
            await asyncio.to_thread(_keys, cached) if size > THREAD_AFTER_BYTES else _keys(cached)
        )
        wanted: list[tuple[int, str, float | None]] = []
        for (job, _), key, ttl in zip(cached, keys, ttls, strict=True):
            if isinstance(key, UncacheablePayloadError):
                self._cache_hits[job.id] = key
                continue
            self._cache_of[job.id] = (key, None)
            if job.use_cache is not False:
                wanted.append((job.id, key, ttl))
        if not wanted:
            return
        rows = await conn.fetch(
            self._q["cache_lookup"], [w[1] for w in wanted], [w[2] for w in wanted]
        )
        found = {row["cache_key"]: row for row in rows}
        for job_id, key, _ in wanted:
            row = found.get(key)
            if row is not None:
                self._cache_of[job_id] = (key, row["origin"])
                self._cache_hits[job_id] = row["result"]

    def _cached_call(self, job: Job) -> Awaitable[Any] | None:
        """The attempt of a hit (its stored result) or of an uncacheable payload (its
        failure); None for a job that runs its handler."""
        if job.id not in self._cache_hits:
            return None
        hit = self._cache_hits.pop(job.id)
        if isinstance(hit, UncacheablePayloadError):
            return _refused(hit)
        return _stored(hit)

    def _cache_fields(self, job_id: int) -> tuple[str | None, int | None]:
        """What the outcome of ``job_id`` records: its cache key and the job its result came
        from (forgotten here: the attempt is over)."""
        self._cache_hits.pop(job_id, None)
        return self._cache_of.pop(job_id, (None, None))
