"""Input that Postgres cannot store or index (NUL characters, lone surrogates, absurd lengths,
dates out of range) is refused with a clear InvalidInputError before anything is written; the
views show a bounded preview of big payloads."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest

import pgq_nb
from pgq_nb import enqueue, runtime
from pgq_nb.errors import InvalidInputError, PayloadError
from pgq_nb.notebook import frames
from tests.conftest import SCHEMA

LONG_NAME = "n" * 8192
LONG_KEY = secrets.token_hex(500_000)  # 1 MB that does not compress


def _count(q: pgq_nb.Queue, table: str = "jobs") -> int:
    async def run() -> int:
        n: int = await q.aio.pool.fetchval(f"SELECT count(*) FROM {SCHEMA}.{table}")
        return n

    return runtime.run_sync(run())


def _work(q: pgq_nb.Queue) -> None:
    q.entrypoint("work")(lambda job: None)


# -- entrypoint names -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (LONG_NAME, "8,192 characters long; at most 200"),
        ("bad\x00name", "NUL character"),
        ("bad\ud800name", "lone surrogate"),
    ],
)
def test_enqueue_refuses_unstorable_entrypoint_names(
    q: pgq_nb.Queue, name: str, message: str
) -> None:
    # (such a name cannot be registered either: see the test below)
    _work(q)
    with pytest.raises(InvalidInputError, match=message):
        q.enqueue(name, {"x": 1})
    with pytest.raises(InvalidInputError, match=message):
        q.enqueue(["work", name], [{"x": 1}, {"x": 2}])
    with pytest.raises(InvalidInputError, match=message):
        q.enqueue_df(name, pd.DataFrame({"x": [1, 2]}))
    assert _count(q) == 0


@pytest.mark.parametrize(
    "call",
    [
        lambda q, name: q.pause(name),
        lambda q, name: q.resume(name),
        lambda q, name: q.jobs(entrypoint=name),
        lambda q, name: q.history(entrypoint=name),
        lambda q, name: q.failed(entrypoint=name),
        lambda q, name: q.failed_jobs(entrypoint=name),
        lambda q, name: q.results(name),
        lambda q, name: q.requeue_failed(entrypoint=name),
        lambda q, name: q.workflows(name=name),
    ],
    ids=[
        "pause",
        "resume",
        "jobs",
        "history",
        "failed",
        "failed_jobs",
        "results",
        "requeue_failed",
        "workflows",
    ],
)
@pytest.mark.parametrize(
    ("name", "message"),
    [(LONG_NAME, "at most 200"), ("a\x00b", "NUL character")],
    ids=["8KB", "NUL"],
)
def test_calls_taking_a_name_refuse_unstorable_names(
    q: pgq_nb.Queue, call: Callable[[pgq_nb.Queue, str], Any], name: str, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        call(q, name)
    assert _count(q, "entrypoints") == 0


# -- dedupe keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (LONG_KEY, "1,000,000 bytes long in UTF-8; at most 1,000"),
        ("é" * 600, "1,200 bytes long in UTF-8"),
        ("key\x00", "NUL character"),
        ("key\udfff", "lone surrogate"),
    ],
    ids=["1MB", "multibyte", "NUL", "surrogate"],
)
def test_dedupe_keys_postgres_cannot_index_are_refused(
    q: pgq_nb.Queue, key: str, message: str
) -> None:
    _work(q)
    with pytest.raises(InvalidInputError, match=message):
        q.enqueue("work", {"x": 1}, dedupe_key=key)
    with pytest.raises(InvalidInputError, match=message):
        q.enqueue("work", {"x": 1}, dedupe_key=key, dedupe=dt.timedelta(hours=1))
    with pytest.raises(InvalidInputError, match=rf"dedupe_keys\[1\].*{message}"):
        q.enqueue(["work", "work"], [1, 2], dedupe_key=["ok", key])
    frame = pd.DataFrame({"x": [1, 2, 3], "k": ["a", key, "c"]}, index=[10, 11, 12])
    with pytest.raises(InvalidInputError, match=rf"column 'k', row 11: .*{message}"):
        q.enqueue_df("work", frame, dedupe_key="k")
    assert _count(q) == 0


def test_a_dedupe_key_at_the_limit_is_accepted(q: pgq_nb.Queue) -> None:
    _work(q)
    key = "k" * 1_000
    job_id = q.enqueue("work", None, dedupe_key=key)
    assert q.get_job(job_id).dedupe_key == key
    ids = q.enqueue_df("work", pd.DataFrame({"k": ["é" * 500, "x" * 1_000]}), dedupe_key="k")
    assert ids.notna().all()


# -- times ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "delay",
    [dt.timedelta(days=-(10**6)), dt.timedelta(days=10**6), dt.timedelta.max, dt.timedelta.min],
    ids=["-1e6 days", "+1e6 days", "max", "min"],
)
def test_absurd_delays_are_refused(q: pgq_nb.Queue, delay: dt.timedelta) -> None:
    _work(q)
    with pytest.raises(InvalidInputError, match="too far away"):
        q.enqueue("work", {"x": 1}, execute_after=delay)
    with pytest.raises(InvalidInputError, match="too far away"):
        q.enqueue(["work"], [{"x": 1}], execute_after=delay)
    with pytest.raises(InvalidInputError, match="too far away"):
        q.enqueue_df("work", pd.DataFrame({"x": [1]}), execute_after=delay)
    assert _count(q) == 0


def test_absurd_dedupe_windows_and_times_out_of_range_are_refused(q: pgq_nb.Queue) -> None:
    _work(q)
    with pytest.raises(InvalidInputError, match="too far away"):
        q.enqueue("work", None, dedupe_key="k", dedupe=dt.timedelta(days=999_999_999))
    early = dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5)))
    with pytest.raises(InvalidInputError, match="out of range in UTC"):
        q.enqueue("work", None, execute_after=early)
    with pytest.raises(InvalidInputError, match="out of range in UTC"):
        q.enqueue_df("work", pd.DataFrame({"x": [1]}), execute_after=early)
    assert _count(q) == 0
    # a delay a long way off, but within the limit, is fine
    job_id = q.enqueue("work", None, execute_after=dt.timedelta(days=365 * 500))
    execute_after = q.get_job(job_id).execute_after
    assert execute_after is not None and execute_after.year > 2400


# -- payloads -------------------------------------------------------------------------------


def test_a_json_payload_with_nul_is_stored_and_read_back(q: pgq_nb.Queue) -> None:
    # payload is bytea, and JSON writes NUL as the escape \u0000: nothing to refuse
    _work(q)
    job_id = q.enqueue("work", {"s": "a\x00b", "k\x00": 1})
    assert q.get_job(job_id).data == {"s": "a\x00b", "k\x00": 1}
    ids = q.enqueue_df("work", pd.DataFrame({"s": ["a\x00b"]}))
    assert q.get_job(int(ids.iloc[0])).data == {"s": "a\x00b"}


def test_payloads_over_the_limits_are_refused(
    q: pgq_nb.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    _work(q)
    monkeypatch.setattr(enqueue, "PAYLOAD_LIMIT", 1_000)
    with pytest.raises(PayloadError, match="1,001 bytes; a payload may be at most 1,000"):
        q.enqueue("work", b"x" * 1_001)
    with pytest.raises(PayloadError, match=r"payloads\[1\]: .*at most 1,000"):
        q.enqueue(["work", "work"], [b"x", {"s": "y" * 1_000}])
    frame = pd.DataFrame({"s": ["short", "y" * 1_000]}, index=["a", "b"])
    with pytest.raises(PayloadError, match="row 'b' is 1,008 bytes"):
        q.enqueue_df("work", frame)
    monkeypatch.setattr(enqueue, "BATCH_PAYLOAD_LIMIT", 2_500)
    with pytest.raises(PayloadError, match=r"add up to 3,000 bytes.*smaller batches"):
        q.enqueue(["work"] * 3, [b"x" * 1_000] * 3)
    assert _count(q) == 0
    assert q.enqueue("work", b"x" * 1_000) > 0  # at the limit


# -- views: payload previews ----------------------------------------------------------------

BIG = 2_000_000


def _big_jobs(q: pgq_nb.Queue) -> tuple[list[int], int]:
    """Four jobs with a 2 MB payload, and one small one."""
    big = [q.enqueue("work", {"i": i, "blob": "x" * BIG}) for i in range(4)]
    small = q.enqueue("work", {"i": 99})
    return big, small


def _content_size(values: pd.Series) -> int:
    return sum(len(v) if isinstance(v, str | bytes) else len(repr(v)) for v in values)


def test_jobs_shows_a_bounded_preview_of_big_payloads(q: pgq_nb.Queue) -> None:
    _work(q)
    big, small = _big_jobs(q)
    live = q.jobs().set_index("job_id")
    previews = live.loc[big, "payload"]
    assert _content_size(previews) < 4 * (frames.PAYLOAD_PREVIEW + 200)
    for job_id, text in previews.items():
        assert isinstance(text, str)
        assert text.startswith('{"i":') and '"blob":"xxx' in text
        assert f"payload cut: 1,000 of {BIG + 17:,} bytes shown" in text
        assert f"q.get_job({job_id}).payload" in text
    assert live.loc[small, "payload"] == {"i": 99}  # short payloads come whole, decoded
    assert str(live["payload"].dtype) == "object"

    whole = q.jobs(payloads=True).set_index("job_id")
    assert whole.loc[big[2], "payload"] == {"i": 2, "blob": "x" * BIG}
    assert q.get_job(big[3]).data == {"i": 3, "blob": "x" * BIG}


def test_failed_shows_a_bounded_preview_of_big_payloads(q: pgq_nb.Queue) -> None:
    def fail(job: pgq_nb.Job) -> None:
        raise pgq_nb.GiveUp("no")

    q.entrypoint("work")(fail)
    big, small = _big_jobs(q)
    q.run_until_idle()
    failed = q.failed().set_index("job_id")
    assert len(failed) == 5
    assert _content_size(failed.loc[big, "payload"]) < 4 * (frames.PAYLOAD_PREVIEW + 200)
    assert "q.failed(payloads=True)" in str(failed.loc[big[0], "payload"])
    assert failed.loc[small, "payload"] == {"i": 99}
    of_work = q.failed(entrypoint="work", payloads=True).set_index("job_id")
    assert of_work.loc[big[1], "payload"] == {"i": 1, "blob": "x" * BIG}
    with pytest.raises(InvalidInputError, match="payloads must be True or False"):
        q.failed(payloads="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["x" * 201, "a\x00b"])
def test_a_handler_cannot_be_registered_under_a_name_that_cannot_be_stored(
    q: pgq_nb.Queue, name: str
) -> None:
    with pytest.raises(pgq_nb.InvalidInputError, match="entrypoint name"):
        q.entrypoint(name)(lambda job: None)


def test_workflow_and_step_names_and_ids_out_of_range_get_clear_errors(q: pgq_nb.Queue) -> None:
    with pytest.raises(InvalidInputError, match="workflow name"):
        q.workflow("a\x00b")
    with pytest.raises(InvalidInputError, match="at most 200"):
        q.workflow("w" * 1_000_000)
    wf = q.workflow("ok")
    q.entrypoint("work")(lambda job: None)
    with pytest.raises(InvalidInputError, match="step name"):
        wf.step("work", name="s\x00")
    with pytest.raises(InvalidInputError, match="out of range"):
        q.statuses([2**70])
    with pytest.raises(InvalidInputError, match="out of range"):
        q.wait([2**70], timeout=1)
    with pytest.raises(InvalidInputError, match="1,000 years"):
        q.purge_history(dt.timedelta(days=10**6))
