"""What a worker decides, as pure functions (no database, no event loop): which claim
statements to run and how many jobs each may take, when a claim waits for more room (the
low-water mark), which finished attempts ride in the claim's transaction and which in the
flush, when the flush runs, whether a failed attempt is retried, and when to wake for a job due
later. :class:`pgq_nb.worker.Worker` calls them; tests/test_worker_decisions.py tables them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from pgq_nb.errors import (
    BlockingCallError,
    MapSourceError,
    UncacheablePayloadError,
    UnstorableResultError,
)
from pgq_nb.retry import Decision, GiveUp, RetryPolicy, decide

if TYPE_CHECKING:
    from pgq_nb.completion import Finished
    from pgq_nb.registry import EntrypointSpec


class ClaimGroup(NamedTuple):
    """One claim statement: its entrypoints, how many jobs it may take, and whether it goes
    through the limits that hold across workers (claim_limited)."""

    entrypoints: list[str]
    room: int
    limited: bool


def claim_groups(
    specs: Mapping[str, EntrypointSpec],
    paused: Collection[str],
    running: Mapping[str, int],
    limit: int,
) -> list[ClaimGroup]:
    """One group for every entrypoint without a cap (first), one each for those with a cap
    here (``concurrency``, less the ``running`` count) or a limit across workers; paused
    entrypoints and capped ones without room are left out."""
    plain: list[str] = []
    groups: list[ClaimGroup] = []
    for name, spec in specs.items():
        if name in paused:
            continue
        if spec.concurrency is None and not spec.limited:
            plain.append(name)
            continue
        room = limit
        if spec.concurrency is not None:
            room = min(room, spec.concurrency - running.get(name, 0))
        if room > 0:
            groups.append(ClaimGroup([name], room, spec.limited))
    if plain:
        groups.insert(0, ClaimGroup(plain, limit, False))
    return groups


def room(
    specs: Mapping[str, EntrypointSpec],
    paused: Collection[str],
    running: Mapping[str, int],
    limit: int,
) -> int:
    """How many jobs a claim of at most ``limit`` may take, given the caps here."""
    return min(limit, sum(g.room for g in claim_groups(specs, paused, running, limit)))


def most_room(
    specs: Mapping[str, EntrypointSpec], concurrency: int, paused: Collection[str] = ()
) -> int:
    """The most jobs a worker could take at once (its caps permitting), its ``paused``
    entrypoints left out (a claim wait sized by them would wait for room that cannot come)."""
    active = [s for name, s in specs.items() if name not in paused]
    if any(s.concurrency is None for s in active):
        return concurrency
    return min(concurrency, sum(s.concurrency or 0 for s in active))


def free_slots(concurrency: int, running: int, unrecorded: int, batch_size: int) -> int:
    """What a claim may ask for: the slots not held by running jobs or by finished ones not
    recorded yet (a finished job holds its slot until recorded), at most a batch."""
    return min(concurrency - running - unrecorded, batch_size)


def low_water(batch_size: int, concurrency: int) -> int:
    """With a backlog, a claim waits for this many free slots (a quarter of a batch)."""
    return max(1, min(batch_size, concurrency) // 4)


def ready_slots(slots: int, concurrency: int, batch_size: int, all_outside: bool) -> int:
    """A worker whose handlers all run outside it (``processes=`` or ``dask=``, ``slots``
    processes or Dask threads; ``all_outside``: none of its entrypoints runs on its loop or
    in its threads, whose jobs would hold slots too): its slots when each can have a job ready
    behind the one it runs (the default concurrency, twice the slots), at most a batch (a claim
    never takes more); else 0 (see :func:`claim_now`)."""
    if not all_outside or slots <= 0 or concurrency < 2 * slots:
        return 0
    return min(slots, batch_size)


def claim_now(room: int, *, backlog: bool, low_water: int, most_room: int, ready: int = 0) -> bool:
    """Claim now, or wait for a slot to free? With a backlog (the last claim filled all it
    asked for), wait until a few slots are free and claim them together, rather than one
    claim per finished job; otherwise claim as soon as one is free. A worker with ``ready``
    slots outside it (:func:`ready_slots`) waits, with a backlog, for as many free slots (at
    most half of what it can take): each of them still has a job ready behind the one it runs,
    and a claim's statements cost the server nearly as much for one job as for several (about
    0.6 ms of its CPU a job at one job a claim, 0.17 ms at four: DESIGN.md, "Handlers in
    processes"), CPU that handlers in processes of the same machine would otherwise have."""
    if not backlog:
        return room >= 1
    needed = max(1, min(low_water, most_room // 4), min(ready, most_room // 2))
    return room >= needed


def one_statement(groups: Sequence[ClaimGroup], slots: Sequence[int], cached: bool) -> bool:
    """Can this claim be one statement (finish_and_claim)? When it is one claim group without
    a limit across workers, frees no global slot and the worker serves no cached entrypoint
    (whose jobs are looked up in the claim's transaction); else it is a transaction of several
    statements."""
    return len(groups) == 1 and not groups[0].limited and not slots and not cached


def split_plain(
    finished: Sequence[Finished], steps: Collection[int]
) -> tuple[list[Finished], list[Finished]]:
    """(ride with the claim, stay for the flush): finished attempts that need no more than
    finish_jobs and release_slots (no workflow step) are recorded in the claim's transaction;
    workflow steps wait for the flush, which settles their runs."""
    plain = [f for f in finished if f.id not in steps]
    if len(plain) == len(finished):
        return plain, []
    kept = {f.id for f in plain}
    return plain, [f for f in finished if f.id not in kept]


def ride_next_claim(finished: Sequence[Finished], steps: Collection[int]) -> bool:
    """With a claim under way: leave the finished attempts to the claim loop's next claim,
    whose transaction records them, rather than flush them in one of their own? Only when
    none is a workflow step (those are settled by the flush: see :func:`split_plain`)."""
    return bool(finished) and all(f.id not in steps for f in finished)


def flush_at_once(unrecorded: int, batch_size: int, running: int) -> bool:
    """After an attempt ends: flush without gathering more when a batch is full or nothing
    is left running to wait for."""
    return unrecorded >= batch_size or running == 0


def gather_first(unrecorded: int, batch_size: int) -> bool:
    """Before a flush: wait a few ms for more completions unless a batch is already full."""
    return unrecorded < batch_size


#: How long in all a flush of a worker with ready slots outside it may wait for a claim to
#: take its completions (seconds; see :func:`keep_gathering`).
READY_GATHER_S = 0.05


def keep_gathering(
    waited: float,
    flush_interval: float,
    *,
    ready: int,
    backlog: bool,
    finished: Sequence[Finished],
    steps: Collection[int],
    slotted: Collection[int],
) -> bool:
    """A flush has gathered completions for ``waited`` seconds (``flush_interval`` at a time):
    wait another interval? Only in a worker with ``ready`` slots outside it
    (:func:`claim_now`) whose claims have a backlog, so that the claim the next ending job
    makes takes these completions in its own statement (one statement for both rather than
    one each), for READY_GATHER_S in all, and only while every one of them is plain: no
    workflow step (settled by the flush, never by a claim: their children wait) and none
    holding a global slot (other workers wait for it)."""
    return (
        ready > 0
        and backlog
        and flush_interval > 0
        and waited < READY_GATHER_S
        and ride_next_claim(finished, steps)
        and all(f.id not in slotted for f in finished)
    )


class FlushPlan(NamedTuple):
    """How a batch is recorded: ``steps`` (workflow runs to settle) or ``slots`` (global slots
    to free) need a transaction; otherwise one statement on the pool."""

    steps: bool
    slots: list[int]

    @property
    def in_transaction(self) -> bool:
        return self.steps or bool(self.slots)


def flush_plan(ids: Sequence[int], steps: Collection[int], slotted: Collection[int]) -> FlushPlan:
    """The :class:`FlushPlan` of a batch of finished job ids."""
    return FlushPlan(any(i in steps for i in ids), [i for i in ids if i in slotted])


#: Errors that running the handler again cannot mend: the same result would be refused again
#: (UnstorableResultError), the same blocking call made from the loop again (BlockingCallError,
#: a programming error: ``q.method()`` inside an ``async def`` handler), a map_over's parent
#: that returned no list (MapSourceError), a cached entrypoint's payload that cannot be cached
#: (UncacheablePayloadError: it never will be). Their job fails at once, whatever its retry
#: policy.
FINAL_ERRORS: tuple[type[BaseException], ...] = (
    UnstorableResultError,
    BlockingCallError,
    MapSourceError,
    UncacheablePayloadError,
)


def after_failure(
    policy: RetryPolicy,
    error: BaseException,
    attempt: int,
    rand: Callable[[], float] = random.random,
) -> Decision:
    """Retry or fail for good, after attempt number ``attempt`` failed with ``error``: as the
    policy says (:func:`pgq_nb.retry.decide`), except that FINAL_ERRORS are never retried."""
    final = isinstance(error, FINAL_ERRORS)
    return decide(policy, GiveUp() if final else error, attempt, rand)


def wake_at(now: float, current: float | None, due_in: float | None, poll: float) -> float | None:
    """When to wake for a job due in ``due_in`` seconds (loop clock ``now``), with a wake-up
    set for ``current`` already (None: none): the new time, or None to keep what is set. A
    wake-up only replaces a later one; one after the next poll is not needed (the poll comes
    first, and asks again). ``due_in`` is None when nothing is due later."""
    if due_in is None or not 0.0 <= due_in <= poll:
        return None
    at = now + due_in
    if current is not None and current <= at:
        return None
    return at


def parse_due(text: str) -> float | None:
    """The seconds of a ``due:SECONDS`` notification (a job retried or delayed that is due
    then), or None when they are not a finite number of seconds; a negative one is due now.
    Anyone may NOTIFY: the worst a forged one does is wake a worker for a claim."""
    if len(text) > 40:
        return None
    try:
        seconds = float(text)
    except ValueError:
        return None
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)
