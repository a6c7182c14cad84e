"""q.enqueue_df: DataFrame rows in as jobs (COPY, one transaction), and back out with
q.results, joined on the ids it returned."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pytest

import pgq_nb
from pgq_nb import runtime
from pgq_nb.encoding import encode_payload
from pgq_nb.enqueue import DuplicatesSkipped
from pgq_nb.notebook import encode, progress
from tests.conftest import SCHEMA

UTC = dt.UTC


def _count(q: pgq_nb.Queue, table: str = "jobs") -> int:
    async def run() -> int:
        n: int = await q.aio.pool.fetchval(f"SELECT count(*) FROM {SCHEMA}.{table}")
        return n

    return runtime.run_sync(run())


def _every_dtype() -> pd.DataFrame:
    oslo = pd.to_datetime(
        ["2024-01-15 08:30", "NaT", "2024-07-01 23:59:59.250", "2024-03-31 03:00"],
        format="ISO8601",
    ).tz_localize("Europe/Oslo")
    return pd.DataFrame(
        {
            "n": np.array([1, -2, 3, 2**40], dtype="int64"),
            "x": [1.5, np.nan, -0.1, 1e-300],
            "flag": [True, False, True, False],
            "name": pd.array(["plain", None, 'quote " and ü', "%s 100%"], dtype="str"),
            "aware": oslo,
            "naive": pd.to_datetime(
                ["2024-01-01 12:00", "2024-01-02", "NaT", "1999-12-31 23:59:59"], format="ISO8601"
            ),
            "segment": pd.Categorical(["a", "b", None, "a"]),
            "amount": [Decimal("1.10"), Decimal("-0.000001"), None, Decimal("12345678901234.5")],
            "meta": [
                {"tags": ["x", "y"], "score": np.float64(0.5)},
                None,
                {"deep": {"v": np.nan}},
                {},
            ],
            "day": [dt.date(2024, 2, 29), None, dt.date(1970, 1, 1), dt.date(2000, 1, 1)],
            "count": pd.array([1, None, 3, 4], dtype="Int64"),
        },
        index=pd.Index(["r1", "r2", "r3", "r4"], name="row"),
    )


def test_round_trip_of_every_dtype_through_results(q: pgq_nb.Queue) -> None:
    df = _every_dtype()

    @q.entrypoint("echo")
    def echo(job: pgq_nb.Job) -> dict[str, Any]:
        return {"seen": job.data, "n_doubled": job.data["n"] * 2}

    ids = q.enqueue_df("echo", df)
    assert ids.name == "job_id" and ids.dtype == "Int64"
    assert ids.index.equals(df.index) and ids.is_monotonic_increasing
    q.run_until_idle()

    back = df.assign(job_id=ids).merge(q.results("echo"), on="job_id", suffixes=("", "_back"))
    assert len(back) == len(df)
    assert list(back["n_doubled"]) == [2, -4, 6, 2**41]
    # each payload column comes back under its own name, with the dtype it went in with
    # (tests/test_dtype_roundtrip.py has every dtype); "meta" is JSON, decoded
    payload = [c for c in df.columns if c != "meta"]
    pd.testing.assert_frame_equal(
        back[[f"{c}_back" for c in payload]].set_axis(payload, axis=1),
        df[payload].reset_index(drop=True),
    )
    assert back["amount_back"][0] == Decimal("1.10") and str(back["amount_back"][0]) == "1.10"
    assert list(back["meta_back"]) == [
        {"tags": ["x", "y"], "score": 0.5},
        None,
        {"deep": {"v": None}},
        {},
    ]
    # and the handler saw the same values as job.data
    assert back["seen"][0]["aware"] == "2024-01-15T08:30:00.000000+01:00"
    assert back["seen"][1]["x"] is None and back["seen"][1]["meta"] is None


def test_payload_text_is_what_encode_payload_writes() -> None:
    df = pd.DataFrame({"a": [1, 2], "b": ["x", "ü"], "c": [0.1, None], "d": [True, False]})
    rows = df.astype(object).where(df.notna(), None).to_dict("records")
    assert encode.payloads(df, ["a", "b", "c", "d"]) == [encode_payload(r) for r in rows]
    assert encode.payloads(df, []) == [b"{}", b"{}"]
    assert json.loads(encode.payloads(pd.DataFrame({"%s": [1]}), ["%s"])[0]) == {"%s": 1}


@pytest.mark.parametrize(
    ("value", "reason"),
    [(object(), "object"), (float("inf"), "infinity"), (b"raw", "bytes")],
    ids=["object", "infinity", "bytes"],
)
def test_a_value_that_cannot_be_stored_enqueues_nothing(
    q: pgq_nb.Queue, value: object, reason: str
) -> None:
    q.entrypoint("sink")(lambda job: None)
    column: list[object] = [1.0, 2.0, value, 4.0]
    df = pd.DataFrame({"ok": range(4), "bad": column}, index=["a", "b", "c", "d"])
    with pytest.raises(pgq_nb.PayloadError, match=r"column 'bad', row 'c'") as info:
        q.enqueue_df("sink", df)
    assert reason in str(info.value)
    assert _count(q) == 0


def test_a_bad_value_in_a_late_chunk_rolls_back_the_earlier_chunks(q: pgq_nb.Queue) -> None:
    q.entrypoint("sink")(lambda job: None)
    values: list[object] = list(range(12_000))
    values[11_500] = {1, 2}  # a set has no JSON form
    df = pd.DataFrame({"v": values})
    with pytest.raises(pgq_nb.PayloadError, match=r"column 'v', row 11500"):
        q.enqueue_df("sink", df, chunk_size=1_000, progress=False)
    assert _count(q) == 0


def test_dedupe_keeps_the_first_row_and_skips_keys_held_by_live_jobs(q: pgq_nb.Queue) -> None:
    q.entrypoint("dedupe")(lambda job: None)
    held = q.enqueue("dedupe", {"k": "k1"}, dedupe_key="k1")
    df = pd.DataFrame({"key": ["k1", "k2", "k2", None, "k3", None], "v": range(6)})
    with pytest.warns(DuplicatesSkipped, match="2 of 6 rows skipped") as caught:
        ids = q.enqueue_df("dedupe", df, dedupe_key="key")
    assert ids.isna().tolist() == [True, False, True, False, False, False]
    warning = caught[0].message
    assert isinstance(warning, DuplicatesSkipped)
    assert warning.skipped == {0: held, 2: None}  # row 0: held by a live job; 2: by row 1
    assert "row 0 (key 'k1': job" in str(warning) and "row 2 (key 'k2': an earlier row)" in str(
        warning
    )
    assert held not in set(ids.dropna())
    live = q.jobs(entrypoint="dedupe")
    assert sorted(live["dedupe_key"].dropna()) == ["k1", "k2", "k3"]
    assert live.set_index("job_id").loc[int(ids[1]), "payload"] == {"key": "k2", "v": 1}
    assert _count(q) == 5


def test_priority_and_execute_after_from_columns_or_constants(q: pgq_nb.Queue) -> None:
    q.entrypoint("sched")(lambda job: None)
    soon = pd.Timestamp("2030-01-01 12:00", tz="Europe/Oslo")
    df = pd.DataFrame(
        {
            "prio": [5, -1, 0],
            "due": pd.Series([soon, pd.NaT, soon + pd.Timedelta(hours=1)]),
            "delay": pd.to_timedelta(["1h", None, "2h"]),
        }
    )
    ids = q.enqueue_df("sched", df, priority="prio", execute_after="due")
    live = q.jobs().set_index("job_id").loc[ids.astype("int64")]
    assert list(live["priority"]) == [5, -1, 0]
    assert live["execute_after"].iloc[0] == soon
    assert live["execute_after"].iloc[1] == live["created"].iloc[1]  # NaT: due now
    assert live["execute_after"].iloc[2] == soon + pd.Timedelta(hours=1)

    ids = q.enqueue_df("sched", df, priority="prio", execute_after="delay", columns=["prio"])
    live = q.jobs().set_index("job_id").loc[ids.astype("int64")]
    waits = (live["execute_after"] - live["created"]).dt.total_seconds().round()
    assert list(waits) == [3600, 0, 7200]
    assert list(live["payload"]) == [{"prio": 5}, {"prio": -1}, {"prio": 0}]

    ids = q.enqueue_df("sched", df, priority=7, execute_after=dt.timedelta(minutes=10))
    live = q.jobs().set_index("job_id").loc[ids.astype("int64")]
    assert set(live["priority"]) == {7}
    assert set((live["execute_after"] - live["created"]).dt.total_seconds().round()) == {600}
    objects = pd.DataFrame({"due": [dt.datetime(2030, 6, 1, tzinfo=UTC), None]}, dtype=object)
    ids = q.enqueue_df("sched", objects, execute_after="due")
    live = q.jobs().set_index("job_id").loc[ids.astype("int64")]
    assert live["execute_after"].iloc[0] == pd.Timestamp("2030-06-01", tz="UTC")
    aware = dt.datetime(2031, 5, 1, tzinfo=UTC)
    ids = q.enqueue_df("sched", df, execute_after=aware)
    assert set(q.jobs().set_index("job_id").loc[ids.astype("int64"), "execute_after"]) == {
        pd.Timestamp(aware)
    }


def test_ids_are_reserved_from_the_jobs_identity(q: pgq_nb.Queue) -> None:
    """reserve_job_ids names the identity's sequence as a constant (for speed): keep it true."""

    async def run() -> tuple[str, list[int]]:
        sequence: str = await q.aio.pool.fetchval(
            "SELECT pg_get_serial_sequence($1, 'id')", f"{SCHEMA}.jobs"
        )
        reserved = await q.aio.pool.fetchrow(q.aio.queries["reserve_job_ids"], 3)
        return sequence, reserved["ids"]

    sequence, ids = runtime.run_sync(run())
    assert sequence == f"{SCHEMA}.jobs_id_seq"
    assert len(set(ids)) == 3
    q.entrypoint("sink")(lambda job: None)
    assert q.enqueue("sink") > max(ids)


def test_empty_frame_gives_an_empty_series(q: pgq_nb.Queue) -> None:
    q.entrypoint("sink")(lambda job: None)
    ids = q.enqueue_df("sink", pd.DataFrame({"a": pd.Series([], dtype="int64")}))
    assert len(ids) == 0 and ids.dtype == "Int64" and ids.name == "job_id"
    assert _count(q) == 0
    with pytest.raises(pgq_nb.UnknownEntrypointError):
        q.enqueue_df("nobody", pd.DataFrame())


def test_bad_inputs_are_refused_before_anything_is_written(q: pgq_nb.Queue) -> None:
    q.entrypoint("sink")(lambda job: None)
    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    with pytest.raises(pgq_nb.UnknownEntrypointError, match="nobody"):
        q.enqueue_df("nobody", df)
    duplicated = pd.DataFrame([[1, 2]], columns=["a", "a"])
    with pytest.raises(pgq_nb.InvalidInputError, match="'a' appears more than once"):
        q.enqueue_df("sink", duplicated)
    with pytest.raises(pgq_nb.InvalidInputError, match="must be strings"):
        q.enqueue_df("sink", pd.DataFrame([[1, 2]]))
    with pytest.raises(pgq_nb.InvalidInputError, match="'missing'"):
        q.enqueue_df("sink", df, columns=["a", "missing"])
    with pytest.raises(pgq_nb.InvalidInputError, match="list of column names"):
        q.enqueue_df("sink", df, columns="a")
    with pytest.raises(pgq_nb.InvalidInputError, match="priority names column 'missing'"):
        q.enqueue_df("sink", df, priority="missing")
    with pytest.raises(pgq_nb.InvalidInputError, match="must hold integers"):
        q.enqueue_df("sink", df, priority="b")
    with pytest.raises(pgq_nb.InvalidInputError, match="dedupe_key names column"):
        q.enqueue_df("sink", df, dedupe_key="nope")
    naive = df.assign(due=pd.Timestamp("2030-01-01"))
    with pytest.raises(pgq_nb.InvalidInputError, match="naive"):
        q.enqueue_df("sink", naive, execute_after="due")
    with pytest.raises(pgq_nb.InvalidInputError, match="naive"):
        q.enqueue_df("sink", df, execute_after=dt.datetime(2030, 1, 1))
    with pytest.raises(pgq_nb.InvalidInputError, match="DataFrame"):
        q.enqueue_df("sink", [{"a": 1}])  # type: ignore[arg-type]
    with pytest.raises(pgq_nb.InvalidInputError, match="chunk_size"):
        q.enqueue_df("sink", df, chunk_size=0)
    assert _count(q) == 0


def test_progress_bar_on_or_off_enqueues_the_same(
    q: pgq_nb.Queue, capsys: pytest.CaptureFixture[str]
) -> None:
    q.entrypoint("sink")(lambda job: None)
    df = pd.DataFrame({"v": range(2_500)})
    assert not progress.in_notebook()  # so the default is off here
    ids = q.enqueue_df("sink", df, progress=True, chunk_size=1_000)
    assert "enqueue sink" in capsys.readouterr().err
    assert ids.notna().all() and ids.is_unique
    more = q.enqueue_df("sink", df, progress=False, chunk_size=1_000)
    assert "enqueue sink" not in capsys.readouterr().err
    assert more.min() > ids.max()
    assert _count(q) == 5_000


def test_large_frame_is_chunked_in_order_and_analyzed(
    q: pgq_nb.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    q.entrypoint("sink")(lambda job: None)
    analyzed: list[bool] = []

    async def analyze() -> None:
        analyzed.append(True)

    monkeypatch.setattr(q.aio, "analyze", analyze)
    df = pd.DataFrame({"v": np.arange(12_345)}, index=np.arange(12_345)[::-1])
    ids = q.enqueue_df("sink", df, chunk_size=4_000)
    assert analyzed == [True]
    assert ids.is_monotonic_increasing and ids.is_unique and ids.index.equals(df.index)
    live = q.jobs(limit=100_000)
    assert list(live["job_id"]) == list(ids)
    assert [p["v"] for p in live["payload"]] == list(range(12_345))
    small = q.enqueue_df("sink", df.head(10))
    assert len(small) == 10 and analyzed == [True]  # small loads leave statistics alone


def test_concurrent_bulk_enqueues_get_distinct_ids(q: pgq_nb.Queue) -> None:
    q.entrypoint("sink")(lambda job: None)
    df = pd.DataFrame({"v": range(3_000)})

    async def both() -> tuple[pd.Series, pd.Series, list[int]]:
        first, second, singles = await asyncio.gather(
            q.aio.enqueue_df("sink", df, chunk_size=500),
            q.aio.enqueue_df("sink", df, chunk_size=500),
            q.aio.enqueue(["sink"] * 500),
        )
        return first, second, [int(i) for i in singles]

    first, second, singles = runtime.run_sync(both())
    every = [*first, *second, *singles]
    assert len(set(every)) == 6_500 == _count(q)


def test_copy_wakes_listening_workers_once(q: pgq_nb.Queue, installed: str) -> None:
    q.entrypoint("sink")(lambda job: None)

    async def listen_while_enqueueing() -> list[str]:
        import asyncpg

        heard: list[str] = []
        conn = await asyncpg.connect(installed)
        try:
            await conn.add_listener(q.aio.channel, lambda *args: heard.append(args[2]))
            await q.aio.enqueue_df("sink", pd.DataFrame({"v": range(5_000)}), chunk_size=1_000)
            for _ in range(100):
                if heard:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)
        finally:
            await conn.close()
        return heard

    assert len(runtime.run_sync(listen_while_enqueueing())) == 1


def test_enqueue_df_inside_a_transaction_commits_or_rolls_back_with_it(q: pgq_nb.Queue) -> None:
    q.entrypoint("sink")(lambda job: None)
    df = pd.DataFrame({"key": ["a", "b"], "v": [1, 2]})
    with pytest.raises(RuntimeError, match="changed my mind"), q.transaction() as tx:
        tx.enqueue_df("sink", df, dedupe_key="key")
        raise RuntimeError("changed my mind")
    assert _count(q) == 0
    with q.transaction() as tx:
        first = tx.enqueue_df("sink", df, dedupe_key="key")
        with pytest.warns(DuplicatesSkipped, match="2 of 2 rows"):
            second = tx.enqueue_df("sink", df, dedupe_key="key")  # the staging table is reused
    assert first.notna().all() and second.isna().all()
    assert _count(q) == 2


def test_wait_takes_the_series_enqueue_df_returned(q: pgq_nb.Queue) -> None:
    q.entrypoint("w")(lambda job: job.data["n"])
    live = q.enqueue("w", {"n": 0}, dedupe_key="k0")
    frame = pd.DataFrame({"n": [0, 1, 2], "key": ["k0", "k1", "k2"]})
    with pytest.warns(UserWarning, match="skipped"):
        ids = q.enqueue_df("w", frame, dedupe_key="key")
    assert ids.isna().sum() == 1  # the row whose key a live job holds
    q.run_until_idle()
    statuses = q.wait(ids, timeout=10, progress=False)
    assert sorted(statuses.values()) == ["succeeded", "succeeded"]
    assert live not in statuses
    with pytest.raises(pgq_nb.InvalidInputError, match="job ids"):
        q.wait(["x"], progress=False)  # type: ignore[list-item]
