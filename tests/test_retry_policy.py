"""RetryPolicy: the delay computation (a pure function, table-tested) and decisions."""

from __future__ import annotations

import datetime as dt
import pickle

import pytest

from pgq_nb import GiveUp, InvalidInputError, RetryLater, RetryPolicy
from pgq_nb.retry import decide, retry_delay

DEFAULT = RetryPolicy()
FAST = RetryPolicy(base_delay=0.5, max_delay=3.0, factor=3.0, jitter=0.0)


@pytest.mark.parametrize(
    ("policy", "attempt", "unit_random", "expected"),
    [
        (DEFAULT, 1, 0.5, 1.0),
        (DEFAULT, 2, 0.5, 2.0),
        (DEFAULT, 3, 0.5, 4.0),
        (DEFAULT, 9, 0.5, 256.0),
        (DEFAULT, 10, 0.5, 300.0),  # capped at max_delay
        (DEFAULT, 30, 0.5, 300.0),
        (DEFAULT, 1, 0.0, 0.9),  # jitter 0.1: 10 % shorter at the low end
        (DEFAULT, 1, 1.0, 1.1),  # and 10 % longer at the high end
        (DEFAULT, 10, 1.0, 300.0),  # jitter never exceeds max_delay
        (FAST, 1, 0.9, 0.5),
        (FAST, 2, 0.1, 1.5),
        (FAST, 3, 0.5, 3.0),  # 4.5 capped at 3
        (RetryPolicy(base_delay=0, jitter=0.5), 4, 1.0, 0.0),
        (RetryPolicy(base_delay=dt.timedelta(seconds=2), factor=1, jitter=0), 5, 0.5, 2.0),
    ],
)
def test_retry_delay(
    policy: RetryPolicy, attempt: int, unit_random: float, expected: float
) -> None:
    assert retry_delay(policy, attempt, unit_random) == pytest.approx(expected)


class Transient(Exception):
    pass


class Fatal(Exception):
    pass


@pytest.mark.parametrize(
    ("policy", "error", "attempt", "retry", "delay"),
    [
        (RetryPolicy(jitter=0), ValueError("x"), 1, True, 1.0),
        (RetryPolicy(jitter=0), ValueError("x"), 3, False, 0.0),  # attempts exhausted
        (RetryPolicy.none(), ValueError("x"), 1, False, 0.0),
        (RetryPolicy(retry_on=(Transient,)), Transient(), 1, True, None),
        (RetryPolicy(retry_on=(Transient,)), Fatal(), 1, False, 0.0),
        (RetryPolicy(give_up_on=(Fatal,)), Fatal(), 1, False, 0.0),
        (RetryPolicy(retry_on=Exception, give_up_on=Fatal), Fatal(), 1, False, 0.0),
        (RetryPolicy(), GiveUp("bad input"), 1, False, 0.0),
        (RetryPolicy(), RetryLater(42), 1, True, 42.0),
        (RetryPolicy(), RetryLater(dt.timedelta(minutes=1)), 2, True, 60.0),
        (RetryPolicy(), RetryLater(5), 3, False, 0.0),  # no attempts left
        (RetryPolicy(retry_on=(Transient,)), RetryLater(5), 1, True, 5.0),
    ],
)
def test_decide(
    policy: RetryPolicy, error: BaseException, attempt: int, retry: bool, delay: float | None
) -> None:
    decision = decide(policy, error, attempt, rand=lambda: 0.5)
    assert decision.retry is retry
    if delay is not None:
        assert decision.delay == pytest.approx(delay)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, "at least 1"),
        ({"max_attempts": 2.5}, "must be an int"),
        ({"base_delay": -1}, "non-negative"),
        ({"base_delay": 10, "max_delay": 5}, "at least base_delay"),
        ({"factor": 0.5}, "factor"),
        ({"jitter": 2}, "jitter"),
        ({"retry_on": ("ValueError",)}, "exception types"),
    ],
)
def test_bad_policies_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_retry_later_refuses_negative_delay() -> None:
    with pytest.raises(InvalidInputError, match="negative"):
        RetryLater(-1)


@pytest.mark.parametrize("raised", [RetryLater(30), RetryLater(2.5, "the API said later")])
def test_retry_later_crosses_to_a_process_and_back(raised: RetryLater) -> None:
    """A handler in a process or on Dask raises it there; it comes back pickled (it came back
    as a RuntimeError before: Exception's reduce passed its message back as the delay)."""
    back = pickle.loads(pickle.dumps(raised))
    assert isinstance(back, RetryLater)
    assert (back.delay, str(back)) == (raised.delay, str(raised))
