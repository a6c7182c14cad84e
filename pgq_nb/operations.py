"""Look-ups and operations on existing jobs: status, waiting, cancelling, failures, requeue.

A mixin of :class:`pgq_nb.queue.AsyncQueue`; every method runs on the pgq_nb loop.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from pgq_nb import runtime
from pgq_nb.config import Settings
from pgq_nb.errors import InvalidInputError, JobNotFoundError
from pgq_nb.executors import split_label
from pgq_nb.labels import check_filter, fetch_planned
from pgq_nb.models import JobInfo, JobStatus, check_int, check_text
from pgq_nb.waiting import wait_until
from pgq_nb.worker_notices import Failures, tell_failed
from pgq_nb.workflow_state import settle_steps

if TYPE_CHECKING:
    from pgq_nb.store import SqlTarget


def _ids(ids: Sequence[int] | int, what: str = "ids") -> list[int]:
    if isinstance(ids, int):
        return [check_int(what, ids, bits=64)]
    try:
        return [check_int(what, i, bits=64) for i in ids]
    except (TypeError, ValueError):
        raise InvalidInputError(f"{what} must be job ids (ints)") from None


def _present_ids(ids: Iterable[int] | int) -> list[int]:
    """Job ids, skipping missing ones (None, <NA>, NaN: rows a bulk enqueue skipped)."""
    if isinstance(ids, int):
        return _ids(ids)
    present = []
    for value in ids:
        try:
            present.append(check_int("job id", operator.index(value), bits=64))
            continue
        except TypeError:
            pass
        if value is None or str(value) in ("<NA>", "nan", "NaT"):
            continue
        raise InvalidInputError(f"ids must be job ids (ints), not {value!r}")
    return present


def _name(entrypoint: str | None) -> str | None:
    """An entrypoint filter: None, or a name Postgres can compare (no NUL, not absurdly long)."""
    return None if entrypoint is None else check_text("entrypoint", entrypoint)


def _info(row: Any) -> JobInfo:
    values = dict(row)
    values["status"] = JobStatus(values["status"])
    return JobInfo(**values)


async def job_statuses(target: SqlTarget, ids: Sequence[int]) -> dict[int, JobStatus]:
    """The current status of each job id (ids not found are left out)."""
    wanted = [check_int("job id", operator.index(i), bits=64) for i in ids]
    rows = await target.pool.fetch(target.queries["job_statuses"], wanted)
    return {r["id"]: JobStatus(r["status"]) for r in rows}


_DEADLOCK_TRIES = 5


async def _cancel_once(target: SqlTarget, wanted: list[int]) -> tuple[set[int], set[int]]:
    """One try of :func:`cancel_jobs`: the ids cancelled, and those told to stop. Running
    jobs first: a worker's flush locks its own (running) rows, then the waiting steps a map
    source's expansion counts up, then the run rows; taking the waiting rows first could wait
    for a source that flush holds while it waits for us (a deadlock)."""
    q = target.queries
    async with target.pool.acquire() as conn, conn.transaction():
        asked = {r["id"] for r in await conn.fetch(q["request_cancel"], wanted)}
        gone = await conn.fetch(q["cancel_waiting"], wanted)
        if asked:
            await conn.execute(q["notify_cancel"], ",".join(map(str, asked)))
        await settle_steps(conn, q, gone, [])  # what depends on a cancelled step
    return {r["id"] for r in gone}, asked


async def cancel_jobs(target: SqlTarget, ids: Sequence[int] | int) -> dict[int, str]:
    """``q.cancel``: what happened to each id (see :meth:`Operations.cancel`)."""
    wanted = _ids(ids)
    for tries in range(1, _DEADLOCK_TRIES + 1):
        try:
            cancelled, asked = await _cancel_once(target, wanted)
        except asyncpg.DeadlockDetectedError:
            # rolled back whole, nothing half-done: the lock order matches a worker's flush,
            # but the rows of one kind are locked in no set order (several workers' jobs, a
            # caller's ids), so a cycle stays possible in theory; it is transient: try again
            if tries == _DEADLOCK_TRIES:
                raise
            continue
        break
    rest = [i for i in wanted if i not in cancelled and i not in asked]
    found = await job_statuses(target, rest) if rest else {}
    outcome: dict[int, str] = {}
    for job_id in wanted:
        if job_id in cancelled:
            outcome[job_id] = "cancelled"
        elif job_id in asked:
            outcome[job_id] = "cancelling"
        elif job_id in found:
            outcome[job_id] = f"already {found[job_id].value}"
        else:
            outcome[job_id] = "not found"
    return outcome


class Operations:
    """Methods on jobs that already exist."""

    pool: asyncpg.Pool
    queries: dict[str, str]
    settings: Settings
    #: the failure tallies of this queue's background workers (Queue.start_worker), told by
    #: wait() when it returns
    background_failures: list[Failures]

    @runtime.bridged
    async def get_job(self, job_id: int) -> JobInfo:
        """One job by id, whether queued, running or finished."""
        row = await self.pool.fetchrow(
            self.queries["get_job"], check_int("job_id", job_id, bits=64)
        )
        if row is None:
            raise JobNotFoundError(f"no job with id {job_id} in the queue or in history")
        return _info(row)

    @runtime.bridged
    async def statuses(self, ids: Sequence[int]) -> dict[int, JobStatus]:
        """The current status of each job id (ids not found are left out)."""
        return await job_statuses(self, ids)

    @runtime.bridged
    async def counts(self) -> list[tuple[str, str, int]]:
        """(entrypoint, status, count) for live jobs and history."""
        async with self.pool.acquire() as conn:
            live = await conn.fetch(self.queries["job_counts"])
            done = await conn.fetch(self.queries["history_counts"])
        return [(r["entrypoint"], r["status"], r["n"]) for r in [*live, *done]]

    @runtime.bridged
    async def worker_list(self) -> list[dict[str, Any]]:
        """Worker processes with a recent heartbeat, as dicts: id, host, pid, entrypoints,
        concurrency, executor ("thread", "process" or "dask"), processes (its pool's size; on
        Dask the cluster's threads), scheduler (a Dask worker's scheduler address, else None),
        started, heartbeat (``q.workers()`` has them as a DataFrame)."""
        rows = await self.pool.fetch(self.queries["list_workers"], self.settings.heartbeat_timeout)
        return [split_label(dict(r)) for r in rows]

    @runtime.bridged
    async def wait(
        self,
        ids: Iterable[int] | int,
        *,
        timeout: float | None = None,
        progress: bool | None = None,
    ) -> dict[int, str]:
        """Wait until every job in ``ids`` has finished; return their final statuses.

        ``ids`` may be the Series ``enqueue_df`` returned (rows it skipped, <NA>, are left
        out). ``progress`` shows a bar of finished jobs (default: in a notebook, for 1,000 jobs
        or more). An interrupt stops the waiting and leaves the jobs as they are. Failures of
        this queue's background workers not told yet are told when it returns."""
        wanted = _present_ids(ids)
        finished = 0

        async def poll() -> tuple[dict[int, str] | None, int]:
            nonlocal finished
            found = await self.statuses(wanted)
            missing = [i for i in wanted if i not in found]
            if missing:
                raise JobNotFoundError(f"no job with id {missing[0]} in the queue or in history")
            finished = sum(s.is_final for s in found.values())
            over = finished == len(wanted)
            return ({i: found[i].value for i in wanted} if over else None), finished

        try:
            return await wait_until(
                poll,
                total=len(wanted),
                timeout=timeout,
                progress=progress,
                description="jobs finished",
                unit="jobs",
                min_total=1_000,
                timed_out=lambda: (
                    f"{len(wanted) - finished} of {len(wanted)} jobs had not finished after "
                    f"{timeout} s"
                ),
            )
        finally:
            # what this queue's background workers have not told yet, under the caller's cell:
            # their own line comes a second after a failure, when a short cell may have ended
            for failures in self.background_failures:
                tell_failed(failures, background=True)

    @runtime.bridged
    async def cancel(self, ids: Sequence[int] | int) -> dict[int, str]:
        """Cancel jobs. A queued job is cancelled at once; a running one is told to stop (its
        async handler is cancelled) and ends as ``cancelled``; a finished one is left as it is.

        Returns what happened to each id: "cancelled", "cancelling", or "already <status>".
        """
        return await cancel_jobs(self, ids)

    @runtime.bridged
    async def failed_jobs(
        self,
        entrypoint: str | None = None,
        limit: int = 1000,
        *,
        tag: str | None = None,
        tags: Sequence[str] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> list[JobInfo]:
        """Jobs that failed for good (after their retries), newest first; with ``tag``,
        ``tags`` or ``meta``, only those carrying these labels (:mod:`pgq_nb.labels`)."""
        if check_int("limit", limit, bits=64) < 0:
            raise InvalidInputError("limit must be 0 or more")
        wanted, matching = check_filter(tag, tags, meta)
        if wanted is None and matching is None:
            rows = await self.pool.fetch(self.queries["failed_jobs"], _name(entrypoint), limit)
        else:
            async with self.pool.acquire() as conn:
                query = self.queries["failed_jobs_tagged"]
                rows = await fetch_planned(conn, query, _name(entrypoint), limit, wanted, matching)
        return [_info(r) for r in rows]

    @runtime.bridged
    async def requeue_failed(
        self, ids: Sequence[int] | int | None = None, entrypoint: str | None = None
    ) -> int:
        """Put failed jobs back in the queue, under their ids, with fresh attempts; returns how
        many. With neither ``ids`` nor ``entrypoint``, requeues every failed job."""
        wanted = None if ids is None else _ids(ids)
        rows = await self.pool.fetch(self.queries["requeue_failed"], wanted, _name(entrypoint))
        return len(rows)

    @runtime.bridged
    async def pause(self, entrypoint: str) -> None:
        """Stop every worker from claiming ``entrypoint`` until :meth:`resume`; running jobs
        finish, new ones wait in the queue."""
        await self._set_paused(entrypoint, True)

    @runtime.bridged
    async def resume(self, entrypoint: str) -> None:
        """Let workers claim ``entrypoint`` again."""
        await self._set_paused(entrypoint, False)

    async def _set_paused(self, entrypoint: str, paused: bool) -> None:
        if not isinstance(entrypoint, str) or not entrypoint:
            raise InvalidInputError("name the entrypoint to pause or resume")
        check_text("entrypoint", entrypoint)
        await self.pool.execute(self.queries["set_paused"], entrypoint, paused)

    @runtime.bridged
    async def flow(self) -> list[dict[str, Any]]:
        """Entrypoints with a global limit or a pause: max_running, rate_per_s, paused, and how
        many of their jobs run and wait."""
        return [dict(r) for r in await self.pool.fetch(self.queries["flow_overview"])]
