"""Enqueue: one job, the PgQueuer list shape, payload encoding, dedupe keys, bad input."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest

import pgq_nb
from pgq_nb import runtime
from tests.conftest import SCHEMA


def _jobs_in_table(q: pgq_nb.Queue) -> int:
    async def run() -> int:
        n: int = await q.aio.pool.fetchval(f"SELECT count(*) FROM {SCHEMA}.jobs")
        return n

    return runtime.run_sync(run())


def _register(q: pgq_nb.Queue, *names: str) -> None:
    for name in names:
        q.entrypoint(name)(lambda job: None)


def test_single_enqueue_returns_id_and_stores_json(q: pgq_nb.Queue) -> None:
    _register(q, "work")
    job_id = q.enqueue("work", {"x": 1, "y": [1, 2]}, priority=3)
    info = q.get_job(job_id)
    assert info.status is pgq_nb.JobStatus.QUEUED
    assert info.priority == 3
    assert info.data == {"x": 1, "y": [1, 2]}
    assert json.loads(info.payload or b"") == {"x": 1, "y": [1, 2]}


@pytest.mark.parametrize(
    ("payload", "stored"),
    [
        (b"\x00\xffraw", b"\x00\xffraw"),
        (bytearray(b"abc"), b"abc"),
        ("text", b'"text"'),
        (42, b"42"),
        (1.5, b"1.5"),
        (True, b"true"),
        ([1, "a"], b'[1,"a"]'),
        (None, None),
    ],
)
def test_payload_encoding(q: pgq_nb.Queue, payload: object, stored: bytes | None) -> None:
    _register(q, "work")
    job_id = q.enqueue("work", payload)
    assert q.get_job(job_id).payload == stored


def test_pgqueuer_list_shape_one_round_trip_ids_in_order(q: pgq_nb.Queue) -> None:
    _register(q, "a", "b")
    payloads = [json.dumps({"n": i}).encode() for i in range(500)]
    ids = q.enqueue(["a", "b"] * 250, payloads, list(range(500)))
    assert len(ids) == 500
    assert ids == sorted(ids)
    for i in (0, 1, 250, 499):
        info = q.get_job(ids[i])
        assert info.entrypoint == ("a" if i % 2 == 0 else "b")
        assert info.data == {"n": i}
        assert info.priority == i


def test_list_shape_accepts_a_single_priority_and_no_payloads(q: pgq_nb.Queue) -> None:
    _register(q, "a")
    ids = q.enqueue(["a", "a", "a"])
    assert len(ids) == 3
    assert q.enqueue([]) == []


def test_execute_after_accepts_timedelta_and_aware_datetime(q: pgq_nb.Queue) -> None:
    _register(q, "a")
    later = q.get_job(q.enqueue("a", execute_after=dt.timedelta(hours=1)))
    assert later.execute_after is not None
    assert later.execute_after > dt.datetime.now(dt.UTC) + dt.timedelta(minutes=59)
    at = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert q.get_job(q.enqueue("a", execute_after=at)).execute_after == at


def test_dedupe_key_refuses_a_second_live_job(q: pgq_nb.Queue) -> None:
    _register(q, "a")
    first = q.enqueue("a", {"n": 1}, dedupe_key="report-2026-11-28")
    with pytest.raises(pgq_nb.DuplicateJobError, match="report-2026-11-28") as err:
        q.enqueue("a", {"n": 2}, dedupe_key="report-2026-11-28")
    assert err.value.existing_id == first
    assert _jobs_in_table(q) == 1
    q.run_until_idle()
    # once finished, the key is free again
    assert q.enqueue("a", dedupe_key="report-2026-11-28") != first


def test_enqueue_accepts_entrypoints_registered_by_another_process(
    q: pgq_nb.Queue, installed: str
) -> None:
    worker_side = pgq_nb.connect(installed, schema=SCHEMA)
    worker_side.entrypoint("remote")(lambda job: None)
    worker_side.enqueue("remote")  # registering side records the name
    producer = pgq_nb.connect(installed, schema=SCHEMA)
    assert isinstance(producer.enqueue("remote"), int)


# -- bad input: a clear error, nothing written ------------------------------------------


def test_unregistered_entrypoint_is_refused(q: pgq_nb.Queue) -> None:
    _register(q, "known")
    with pytest.raises(pgq_nb.UnknownEntrypointError, match=r"@q.entrypoint\('nope'\)"):
        q.enqueue("nope", {"x": 1})
    with pytest.raises(pgq_nb.UnknownEntrypointError, match="nope"):
        q.enqueue(["known", "nope"], [None, None], [0, 0])
    assert _jobs_in_table(q) == 0


def test_a_misspelt_entrypoint_gets_a_did_you_mean_from_every_known_name(
    q: pgq_nb.Queue, installed: str
) -> None:
    _register(q, "load_orders")
    worker_side = pgq_nb.connect(installed, schema=SCHEMA)
    worker_side.entrypoint("score_orders")(lambda job: None)
    worker_side.enqueue("score_orders")  # records the name in the database
    for typo, meant in (("load_order", "load_orders"), ("score_order", "score_orders")):
        with pytest.raises(pgq_nb.UnknownEntrypointError, match=rf"did you mean '{meant}'"):
            q.enqueue(typo, {"x": 1})
    with pytest.raises(pgq_nb.UnknownEntrypointError, match=r"did you mean 'load_orders'\?"):
        q.start_worker(entrypoints=["load_ordres"])


def test_a_dataframe_payload_points_at_enqueue_df(q: pgq_nb.Queue) -> None:
    _register(q, "score")
    df = pd.DataFrame({"amount": [1.5, 2.0]})
    with pytest.raises(
        pgq_nb.PayloadError, match=r"one job per row, use q\.enqueue_df\('score', df\)"
    ):
        q.enqueue("score", df)
    with pytest.raises(pgq_nb.PayloadError, match=r"q\.enqueue_df\('score', s\.to_frame\(\)\)"):
        q.enqueue("score", df["amount"])
    with pytest.raises(pgq_nb.PayloadError, match=r"q\.enqueue_df\(entrypoint, df\)"):
        q.enqueue(["score", "score"], df)  # type: ignore[call-overload]
    assert _jobs_in_table(q) == 0


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (object(), "cannot be stored"),
        ({"when": dt.datetime(2026, 1, 1)}, "cannot be stored"),
        ({"x": float("nan")}, "NaN"),
        ({1, 2}, "cannot be stored"),
    ],
)
def test_bad_payload_is_refused(q: pgq_nb.Queue, payload: object, message: str) -> None:
    _register(q, "a")
    with pytest.raises(pgq_nb.PayloadError, match=message):
        q.enqueue("a", payload)
    with pytest.raises(pgq_nb.PayloadError, match=r"payloads\[1\]"):
        q.enqueue(["a", "a"], [{"ok": 1}, payload], [0, 0])
    assert _jobs_in_table(q) == 0


def test_lists_of_different_lengths_are_refused(q: pgq_nb.Queue) -> None:
    _register(q, "a")
    with pytest.raises(pgq_nb.InvalidInputError, match="same length; got 2, 1 and 2"):
        q.enqueue(["a", "a"], [None], [0, 0])
    with pytest.raises(pgq_nb.InvalidInputError, match="same length"):
        q.enqueue(["a"], [None], [0, 1])
    assert _jobs_in_table(q) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"priority": "high"}, "priority must be an int"),
        ({"priority": 2**40}, "out of range"),
        ({"execute_after": dt.datetime(2030, 1, 1)}, "naive datetime"),
        ({"execute_after": "tomorrow"}, "timezone-aware datetime or a timedelta"),
        ({"dedupe_key": 5}, "dedupe_key must be a str"),
    ],
)
def test_bad_arguments_are_refused(
    q: pgq_nb.Queue, kwargs: dict[str, object], message: str
) -> None:
    _register(q, "a")
    with pytest.raises(pgq_nb.InvalidInputError, match=message):
        q.enqueue("a", None, **kwargs)  # type: ignore[call-overload]
    assert _jobs_in_table(q) == 0


def test_invalid_schema_name_is_refused_before_any_sql(installed: str) -> None:
    for bad in ["Robert'); DROP TABLE x;--", "UPPER", "1abc", "", "a" * 51, "has-dash"]:
        with pytest.raises(pgq_nb.ConfigurationError, match="invalid schema name"):
            pgq_nb.connect(installed, schema=bad)


def test_job_data_on_raw_bytes_says_to_use_payload(q: pgq_nb.Queue) -> None:
    _register(q, "a")
    info = q.get_job(q.enqueue("a", b"\x00\x01"))
    with pytest.raises(pgq_nb.PayloadError, match=r"read job.payload instead"):
        _ = info.data


def test_unknown_job_id(q: pgq_nb.Queue) -> None:
    with pytest.raises(pgq_nb.JobNotFoundError, match="no job with id 999"):
        q.get_job(999)
