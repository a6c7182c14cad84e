"""DataFrame methods of the queue, loaded on first use.

These are the analyst-facing views and the DataFrame enqueue. Their code lives in
``pgq_nb.notebook.frames``, which needs pandas; it is imported only when one of them is called
(a plain import inside the method, listed among the import contract's exceptions in
pyproject.toml, so a ``pgq-nb worker`` process never loads pandas; tests/test_lean_imports.py
proves it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from pgq_nb import runtime
from pgq_nb.enqueue_checks import MAX_DELAY
from pgq_nb.errors import InvalidInputError
from pgq_nb.labels import check_filter
from pgq_nb.models import check_int
from pgq_nb.view_limits import (
    FAILED_LIMIT,
    HISTORY_LIMIT,
    JOBS_LIMIT,
    WORKFLOWS_LIMIT,
)

if TYPE_CHECKING:
    import pandas as pd

    from pgq_nb.registry import Registry
    from pgq_nb.store import Store


class Views:
    """DataFrames in, DataFrames out (a mixin of AsyncQueue).

    Every view (jobs, history, results, failed, stats) takes ``tag="x"`` (jobs carrying that
    tag), ``tags=[...]`` (carrying all of them) and ``meta={"k": "v"}`` (whose meta contains
    these pairs), served by GIN indexes: see :mod:`pgq_nb.labels`."""

    pool: Any
    queries: dict[str, str]
    store: Store
    registry: Registry
    analyze: Callable[[], Awaitable[None]]  # AsyncQueue.analyze
    worker_list: Callable[[], Awaitable[list[dict[str, Any]]]]  # Operations.worker_list

    async def enqueue_df(
        self,
        entrypoint: str,
        df: pd.DataFrame,
        *,
        columns: Sequence[str] | None = None,
        priority: int | str = 0,
        execute_after: dt.datetime | dt.timedelta | str | None = None,
        dedupe_key: str | None = None,
        progress: bool | None = None,
        chunk_size: int = 10_000,
        connection: Any = None,
        tags: Sequence[str] | str | None = None,
        meta: dict[str, Any] | str | None = None,
        concurrency_key: str | None = None,
        cache: bool | None = None,
    ) -> pd.Series:
        """One job per row of ``df``, each row's ``columns`` as its JSON payload, written with
        COPY in one transaction (all rows or none). ``priority``, ``execute_after`` and
        ``dedupe_key`` take a constant or the name of a column. Returns the job ids as a
        Series aligned to ``df.index``. ``tags`` and ``meta`` label the jobs: one value for
        every row, or the name of a column (left out of the payload). With ``connection`` (a
        transaction's, or your own asyncpg connection inside your transaction), the jobs
        commit or roll back with it; the call then runs on that connection's own event loop
        (:func:`pgq_nb.runtime.run_for`). ``concurrency_key`` names a column of keys for an
        entrypoint with a per-key limit (instead of its own key; see :mod:`pgq_nb.keys`).
        ``cache=False`` runs the rows' jobs even if their entrypoint has ``cache=True``
        and cached results exist (:mod:`pgq_nb.caching`)."""
        from pgq_nb.notebook.enqueue import enqueue_df

        call = enqueue_df(
            self.store,
            self.registry,
            self.analyze,
            entrypoint,
            df,
            columns=columns,
            priority=priority,
            execute_after=execute_after,
            dedupe_key=dedupe_key,
            progress=progress,
            chunk_size=chunk_size,
            connection=connection,
            tags=tags,
            meta=meta,
            concurrency_key=concurrency_key,
            cache=cache,
        )
        result: pd.Series = await runtime.run_for(connection, call)
        return result

    @runtime.bridged
    async def jobs(
        self,
        status: str | None = None,
        entrypoint: str | None = None,
        limit: int | None = JOBS_LIMIT,
        *,
        payloads: bool = False,
        tag: str | None = None,
        tags: Sequence[str] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """The live queue (queued, blocked and running jobs), oldest first, as a DataFrame. A
        payload longer than 1,000 bytes shows as a preview (its first bytes and a marker; only
        those are read), unless ``payloads=True``; ``q.get_job(id)`` has any one whole. At
        most ``limit`` jobs (``None``: all); when the default cap leaves jobs out, a
        :class:`~pgq_nb.view_limits.ViewTruncated` warning says how many."""
        from pgq_nb.notebook import frames

        wanted, matching = check_filter(tag, tags, meta)
        frame: pd.DataFrame = await frames.jobs(
            self.store,
            status=status,
            entrypoint=entrypoint,
            limit=limit,
            payloads=payloads,
            tags=wanted,
            meta=matching,
        )
        return frame

    @runtime.bridged
    async def stats(
        self,
        window: dt.timedelta | None = None,
        *,
        since: dt.datetime | dt.timedelta | str | None = None,
        until: dt.datetime | dt.timedelta | str | None = None,
        tag: str | None = None,
        tags: Sequence[str] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Jobs per entrypoint and status (every status a column), with jobs per minute and
        mean duration: of every finished job and over the last ``window`` (15 minutes) by
        default; with ``since`` (and ``until``, exclusive), of the jobs that finished in that
        span (``q.stats(since="1h").loc["to_eur", "succeeded"]``: converted in the last hour).
        Live columns are the queue now. Counts come from counters and indexes, never capped.
        With ``tag=``/``tags=``/``meta=``, of the jobs carrying those labels only (counted from
        their rows, through the tag and meta indexes; rates over ``since`` or their span)."""
        from pgq_nb.notebook import frames

        wanted, matching = check_filter(tag, tags, meta)
        frame: pd.DataFrame = await frames.stats(
            self.store, window=window, since=since, until=until, tags=wanted, meta=matching
        )
        return frame

    @runtime.bridged
    async def history(
        self,
        since: dt.datetime | dt.timedelta | str | None = None,
        entrypoint: str | None = None,
        status: str | None = None,
        limit: int | None = HISTORY_LIMIT,
        *,
        until: dt.datetime | dt.timedelta | str | None = None,
        tag: str | None = None,
        tags: Sequence[str] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Finished jobs, newest first, with attempts, queue wait, run time and error; those
        that finished from ``since`` to before ``until``, when given. At most ``limit`` jobs
        (``None``: all); when the default cap leaves jobs out, a
        :class:`~pgq_nb.view_limits.ViewTruncated` warning says how many. To count finished
        jobs, use :meth:`stats` (``since=``), not ``len()`` of this."""
        from pgq_nb.notebook import frames

        wanted, matching = check_filter(tag, tags, meta)
        frame: pd.DataFrame = await frames.history(
            self.store,
            since=since,
            until=until,
            entrypoint=entrypoint,
            status=status,
            limit=limit,
            tags=wanted,
            meta=matching,
        )
        return frame

    @runtime.bridged
    async def results(
        self,
        entrypoint: str,
        *,
        expand: bool = True,
        ids: Sequence[int] | None = None,
        tag: str | None = None,
        tags: Sequence[str] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Succeeded jobs of ``entrypoint``: job id, payload and result columns (expanded from
        JSON with ``expand``), ready to join back to the frame that was enqueued."""
        from pgq_nb.notebook import frames

        wanted, matching = check_filter(tag, tags, meta)
        frame: pd.DataFrame = await frames.results(
            self.store, entrypoint, expand=expand, ids=ids, tags=wanted, meta=matching
        )
        return frame

    @runtime.bridged
    async def failed(
        self,
        entrypoint: str | None = None,
        limit: int | None = FAILED_LIMIT,
        *,
        payloads: bool = False,
        tag: str | None = None,
        tags: Sequence[str] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Jobs that failed for good (after their retries), newest first, with their errors.
        Payloads as in :meth:`jobs`: a preview of long ones unless ``payloads=True``. At most
        ``limit`` jobs (``None``: all), with a ViewTruncated warning as in :meth:`history`."""
        from pgq_nb.notebook import frames

        wanted, matching = check_filter(tag, tags, meta)
        frame: pd.DataFrame = await frames.failed(
            self.store,
            entrypoint=entrypoint,
            limit=limit,
            payloads=payloads,
            tags=wanted,
            meta=matching,
        )
        return frame

    @runtime.bridged
    async def purge_history(self, older_than: dt.timedelta) -> int:
        """Delete finished jobs older than ``older_than`` (by their finish time), in bulk, and
        take them off the counters; returns how many went. Retention for long-lived queues."""
        if not isinstance(older_than, dt.timedelta) or older_than.total_seconds() < 0:
            raise InvalidInputError(
                "older_than must be a non-negative timedelta, for example "
                f"q.purge_history(datetime.timedelta(days=30)) (got {older_than!r})"
            )
        if older_than > MAX_DELAY:
            raise InvalidInputError(
                "older_than is more than 1,000 years; nothing is that old (use a shorter span)"
            )
        from pgq_nb.notebook import frames

        n: int = await frames.purge_history(self.store, older_than)
        return n

    @runtime.bridged
    async def workflows(
        self, limit: int | None = WORKFLOWS_LIMIT, name: str | None = None
    ) -> pd.DataFrame:
        """The newest workflow runs, with their steps per status and the share done. At most
        ``limit`` runs (``None``: all), with a ViewTruncated warning as in :meth:`history`."""
        from pgq_nb.notebook import overview

        frame: pd.DataFrame = await overview.workflows(self.store, limit=limit, name=name)
        return frame

    @runtime.bridged
    async def workers(self) -> pd.DataFrame:
        """Worker processes with a recent heartbeat, one row each: ``worker_id`` (the
        ``worker_id`` of the jobs it runs), host, pid, entrypoints, concurrency, executor
        ("thread", "process" for a worker with ``processes=N``, "dask" for one with
        ``dask=client``), processes (its process pool's size, the Dask cluster's threads, or
        <NA>), scheduler (the Dask scheduler's address), started and heartbeat.
        :meth:`worker_list` has them as dicts."""
        from pgq_nb.notebook import overview

        frame: pd.DataFrame = overview.workers_frame(await self.worker_list())
        return frame

    @runtime.bridged
    async def limits(self, keys: bool = False, top: int = 20) -> pd.DataFrame:
        """Entrypoints with a global limit (max_running, rate_limit) or a pause, with how many
        of their jobs run and wait. ``keys=True``: instead, the ``top`` busiest keys of
        entrypoints with a per-key limit (entrypoint, key, max_per_key, running, waiting),
        most running first."""
        from pgq_nb.notebook import overview

        if keys:
            if check_int("top", top) < 1:
                raise InvalidInputError("top must be at least 1 (how many keys to show)")
            rows = [dict(r) for r in await self.pool.fetch(self.queries["busiest_keys"], top)]
            for row in rows:  # not recorded by a worker yet: the cap this queue's handler has
                spec = self.registry.handlers.get(row["entrypoint"])
                if row["max_per_key"] is None and spec is not None:
                    row["max_per_key"] = spec.max_per_key
            return overview.keys_frame(rows)
        rows = await self.pool.fetch(self.queries["flow_overview"])
        frame: pd.DataFrame = overview.flow_frame(rows)
        return frame
