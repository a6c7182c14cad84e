"""How a worker claims: which claim statements to run for its entrypoints, and what a claimed
workflow step needs (its parents' results). A base class of :class:`pgq_nb.worker.Worker`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

from pgq_nb import db, keys
from pgq_nb import worker_decisions as decisions
from pgq_nb.completion import Finished, columns, is_refusal, record
from pgq_nb.models import Job
from pgq_nb.workflow_state import group_results

if TYPE_CHECKING:
    from pgq_nb.registry import EntrypointSpec
    from pgq_nb.store import Store

logger = logging.getLogger("pgq_nb.worker")


#: Planner settings for the claim's transaction. The claim must walk jobs_claim_idx in order
#: and stop after n rows; with statistics that predate a burst of small enqueues (a table that
#: grew from 0 to 100,000 rows between ANALYZEs, measured) the planner estimates one queued
#: row and picks a bitmap scan of every queued row plus a sort: a claim that costs O(queue).
#: Switching those paths off for this one statement leaves only the ordered index scan.
CLAIM_PLAN = (
    "BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; "
    "SET LOCAL enable_sort = off"
)


def mark_started(query: str, worker_id: int | None, ids: Sequence[int]) -> str:
    """The ``mark_started`` statements for ``ids``, with their parameters inlined (they travel
    in a simple-protocol message, which takes none; both are integers formatted here)."""
    listed = ",".join(str(int(i)) for i in ids)
    return query.replace("$2", "{" + listed + "}").replace("$1", str(int(worker_id or 0)))


class Claiming:
    """Claim statements for a worker's entrypoints."""

    store: Store
    specs: dict[str, EntrypointSpec]
    concurrency: int
    worker_id: int | None
    _q: dict[str, str]
    _paused: set[str]
    _per_entrypoint: Counter[str]
    _rate_timer: asyncio.TimerHandle | None
    _due_timer: asyncio.TimerHandle | None = None  # wakes the claim loop when a job is due
    _due_at: float | None = None  # (loop time) when it fires
    _wake: asyncio.Event
    _claiming: bool
    _suspects: set[int]
    _marks: dict[asyncio.Task[None], frozenset[int]]
    _known_ids: Callable[[], list[int]]
    _look_up_cache: Callable[[Any, list[Job]], Awaitable[None]]  # pgq_nb.worker_cache

    def _claim_groups(self, limit: int) -> list[decisions.ClaimGroup]:
        """The claim statements to run now (see :func:`pgq_nb.worker_decisions.claim_groups`)."""
        return decisions.claim_groups(self.specs, self._paused, self._per_entrypoint, limit)

    def _keyed(self, group: decisions.ClaimGroup) -> bool:
        """A claim group of one entrypoint with a per-key limit (claim_keyed)."""
        return group.limited and self.specs[group.entrypoints[0]].max_per_key is not None

    def _room(self, limit: int) -> int:
        """How many jobs a claim of at most ``limit`` may take, given the caps here."""
        return decisions.room(self.specs, self._paused, self._per_entrypoint, limit)

    def _most_room(self) -> int:
        """The most jobs this worker could ever take at once (its caps permitting)."""
        return decisions.most_room(self.specs, self.concurrency, self._paused)

    async def _claim(
        self, limit: int, done: Sequence[Finished] = (), slots: Sequence[int] = ()
    ) -> list[Job]:
        """Claim up to ``limit`` jobs. ``done``, finished attempts that are no workflow steps,
        are recorded in the claim's transaction, and the global slots of ``slots`` (ids among
        them) freed there. If the server refuses one of them (a value the checks before let
        through), they are recorded on their own, row by row, and the claim is made again."""
        try:
            return await self._claim_once(limit, done, slots)
        except Exception as exc:
            if not done or not is_refusal(exc):
                raise
        async with self.store.pool.acquire() as conn, conn.transaction():
            await record(conn, self._q, self.worker_id, done, steps=False, slots=slots)
        return await self._claim_once(limit)

    async def _claim_once(
        self, limit: int, done: Sequence[Finished] = (), slots: Sequence[int] = ()
    ) -> list[Job]:
        if done:
            await self._marked([d.id for d in done])
        groups = self._claim_groups(limit)
        conn = await self.store.pool.acquire()
        try:
            if decisions.one_statement(groups, slots, self._cached_here()):
                jobs = await self._claim_in_one(conn, groups, limit, done)
            else:
                jobs = await self._claim_in_transaction(conn, groups, limit, done, slots)
        except BaseException:
            await self.store.pool.release(conn)
            raise
        self._wake_for_retries(done)
        if not jobs:
            await self.store.pool.release(conn)
            return jobs
        # The start mark, sent now on this connection and awaited in the background: its
        # message is written before any of these handlers starts (their tasks run after this
        # one's first step), so a worker that dies first has run nothing and the attempt does
        # not count; one that dies later has its attempt counted, though the reply never came.
        mark = mark_started(self._q["mark_started"], self.worker_id, [j.id for j in jobs])
        task = asyncio.ensure_future(self._send_mark(conn, mark))
        self._marks[task] = frozenset(j.id for j in jobs)
        task.add_done_callback(self._mark_sent)
        for job in jobs:
            job.attempts += 1  # as mark_started counts it
        jobs.sort(key=lambda j: (-j.priority, j.id))
        return jobs

    def _cached_here(self) -> bool:
        """Serves a cached entrypoint (its claims look their keys up in the transaction)."""
        return any(spec.cache is not None for spec in self.specs.values())

    async def _claim_in_one(
        self, conn: Any, groups: list[decisions.ClaimGroup], limit: int, done: Sequence[Finished]
    ) -> list[Job]:
        """The common claim, one statement (finish_and_claim): the completions ``done``, then
        one claim of every entrypoint here; its own transaction, so one round trip. Workflow
        steps among the jobs then get their parents' results (committed before the steps were
        claimable, so read after the claim as well as in it)."""
        names, n, _ = groups[0]
        rows = await conn.fetch(
            self._q["finish_and_claim"], self.worker_id, *columns(done), names, min(n, limit)
        )
        jobs = [Job.claimed(row) for row in rows]
        children = [j.id for j in jobs if j.workflow_id is not None]
        if children:
            await self._attach_parent_results(conn, jobs, children)
        return jobs

    async def _claim_in_transaction(
        self,
        conn: Any,
        groups: list[decisions.ClaimGroup],
        limit: int,
        done: Sequence[Finished],
        slots: Sequence[int],
    ) -> list[Job]:
        """Any other claim: one transaction of several statements (BEGIN and the planner
        settings in one message, the completions, the global slots freed, each group's claim,
        the parents' results and cache look-ups, COMMIT)."""
        jobs: list[Job] = []
        await conn.execute(CLAIM_PLAN)
        try:
            if done:
                await conn.execute(self._q["finish_jobs"], self.worker_id, *columns(done))
            if slots:
                await conn.execute(self._q["release_slots"], self.worker_id, list(slots))
            keyed = [g.entrypoints[0] for g in groups if self._keyed(g)]
            if keyed:  # before any claim statement: see lock_keyed_claims
                await keys.lock_claims(self._q, conn, keyed)
            for names, n, limited in groups:
                n = min(n, limit - len(jobs))
                if n <= 0:
                    break
                query = self._q["claim_limited" if limited else "claim_jobs"]
                args: tuple[Any, ...] = (names[0] if limited else names, n, self.worker_id)
                if limited and names[0] in keyed:
                    spec = self.specs[names[0]]
                    rows = await keys.claim(self._q, conn, spec, n, self.worker_id)
                else:
                    rows = await conn.fetch(query, *args)
                if limited:
                    self._after_limited_claim(names[0], asked=n, got=len(rows))
                jobs.extend(Job(**row) for row in rows)
            children = [j.id for j in jobs if j.workflow_id is not None]
            if children:
                await self._attach_parent_results(conn, jobs, children)
            await self._look_up_cache(conn, jobs)  # only for jobs of cached entrypoints
        except BaseException:
            try:
                await conn.execute("ROLLBACK")
            except Exception:
                conn.terminate()  # broken midway: never back into the pool as it is
            raise
        await conn.execute("COMMIT")
        return jobs

    async def _send_mark(self, conn: Any, statement: str) -> None:
        try:
            await conn.execute(statement)
        except Exception as exc:  # the jobs run anyway; their attempts go uncounted
            logger.warning("could not count the attempts just started", extra={"error": str(exc)})
        finally:
            await self.store.pool.release(conn)

    def _mark_sent(self, task: asyncio.Task[None]) -> None:
        self._marks.pop(task, None)

    async def _marked(self, ids: Collection[int] | None = None) -> None:
        """Wait until the start marks of ``ids`` (None: every mark sent) have been recorded,
        before completions of the same jobs are. Only those: the claim that carries a batch's
        completions does not wait for the mark of the batch claimed just before it."""
        if not self._marks:
            return
        if ids is None:
            waiting = list(self._marks)
        else:
            wanted = set(ids)
            waiting = [t for t, marked in self._marks.items() if not wanted.isdisjoint(marked)]
        if waiting:
            await asyncio.gather(*waiting, return_exceptions=True)

    async def _orphans(self, conn: Any, known: Sequence[int]) -> set[int]:
        """Jobs this worker holds but does not run (``known``: the ids it runs or has finished).
        After a claim failed midway its COMMIT may still have happened: those jobs are picked
        by this live worker, whose heartbeat keeps them from being reclaimed, and nothing would
        ever run them."""
        rows = await conn.fetch(self._q["orphan_jobs"], self.worker_id, known)
        return {r["id"] for r in rows}

    async def _return_orphans(self, conn: Any, ids: set[int]) -> None:
        """Put the given orphans back in the queue (not counted as attempts)."""
        rows = await conn.fetch(self._q["return_orphans"], self.worker_id, sorted(ids))
        if rows:
            await conn.execute(self._q["notify_jobs"])
            logger.warning(
                "returned jobs of a claim whose outcome was lost",
                extra={"worker_id": self.worker_id, "job_ids": [r["id"] for r in rows]},
            )

    async def _sweep_orphans(self, conn: Any) -> None:
        """Put back jobs this worker held but did not know at two heartbeats in a row, with no
        claim under way at either (a claim's jobs are known as soon as it returns)."""
        if self._claiming:
            return
        found = await self._orphans(conn, self._known_ids())
        if self._claiming:
            return
        orphans, self._suspects = found & self._suspects, found
        if orphans:
            self._suspects -= orphans
            await self._return_orphans(conn, orphans)

    def _wake_in(self, seconds: float | None) -> None:
        """Wake the claim loop in ``seconds``, when a job becomes due (one retried here, or
        announced by ``next_due`` or a ``due:`` NOTIFY), unless it wakes sooner anyway (see
        :func:`pgq_nb.worker_decisions.wake_at`)."""
        loop = asyncio.get_running_loop()
        poll = self.store.settings.poll_interval
        at = decisions.wake_at(loop.time(), self._due_at, seconds, poll)
        if at is None:
            return
        if self._due_timer is not None:
            self._due_timer.cancel()
        self._due_at = at
        self._due_timer = loop.call_at(at, self._due)

    def _wake_for_retries(self, recorded: Sequence[Finished]) -> None:
        """Once ``recorded`` are written: wake when the soonest retry among them is due (no
        round trip; a timer set before the write could fire before the job is due, and the
        claim it wakes would find nothing)."""
        delays = [f.retry_delay_s for f in recorded if f.outcome in ("retry", "snooze")]
        if delays:
            self._wake_in(min(delays))

    def _due(self) -> None:
        self._due_timer = self._due_at = None
        self._wake.set()

    async def _look_ahead(self) -> None:
        """After a claim that found nothing: wake when the soonest job this worker could take
        becomes due, not at the next poll (``next_due``, one query, asked only when the worker
        is about to sleep)."""
        names = [n for n in self.specs if n not in self._paused]
        if not names:
            return
        try:
            self._wake_in(await self.store.pool.fetchval(self._q["next_due"], names))
        except db.TRANSIENT_ERRORS as exc:  # the poll is the fallback
            logger.warning("could not ask when the next job is due", extra={"error": str(exc)})

    def _after_limited_claim(self, name: str, *, asked: int, got: int) -> None:
        """A rate-limited claim that got less than it asked for may have run out of tokens:
        look again when the next token is due (slots announce themselves by NOTIFY)."""
        rate = self.specs[name].rate_per_s
        if rate and got < asked and self._rate_timer is None:

            def wake() -> None:
                self._rate_timer = None
                self._wake.set()

            self._rate_timer = asyncio.get_running_loop().call_later(1.0 / rate, wake)

    async def _attach_parent_results(self, conn: Any, jobs: list[Job], ids: list[int]) -> None:
        rows = await conn.fetch(self._q["parent_results"], ids)
        by_child: dict[int, list[Any]] = {}
        for row in rows:
            by_child.setdefault(row["child_id"], []).append(row)
        for job in jobs:
            if job.id in by_child:
                job._parents = group_results(by_child[job.id])
                job._expands = any(r["source"] for r in by_child[job.id])
