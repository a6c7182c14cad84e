"""Per-key limits (issue #21, item 3): options, keys at enqueue on every path, bad input, the
keyed claim (in one process), and q.limits(keys=True). Worker processes: test_keys_workers.py.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

import pgq_nb
from pgq_nb import keys, runtime
from pgq_nb.enqueue import DuplicatesSkipped
from pgq_nb.errors import InvalidInputError
from tests.conftest import SCHEMA


def _fetch(q: pgq_nb.Queue, sql: str, *args: Any) -> list[Any]:
    return list(runtime.run_sync(q.aio.pool.fetch(sql.replace("S.", f"{SCHEMA}."), *args)))


def _keys(q: pgq_nb.Queue) -> dict[int, str | None]:
    rows = _fetch(q, "SELECT id, concurrency_key FROM S.jobs ORDER BY id")
    return {r["id"]: r["concurrency_key"] for r in rows}


def _job_count(q: pgq_nb.Queue) -> int:
    return int(_fetch(q, "SELECT count(*) AS n FROM S.jobs")[0]["n"])


# -- options (pure) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "cap", "expected"),
    [
        (None, None, (None, None)),
        ("customer_id", None, ("customer_id", 1)),  # a key alone: one at a time
        ("customer_id", 4, ("customer_id", 4)),
    ],
)
def test_key_options_are_checked_and_default_to_one_per_key(
    key: Any, cap: Any, expected: tuple[Any, Any]
) -> None:
    assert keys.check_options("ep", key, cap) == expected


def _by_region(payload: Any) -> Any:
    return payload["region"]


def test_a_function_key_is_kept() -> None:
    assert keys.check_options("ep", _by_region, 2) == (_by_region, 2)


@pytest.mark.parametrize(
    ("key", "cap", "message"),
    [
        (None, 2, "needs a key to count by"),
        ("customer_id", 0, "max_per_key must be at least 1"),
        ("customer_id", -3, "max_per_key must be at least 1"),
        ("customer_id", True, "max_per_key must be an int"),
        ("customer_id", 1.5, "max_per_key must be an int"),
        ("", 1, "must name a payload field"),
        (42, 1, "not int"),
        ("a\x00b", 1, "NUL"),
    ],
)
def test_bad_key_options_are_refused_at_registration(
    q: pgq_nb.Queue, key: Any, cap: Any, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        q.entrypoint("ep", concurrency_key=key, max_per_key=cap)


@pytest.mark.parametrize(
    ("payload", "key"),
    [
        ({"c": "acme"}, "acme"),
        ({"c": 7}, "7"),
        (b'{"c": "from-bytes"}', "from-bytes"),
    ],
)
def test_a_field_key_is_read_from_the_payload(payload: Any, key: str) -> None:
    src = keys.KeySource("ep", "c", None)
    assert keys.key_of(src, payload, "the job") == key


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"other": 1}, "the job of entrypoint 'ep' has no field 'c'"),
        ({"c": None}, "has no field 'c'"),
        ([1, 2], "its payload is list, not a JSON object"),
        (None, "its payload is NoneType"),
        ({"c": 1.5}, r"is 1.5 \(float\); a concurrency_key must be a str or an int"),
        ({"c": True}, r"is True \(bool\)"),
        ({"c": [1]}, r"\(list\)"),
        ({"c": "x" * 2000}, "at most 1,000 are allowed"),
    ],
)
def test_a_payload_that_cannot_be_keyed_is_refused(payload: Any, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        keys.key_of(keys.KeySource("ep", "c", None), payload, "the job")


def test_a_function_key_may_return_none_and_its_errors_are_named() -> None:
    def key(p: Any) -> Any:
        return p.get("k") if p["ok"] else 1 / 0

    src = keys.KeySource("ep", None, key)
    assert keys.key_of(src, {"ok": True, "k": 3}, "job") == "3"
    assert keys.key_of(src, {"ok": True}, "job") is None  # no key: no limit
    with pytest.raises(InvalidInputError, match=r"raised ZeroDivisionError.*for payloads\[2\]"):
        keys.key_of(src, {"ok": False}, "payloads[2]")
    with pytest.raises(InvalidInputError, match="registered only in its workers' process"):
        keys.key_of(keys.KeySource("ep", None, None), {}, "the job")


# -- keys at enqueue --------------------------------------------------------------------------


def test_every_enqueue_path_stores_the_key(q: pgq_nb.Queue) -> None:
    q.entrypoint("sync", concurrency_key="customer", max_per_key=2)(lambda job: None)
    q.entrypoint("plain")(lambda job: None)
    one = q.enqueue("sync", {"customer": "acme"})
    batch = q.enqueue(["sync", "plain", "sync"], [{"customer": 1}, {"x": 1}, {"customer": "b"}])
    with pytest.warns(DuplicatesSkipped):
        deduped = q.enqueue(
            ["sync", "sync"], [{"customer": "d"}, {"customer": "e"}], dedupe_key=["k1", "k1"]
        )
    with q.transaction() as tx:
        in_tx = tx.enqueue("sync", {"customer": "tx"})
    df = pd.DataFrame({"customer": ["f1", "f2"], "n": [1, 2]})
    frame_ids = q.enqueue_df("sync", df)
    stored = _keys(q)
    assert stored[one] == "acme"
    assert [stored[i] for i in batch] == ["1", None, "b"]
    assert deduped[0] is not None and deduped[1] is None
    assert stored[deduped[0]] == "d"
    assert stored[in_tx] == "tx"
    assert [stored[int(i)] for i in frame_ids] == ["f1", "f2"]
    assert (
        _fetch(
            q,
            "SELECT count(*) AS n FROM S.jobs WHERE entrypoint = 'plain' "
            "AND concurrency_key IS NOT NULL",
        )[0]["n"]
        == 0
    )
