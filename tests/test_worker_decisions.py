"""The worker's decisions as tables, without a database (see pgq_nb.worker_decisions)."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest

from pgq_nb import worker_decisions as decisions
from pgq_nb.completion import Finished
from pgq_nb.errors import (
    BlockingCallError,
    HandlerExitError,
    JobTimeoutError,
    UnstorableResultError,
)
from pgq_nb.registry import EntrypointSpec
from pgq_nb.retry import GiveUp, RetryLater, RetryPolicy
from pgq_nb.worker_decisions import ClaimGroup


def spec(
    name: str,
    concurrency: int | None = None,
    max_running: int | None = None,
    rate_per_s: float | None = None,
) -> EntrypointSpec:
    return EntrypointSpec(
        name=name,
        handler=lambda job: None,
        is_async=False,
        concurrency=concurrency,
        retry=RetryPolicy(),
        timeout=None,
        max_running=max_running,
        rate_per_s=rate_per_s,
    )


def specs(*items: EntrypointSpec) -> dict[str, EntrypointSpec]:
    return {s.name: s for s in items}


PLAIN = specs(spec("a"), spec("b"))
CAPPED = specs(spec("a"), spec("c", concurrency=3), spec("g", max_running=5))


@pytest.mark.parametrize(
    ("table", "paused", "running", "limit", "expected"),
    [
        # every plain entrypoint in one statement
        (PLAIN, set(), {}, 10, [ClaimGroup(["a", "b"], 10, False)]),
        # a paused one is left out; all paused: nothing to claim
        (PLAIN, {"a"}, {}, 10, [ClaimGroup(["b"], 10, False)]),
        (PLAIN, {"a", "b"}, {}, 10, []),
        # a cap here: its own statement, for what the cap leaves; a global limit: limited
        (
            CAPPED,
            set(),
            {"c": 1},
            10,
            [
                ClaimGroup(["a"], 10, False),
                ClaimGroup(["c"], 2, False),
                ClaimGroup(["g"], 10, True),
            ],
        ),
        # a cap that is full leaves its entrypoint out; the plain group still comes first
        (
            CAPPED,
            set(),
            Counter({"c": 3}),
            4,
            [ClaimGroup(["a"], 4, False), ClaimGroup(["g"], 4, True)],
        ),
        # the limit is lower than the cap
        (specs(spec("c", concurrency=3)), set(), {}, 2, [ClaimGroup(["c"], 2, False)]),
        # a rate limit is a limit across workers too
        (specs(spec("r", rate_per_s=5.0)), set(), {}, 7, [ClaimGroup(["r"], 7, True)]),
    ],
)
def test_claim_groups(
    table: dict[str, EntrypointSpec],
    paused: set[str],
    running: dict[str, int],
    limit: int,
    expected: list[ClaimGroup],
) -> None:
    assert decisions.claim_groups(table, paused, running, limit) == expected


@pytest.mark.parametrize(
    ("table", "paused", "running", "limit", "expected"),
    [
        (PLAIN, set(), {}, 10, 10),
        (PLAIN, {"a", "b"}, {}, 10, 0),
        (specs(spec("c", concurrency=3)), set(), {"c": 1}, 10, 2),
        (specs(spec("c", concurrency=3), spec("d", concurrency=4)), set(), {}, 10, 7),
        (specs(spec("c", concurrency=3), spec("d", concurrency=4)), set(), {}, 5, 5),
        (specs(spec("c", concurrency=3)), set(), {"c": 3}, 10, 0),
    ],
)
def test_room(
    table: dict[str, EntrypointSpec],
    paused: set[str],
    running: dict[str, int],
    limit: int,
    expected: int,
) -> None:
    assert decisions.room(table, paused, running, limit) == expected


@pytest.mark.parametrize(
    ("table", "concurrency", "expected"),
    [
        (PLAIN, 32, 32),
        (specs(spec("c", concurrency=3), spec("d", concurrency=4)), 32, 7),
        (specs(spec("c", concurrency=30), spec("d", concurrency=40)), 32, 32),
        (specs(spec("a"), spec("c", concurrency=3)), 8, 8),
    ],
)
def test_most_room(table: dict[str, EntrypointSpec], concurrency: int, expected: int) -> None:
    assert decisions.most_room(table, concurrency) == expected


def test_most_room_leaves_paused_entrypoints_out() -> None:
    # a claim wait sized by a paused entrypoint's cap would wait for room that cannot come
    table = specs(spec("a", concurrency=1), spec("b", concurrency=3))
    assert decisions.most_room(table, 4) == 4
    assert decisions.most_room(table, 4, paused={"b"}) == 1
    assert decisions.most_room(specs(spec("a"), spec("c", concurrency=3)), 8, {"a"}) == 3
    assert decisions.most_room(table, 4, paused={"a", "b"}) == 0


@pytest.mark.parametrize(
    ("concurrency", "running", "unrecorded", "batch_size", "expected"),
    [
        (32, 0, 0, 32, 32),
        (32, 10, 0, 32, 22),
        (32, 10, 5, 32, 17),  # finished but unrecorded jobs still hold their slots
        (32, 0, 0, 8, 8),  # at most a batch
        (4, 4, 0, 4, 0),
    ],
)
def test_free_slots(
    concurrency: int, running: int, unrecorded: int, batch_size: int, expected: int
) -> None:
    assert decisions.free_slots(concurrency, running, unrecorded, batch_size) == expected


@pytest.mark.parametrize(
    ("batch_size", "concurrency", "expected"),
    [(32, 32, 8), (8, 32, 2), (32, 4, 1), (1, 1, 1), (100, 200, 25)],
)
def test_low_water(batch_size: int, concurrency: int, expected: int) -> None:
    assert decisions.low_water(batch_size, concurrency) == expected


@pytest.mark.parametrize(
    ("room", "backlog", "low_water", "most_room", "expected"),
    [
        (0, False, 8, 32, False),  # no room: wait for a slot
        (1, False, 8, 32, True),  # no backlog: one free slot is enough
        (1, True, 8, 32, False),  # a backlog: wait for a few slots together
        (7, True, 8, 32, False),
        (8, True, 8, 32, True),
        (1, True, 8, 3, True),  # a worker that can never take 8 does not wait for them
        (3, True, 8, 12, True),  # a quarter of what it can ever take
        (2, True, 8, 12, False),
        (0, True, 8, 3, False),
    ],
)
def test_claim_now(
    room: int, backlog: bool, low_water: int, most_room: int, expected: bool
) -> None:
    assert (
        decisions.claim_now(room, backlog=backlog, low_water=low_water, most_room=most_room)
        is expected
    )


@pytest.mark.parametrize(
    ("room", "backlog", "ready", "most_room", "expected"),
    [
        (1, True, 2, 4, False),  # processes=2: one slot free, a job still ready behind it
        (2, True, 2, 4, True),  # one per process: claim them together
        (1, False, 2, 4, True),  # no backlog: claim the moment a slot frees
        (7, True, 8, 16, False),  # processes=8
        (8, True, 8, 16, True),
        (2, True, 8, 4, True),  # caps here: at most half of what it can ever take
        (1, True, 1, 2, True),  # processes=1: as before
        (1, True, 0, 4, True),  # no job ready behind the slots (concurrency = processes)
    ],
)
def test_claim_now_with_slots_outside_the_worker(
    room: int, backlog: bool, ready: int, most_room: int, expected: bool
) -> None:
    got = decisions.claim_now(room, backlog=backlog, low_water=1, most_room=most_room, ready=ready)
    assert got is expected


@pytest.mark.parametrize(
    ("slots", "concurrency", "batch_size", "all_outside", "expected"),
    [
        (2, 4, 4, True, 2),  # processes=2 at its defaults
        (2, 5, 5, True, 2),
        (2, 3, 3, True, 0),  # no job ready behind every slot
        (2, 2, 2, True, 0),
        (8, 16, 16, True, 8),
        (0, 32, 32, True, 0),
        (1, 2, 2, True, 1),
        (2, 4, 1, True, 1),  # a claim never takes more than a batch: never wait for more
        (4, 8, 2, True, 2),
        (2, 4, 4, False, 0),  # async handlers on the loop hold slots too
    ],
)
def test_ready_slots(
    slots: int, concurrency: int, batch_size: int, all_outside: bool, expected: int
) -> None:
    assert decisions.ready_slots(slots, concurrency, batch_size, all_outside) == expected


@pytest.mark.parametrize(
    ("waited", "interval", "ready", "backlog", "ids", "steps", "slotted", "expected"),
    [
        (0.005, 0.005, 2, True, (1, 2), (), (), True),  # processes with a backlog: wait on
        (0.045, 0.005, 2, True, (1,), (), (), True),
        (0.05, 0.005, 2, True, (1,), (), (), False),  # 50 ms in all
        (0.005, 0.005, 0, True, (1,), (), (), False),  # threads: flush_interval only
        (0.005, 0.005, 2, False, (1,), (), (), False),  # no backlog: no claim is coming
        (0.005, 0.005, 2, True, (1, 2), (2,), (), False),  # a workflow step: its children wait
        (0.005, 0.005, 2, True, (1, 2), (), (1,), False),  # a global slot: other workers wait
        (0.005, 0.005, 2, True, (), (), (), False),  # nothing left (a claim took them)
        (0.0, 0.0, 2, True, (1,), (), (), False),  # flush_interval=0: never spin
    ],
)
def test_keep_gathering(
    waited: float,
    interval: float,
    ready: int,
    backlog: bool,
    ids: tuple[int, ...],
    steps: tuple[int, ...],
    slotted: tuple[int, ...],
    expected: bool,
) -> None:
    got = decisions.keep_gathering(
        waited,
        interval,
        ready=ready,
        backlog=backlog,
        finished=[done(i) for i in ids],
        steps=set(steps),
        slotted=set(slotted),
    )
    assert got is expected


NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def done(job_id: int, outcome: str = "succeeded") -> Finished:
    return Finished(job_id, outcome, None, None, None, NOW, NOW, 0.0)


@pytest.mark.parametrize(
    ("finished", "steps", "rides", "stays"),
    [
        ([], set(), [], []),
        ([done(1), done(2)], set(), [1, 2], []),
        ([done(1), done(2), done(3)], {2}, [1, 3], [2]),  # a workflow step waits for the flush
        ([done(2)], {2}, [], [2]),
        ([done(1, "failed"), done(4, "retry")], {9}, [1, 4], []),
    ],
)
def test_split_plain(
    finished: list[Finished], steps: set[int], rides: list[int], stays: list[int]
) -> None:
    plain, kept = decisions.split_plain(finished, steps)
    assert [f[0] for f in plain] == rides
    assert [f[0] for f in kept] == stays
    assert sorted([*plain, *kept]) == sorted(finished)  # nothing lost, nothing doubled


@pytest.mark.parametrize(
    ("finished", "steps", "rides"),
    [
        ([], set(), False),  # nothing to leave
        ([done(1), done(2, "retry")], set(), True),  # the next claim records them
        ([done(1), done(2)], {2}, False),  # a workflow step: the flush settles its run now
    ],
)
def test_ride_next_claim(finished: list[Finished], steps: set[int], rides: bool) -> None:
    assert decisions.ride_next_claim(finished, steps) is rides


@pytest.mark.parametrize(
    ("groups", "slots", "cached", "one"),
    [
        ([ClaimGroup(["a", "b"], 32, False)], [], False, True),  # finish_and_claim
        ([], [], False, False),  # nothing to claim (all paused): the completions alone
        ([ClaimGroup(["a"], 32, False), ClaimGroup(["c"], 2, False)], [], False, False),
        ([ClaimGroup(["g"], 32, True)], [], False, False),  # limited across workers
        ([ClaimGroup(["a"], 32, False)], [7], False, False),  # frees a global slot
        ([ClaimGroup(["a"], 32, False)], [], True, False),  # cache look-ups in the transaction
    ],
)
def test_one_statement(groups: list[ClaimGroup], slots: list[int], cached: bool, one: bool) -> None:
    assert decisions.one_statement(groups, slots, cached) is one


@pytest.mark.parametrize(
    ("unrecorded", "batch_size", "running", "at_once", "gather"),
    [
        (1, 32, 5, False, True),  # a few ms for more completions
        (32, 32, 5, True, False),  # a full batch
        (40, 32, 5, True, False),
        (1, 32, 0, True, True),  # nothing left running to wait for
    ],
)
def test_when_to_flush(
    unrecorded: int, batch_size: int, running: int, at_once: bool, gather: bool
) -> None:
    assert decisions.flush_at_once(unrecorded, batch_size, running) is at_once
    assert decisions.gather_first(unrecorded, batch_size) is gather


@pytest.mark.parametrize(
    ("ids", "steps", "slotted", "expected", "in_transaction"),
    [
        ([1, 2], set(), set(), (False, []), False),  # one statement on the pool
        ([1, 2], {2}, set(), (True, []), True),  # settle the runs of steps
        ([1, 2, 3], set(), {3, 7}, (False, [3]), True),  # free global slots
        ([1], {5}, {6}, (False, []), False),
    ],
)
def test_flush_plan(
    ids: list[int],
    steps: set[int],
    slotted: set[int],
    expected: tuple[bool, list[int]],
    in_transaction: bool,
) -> None:
    plan = decisions.flush_plan(ids, steps, slotted)
    assert tuple(plan) == expected
    assert plan.in_transaction is in_transaction


THREE = RetryPolicy(max_attempts=3, base_delay=1.0, jitter=0.0)


@pytest.mark.parametrize(
    ("error", "policy", "attempt", "retry"),
    [
        (ValueError("bad amount"), THREE, 1, True),  # an error of the job's data: retried
        (ValueError("bad amount"), THREE, 3, False),  # ... until no attempts are left
        (JobTimeoutError("slow"), THREE, 1, True),
        (HandlerExitError("sys.exit()"), THREE, 1, True),
        (GiveUp("no"), THREE, 1, False),
        (RetryLater(5.0), THREE, 1, True),
        # a programming error cannot succeed on retry: q.method() inside an async handler
        (BlockingCallError("enqueue() blocks"), THREE, 1, False),
        (BlockingCallError("enqueue() blocks"), RetryPolicy(max_attempts=9), 1, False),
        (BlockingCallError("x"), RetryPolicy(retry_on=BlockingCallError), 1, False),
        # the same result would be refused again
        (UnstorableResultError("not JSON"), THREE, 1, False),
    ],
)
def test_after_failure(
    error: BaseException, policy: RetryPolicy, attempt: int, retry: bool
) -> None:
    decision = decisions.after_failure(policy, error, attempt, rand=lambda: 0.5)
    assert decision.retry is retry
    if not retry:
        assert decision.delay == 0.0


@pytest.mark.parametrize(
    ("now", "current", "due_in", "poll", "expected"),
    [
        # nothing due later: keep what is set (or nothing)
        (100.0, None, None, 1.0, None),
        (100.0, 100.4, None, 1.0, None),
        # due within the poll: wake then
        (100.0, None, 0.5, 1.0, 100.5),
        (100.0, None, 0.0, 1.0, 100.0),
        (100.0, None, 1.0, 1.0, 101.0),
        # after the next poll: the poll comes first, and asks again
        (100.0, None, 1.5, 1.0, None),
        (100.0, None, 30.0, 1.0, None),
        # sooner than the wake-up set: replace it; later or the same: keep it
        (100.0, 100.8, 0.3, 1.0, 100.3),
        (100.0, 100.3, 0.8, 1.0, None),
        (100.0, 100.3, 0.3, 1.0, None),
        # nonsense from a NOTIFY or a clock: ignored
        (100.0, None, -0.5, 1.0, None),
        (100.0, None, float("nan"), 1.0, None),
        (100.0, None, float("inf"), 1.0, None),
    ],
)
def test_wake_at(
    now: float, current: float | None, due_in: float | None, poll: float, expected: float | None
) -> None:
    assert decisions.wake_at(now, current, due_in, poll) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.5", 0.5),
        ("1", 1.0),
        ("1e-05", 1e-05),
        ("0", 0.0),
        ("-3", 0.0),  # due already: now
        ("", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
        ("-inf", None),
        ("1" * 41, None),  # longer than any number of seconds Postgres writes
    ],
)
def test_parse_due(text: str, expected: float | None) -> None:
    assert decisions.parse_due(text) == expected
