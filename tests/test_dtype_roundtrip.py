"""The payload columns of ``q.results()`` come back with the dtypes ``q.enqueue_df`` was given
(issue #16, item 8), in the same kernel and in a new one (a new connection and queue), while
handlers still see plain JSON in ``job.data``."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import pgq_nb
from pgq_nb import runtime
from pgq_nb.enqueue import DuplicatesSkipped
from pgq_nb.notebook import frames
from tests.conftest import REPO, SCHEMA

ECHO = "dtype_echo"


def _every_dtype() -> pd.DataFrame:
    """A column of every dtype that round-trips, each with a missing value where it can."""
    return pd.DataFrame(
        {
            "decimal": pd.Series(
                [Decimal("1.10"), None, Decimal("-0.000000001"), Decimal("12345678901234567.89")],
                dtype=object,
            ),
            "duration": pd.to_timedelta(
                ["1 days 00:00:00.000000001", None, "-1s", "-1 days +03:00:00.5"]
            ),
            "naive": pd.to_datetime(
                ["2024-01-01 12:00", "NaT", "2024-07-01 23:59:59.123456789", "1999-12-31"],
                format="ISO8601",
            ),
            "aware": pd.to_datetime(
                ["2024-01-15 08:30", "NaT", "2024-07-01 23:59:59.250", "2024-03-31 03:00"],
                format="ISO8601",
            ).tz_localize("Europe/Oslo"),
            "aware_offset": pd.Series(
                pd.date_range("2024-01-01", periods=4, freq="37min", tz=dt.UTC)
            ).dt.tz_convert(dt.timezone(dt.timedelta(hours=-3, minutes=-30))),
            "segment": pd.Categorical(["b", "a", None, "b"], categories=["c", "b", "a"]),
            "size": pd.Categorical(
                ["small", "large", "small", None], categories=["small", "large"], ordered=True
            ),
            "bucket": pd.Categorical([10, 20, 10, 30]),
            "count": pd.array([1, None, 3, 2**40], dtype="Int64"),
            "n": np.array([1, -2, 3, 2**62], dtype="int64"),
            "small": np.array([1, 2, 3, 250], dtype="uint8"),
            "flag": [True, False, True, False],
            "maybe": pd.array([True, None, False, True], dtype="boolean"),
            "x": [1.5, np.nan, -0.1, 1e-300],
            "x32": np.array([0.1, 1.0, np.nan, 3.4e38], dtype="float32"),
            "name": pd.array(["plain", None, 'quote " and ü', "%s 100%"], dtype="str"),
            "day": pd.Series(
                [dt.date(2024, 2, 29), None, dt.date(1970, 1, 1), dt.date(2000, 1, 1)],
                dtype=object,
            ),
        }
    )


def _echo(q: pgq_nb.Queue) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    @q.entrypoint(ECHO)
    def echo(job: pgq_nb.Job) -> dict[str, Any]:
        seen.append(job.data)
        return {"ok": True}

    return seen


def _payload(back: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    return back[list(df.columns)].reset_index(drop=True)


def test_every_dtype_comes_back_in_this_kernel_and_in_a_new_one(
    q: pgq_nb.Queue, installed: str
) -> None:
    df = _every_dtype()
    seen = _echo(q)
    ids = q.enqueue_df(ECHO, df)
    q.run_until_idle()

    back = q.results(ECHO)
    assert list(back["job_id"]) == list(ids)
    pd.testing.assert_frame_equal(_payload(back, df), df)
    assert back["decimal"][0] == Decimal("1.10") and str(back["decimal"][0]) == "1.10"

    # a new kernel: a new connection and a new Queue, nothing shared with the enqueuer
    fresh = pgq_nb.connect(installed, schema=SCHEMA)
    pd.testing.assert_frame_equal(_payload(fresh.results(ECHO), df), df)
    pd.testing.assert_frame_equal(
        _payload(fresh.results(ECHO, ids=ids[1:3].tolist()), df),
        df.iloc[1:3].reset_index(drop=True),
    )

    # the handler saw plain JSON
    by_decimal = {row["decimal"]: row for row in seen}
    first = by_decimal["1.10"]
    assert first["duration"] == "P1DT0H0M0.000000001S"
    assert first["aware"] == "2024-01-15T08:30:00.000000+01:00"
    assert first["naive"] == "2024-01-01T12:00:00.000000000"
    assert first["segment"] == "b" and first["bucket"] == 10 and first["day"] == "2024-02-29"
    assert by_decimal[None]["count"] is None and by_decimal[None]["x"] is None


def test_a_new_process_gets_the_dtypes_back(
    q: pgq_nb.Queue, installed: str, tmp_path: Path
) -> None:
    """Not only a new Queue: a Python process that never saw the frame."""
    df = _every_dtype()
    _echo(q)
    q.enqueue_df(ECHO, df)
    q.run_until_idle()
    script = (
        "import sys, pgq_nb; "
        f"back = pgq_nb.connect(sys.argv[1], schema={SCHEMA!r}).results({ECHO!r}); "
        "back.drop(columns=['job_id', 'ok']).to_pickle(sys.argv[2])"
    )
    out = tmp_path / "results.pkl"
    subprocess.run(
        [sys.executable, "-c", script, installed, str(out)], check=True, cwd=REPO, timeout=120
    )
    pd.testing.assert_frame_equal(pd.read_pickle(out), df)


def test_dedupe_keys_and_a_caller_transaction_keep_the_dtypes(q: pgq_nb.Queue) -> None:
    """Rows skipped by dedupe leave their ids unused in the record; a record written in the
    caller's transaction commits with it."""
    _echo(q)
    df = pd.DataFrame({"key": ["a", "a", "b"], "v": [Decimal("1"), Decimal("2"), Decimal("3")]})
    with pytest.warns(DuplicatesSkipped):
        ids = q.enqueue_df(ECHO, df, dedupe_key="key")
    with pytest.raises(RuntimeError, match="rolled back"), q.transaction() as tx:
        tx.enqueue_df(ECHO, df.assign(key="x", v=pd.to_timedelta([1, 2, 3], unit="s")))
        raise RuntimeError("rolled back")
    with q.transaction() as tx:
        later = tx.enqueue_df(ECHO, df.iloc[:1].assign(key="c"))
    q.run_until_idle()
    back = q.results(ECHO)
    assert back["v"].tolist() == [Decimal("1"), Decimal("3"), Decimal("1")]
    assert back["job_id"].tolist() == [ids[0], ids[2], later[0]]

    async def records() -> int:
        n: int = await q.aio.pool.fetchval(f"SELECT count(*) FROM {SCHEMA}.payload_dtypes")
        return n

    assert runtime.run_sync(records()) == 2  # not the rolled-back one


def test_batches_of_one_entrypoint_with_different_dtypes_each_come_back_as_given(
    q: pgq_nb.Queue,
) -> None:
    _echo(q)
    as_decimal = pd.DataFrame(
        {"v": [Decimal("1.5"), Decimal("2")], "when": pd.to_timedelta([1, 2], unit="s")}
    )
    as_text = pd.DataFrame({"v": pd.array(["1.5", "x"], dtype="str"), "when": ["a", "b"]})
    as_int = pd.DataFrame({"v": pd.array([7, None], dtype="Int64")})
    ids = [q.enqueue_df(ECHO, frame) for frame in (as_decimal, as_text, as_int)]
    q.enqueue(ECHO, {"v": 3})  # no frame: inferred, as before
    q.run_until_idle()

    for frame, batch in zip((as_decimal, as_text, as_int), ids, strict=True):
        back = q.results(ECHO, ids=batch.tolist())
        pd.testing.assert_frame_equal(back[list(frame.columns)], frame)
    every = q.results(ECHO)
    assert list(every["v"]) == [Decimal("1.5"), Decimal("2"), "1.5", "x", 7, pd.NA, 3]
    assert every["v"].dtype == object
    # a column that other calls' rows lack: missing there, in its own dtype
    assert every["when"].dtype == object  # timedelta64 and str: as pd.concat puts them
    q.enqueue_df(ECHO, pd.DataFrame({"big": np.array([2**62], dtype="int64"), "ok": [True]}))
    q.run_until_idle()
    every = q.results(ECHO)
    assert every["big"].dtype == "Int64" and every["big"].tolist()[-1] == 2**62
    assert every["big"].isna().sum() == len(every) - 1
    assert every["ok"].dtype == "boolean"  # (the handler's result "ok" is "ok_result")


def test_interleaved_ids_of_concurrent_batches_find_their_own_dtypes(q: pgq_nb.Queue) -> None:
    """Two batches whose ids interleave (drawn from the sequence at once)."""
    _echo(q)

    async def draw_interleaved() -> None:  # take every other id from the sequence ourselves
        await q.aio.pool.execute(f"SELECT nextval('{SCHEMA}.jobs_id_seq')")

    a = pd.DataFrame({"v": [Decimal("1")] * 5})
    b = pd.DataFrame({"v": pd.to_timedelta(range(5), unit="s")})
    ids_a = q.enqueue_df(ECHO, a)
    runtime.run_sync(draw_interleaved())
    ids_b = q.enqueue_df(ECHO, b)
    q.run_until_idle()
    pd.testing.assert_frame_equal(q.results(ECHO, ids=ids_a.tolist())[["v"]], a)
    pd.testing.assert_frame_equal(q.results(ECHO, ids=ids_b.tolist())[["v"]], b)


@pytest.mark.parametrize(
    ("ids", "starts", "ends"),
    [
        ([], [], []),
        ([5], [5], [6]),
        ([1, 2, 3, 7, 8, 10], [1, 7, 10], [4, 9, 11]),
    ],
)
def test_id_runs(ids: list[int], starts: list[int], ends: list[int]) -> None:
    from pgq_nb.notebook import dtypes  # here: the round trips above fail on main, not collection

    assert dtypes.id_runs(ids) == (starts, ends)


def test_batch_of_finds_each_id_in_its_ranges() -> None:
    from pgq_nb.notebook import dtypes  # here: the round trips above fail on main, not collection

    batches = [{"starts": [1, 10], "ends": [4, 12]}, {"starts": [4], "ends": [6]}]
    found = dtypes.batch_of(np.array([0, 1, 3, 4, 5, 6, 10, 11, 12]), batches)
    assert found.tolist() == [-1, 0, 0, 1, 1, -1, 0, 0, -1]


def test_a_value_that_does_not_match_its_description_is_inferred_instead() -> None:
    """A recorded dtype is a hint: values it cannot hold (a row requeued with an edited payload,
    say) fall back to the inferred dtype instead of failing q.results()."""
    from pgq_nb.notebook import dtypes

    back = dtypes.restore(["not a number", None], {"dtype": "int64"})
    assert back.dtype == "str" and back[0] == "not a number"
    assert dtypes.restore([1, None], {"dtype": "int64"}).dtype == "Int64"
    assert dtypes.restore(["1.5"], {"dtype": "object", "of": "decimal"})[0] == Decimal("1.5")
    assert dtypes.columns_of({"version": 2, "columns": {"v": {"dtype": "int64"}}}) == {}


def test_purge_history_forgets_the_dtypes_of_batches_it_emptied(q: pgq_nb.Queue) -> None:
    _echo(q)
    q.enqueue_df(ECHO, pd.DataFrame({"v": [Decimal("1")]}))
    q.run_until_idle()
    kept = q.enqueue_df(ECHO, pd.DataFrame({"v": [Decimal("2")]}))

    def recorded() -> int:
        async def run() -> int:
            n: int = await q.aio.pool.fetchval(f"SELECT count(*) FROM {SCHEMA}.payload_dtypes")
            return n

        return runtime.run_sync(run())

    assert recorded() == 2
    assert q.purge_history(dt.timedelta(0)) == 1
    assert recorded() == 1  # the queued batch keeps its dtypes
    q.run_until_idle()
    assert q.results(ECHO, ids=kept.tolist())["v"].tolist() == [Decimal("2")]


def test_result_columns_are_json_a_timedelta_result_is_an_iso_duration(q: pgq_nb.Queue) -> None:
    """Result columns are not restored: they come back as JSON holds them. A handler that
    returns a timedelta succeeds (it used to fail: "not JSON serializable")."""

    @q.entrypoint("returns_types")
    def returns_types(job: pgq_nb.Job) -> dict[str, Any]:
        return {
            "price": Decimal("9.90"),
            "took": dt.timedelta(minutes=1, seconds=30, microseconds=5),
            "took_pd": pd.Timedelta("-1s"),
            "at": pd.Timestamp("2024-06-01 12:00", tz="Europe/Oslo"),
            "missing": pd.NaT,
        }

    q.enqueue_df("returns_types", pd.DataFrame({"i": [1]}))
    q.run_until_idle()
    back = q.results("returns_types")
    assert back.loc[0, "price"] == "9.90" and back.loc[0, "took"] == "P0DT0H1M30.000005S"
    assert pd.Timedelta(str(back.loc[0, "took"])) == dt.timedelta(
        minutes=1, seconds=30, microseconds=5
    )
    assert back.loc[0, "took_pd"] == "P-1DT23H59M59S"
    assert back.loc[0, "at"] == "2024-06-01T12:00:00+02:00"
    assert back["missing"].isna().all()


def test_a_workflow_map_over_a_frame_keeps_its_dtypes(q: pgq_nb.Queue, installed: str) -> None:
    """wf.map writes a frame's rows as enqueue_df does (it used to refuse Decimal, timestamps
    and timedeltas: "not JSON serializable") and records their dtypes with the steps."""
    df = _every_dtype()
    seen = _echo(q)
    wf = q.workflow("typed_map")
    wf.map(ECHO, df)
    wf.map("dtype_plain", [{"plain": 1}])  # an iterable: nothing recorded
    q.entrypoint("dtype_plain")(lambda job: job.data)
    run = wf.submit()
    q.run_until_idle()
    assert run.wait(timeout=30, progress=False) == "succeeded"
    assert len(seen) == len(df)
    fresh = pgq_nb.connect(installed, schema=SCHEMA)
    pd.testing.assert_frame_equal(fresh.results(ECHO)[list(df.columns)], df)
    assert fresh.results("dtype_plain")["plain"].tolist() == [1]


def test_a_workflow_map_refuses_what_enqueue_df_refuses_and_adds_nothing(
    q: pgq_nb.Queue,
) -> None:
    wf = q.workflow("bad_map")
    frame = pd.DataFrame({"p": pd.period_range("2024-01", periods=2, freq="M")}, index=["a", "b"])
    with pytest.raises(
        pgq_nb.PayloadError, match=r"map 'echo': column 'p', row 'a'.*Period.*nothing was added"
    ):
        wf.map("echo", frame)
    with pytest.raises(pgq_nb.InvalidInputError, match=r"column names must be strings"):
        wf.map("echo", pd.DataFrame({0: [1]}))
    with pytest.raises(pgq_nb.InvalidInputError, match="has no steps"):
        wf.submit()


def _through_json(series: pd.Series) -> pd.Series:
    """``series`` written as enqueue_df writes it, read back as q.results() rebuilds it."""
    import json

    from pgq_nb.notebook import dtypes, encode

    description = json.loads(json.dumps(dtypes.describe_series(series)))
    values = json.loads("[" + ",".join(encode.column_texts(series)) + "]")
    return dtypes.restore(values, description)


@pytest.mark.parametrize(
    "series",
    [
        pd.Series(pd.Categorical([1, None, 2])),
        pd.Series(pd.Categorical([True, None, False])),
        pd.Series(pd.Categorical([1.5, None, 2.5], ordered=True)),
        pd.Series(pd.Categorical([Decimal("1.5"), None, Decimal("2")])),
        pd.Series(pd.to_datetime(["2024-01-01", "NaT", "2024-01-02"])).astype("category"),
        pd.Series(pd.Categorical(pd.to_timedelta(["1s", None, "2s"]))),
        pd.Series(pd.to_datetime(["2024-01-01", "NaT"]).tz_localize("America/New_York")).astype(
            "category"
        ),
        pd.Series([dt.time(1, 2, 3, 4), None, dt.time(0)], dtype=object),
        pd.Series(
            [dt.datetime(2024, 1, 1, 1, 2, 3, 4), None, dt.datetime(2024, 1, 1, tzinfo=dt.UTC)]
        ),
        pd.Series([pd.Timestamp("2024-01-01 00:00:00.000000001"), None], dtype=object),
        pd.Series([dt.timedelta(seconds=1), None, dt.timedelta(days=-1)], dtype=object),
        pd.Series([1, "a", None, [1, 2], {"k": "v"}], dtype=object),
        pd.Series([None, None], dtype=object),
        pd.Series(pd.array(["a", None], dtype="string")),
        pd.Series(pd.array([1.5, None], dtype="Float64")),
        pd.Series(pd.array([1, None], dtype="UInt16")),
        pd.Series(pd.to_datetime(["2024-01-01", "NaT"]).astype("datetime64[s]")),
        pd.Series(pd.to_timedelta(["1ms", None]).astype("timedelta64[ms]")),
        pd.Series(pd.to_datetime(["2024-01-01", "NaT"], utc=True)),
        pd.Series(np.array([1, 2], dtype="int8")),
        pd.Series([], dtype="float64"),
    ],
    ids=lambda s: str(s.dtype),
)
def test_each_dtype_through_json(series: pd.Series) -> None:
    pd.testing.assert_series_equal(_through_json(series), series)


def test_a_payload_key_job_id_never_hides_the_job_id(q: pgq_nb.Queue) -> None:
    """``job_id`` is always the job's id (a payload column ``job_id`` used to overwrite it, and
    rows of other batches lost theirs): the payload's is ``job_id_payload``, typed as sent."""

    @q.entrypoint("ids_in_payload")
    def handler(job: pgq_nb.Job) -> dict[str, Any]:
        return {"ok": 1, "job_id": -1}

    other = q.enqueue("ids_in_payload", {"status": "theirs"})
    df = pd.DataFrame({"job_id": [-7], "ok": [5], "status": ["mine"]})
    ids = q.enqueue_df("ids_in_payload", df)
    q.run_until_idle()

    mine = q.results("ids_in_payload", ids=list(ids))
    assert list(mine.columns) == [
        "job_id", "job_id_payload", "ok", "status", "ok_result", "job_id_result"
    ]  # fmt: skip
    assert mine["job_id"].tolist() == [int(ids[0])]
    assert mine["job_id_payload"].dtype == "int64" and mine["job_id_payload"].tolist() == [-7]
    assert mine["job_id_result"].tolist() == [-1]

    both = q.results("ids_in_payload")
    assert both["job_id"].tolist() == [other, int(ids[0])]
    assert both["job_id_payload"].isna().tolist() == [True, False]
    assert both["status"].tolist() == ["theirs", "mine"]
    # the README's join back to the enqueued frame
    joined = df.assign(job_id=ids).merge(both[["job_id", "ok_result"]], on="job_id")
    assert joined[["ok", "ok_result"]].values.tolist() == [[5, 1]]

    raw = q.results("ids_in_payload", ids=list(ids), expand=False)
    assert raw["job_id"].tolist() == [int(ids[0])]
    assert raw.loc[0, "payload"] == {"job_id": -7, "ok": 5, "status": "mine"}


def test_a_payload_key_named_like_the_renamed_job_id_is_kept_too(q: pgq_nb.Queue) -> None:
    _echo(q)
    ids = q.enqueue_df(ECHO, pd.DataFrame({"job_id": [1], "job_id_payload": [2]}))
    q.run_until_idle()
    back = q.results(ECHO, ids=list(ids))
    assert back["job_id_payload_payload"].tolist() == [1] and back["job_id_payload"].tolist() == [2]
    assert back.loc[0, "job_id"] == ids[0]


def _recorded(q: pgq_nb.Queue) -> int:
    async def run() -> int:
        n: int = await q.aio.pool.fetchval(f"SELECT count(*) FROM {SCHEMA}.payload_dtypes")
        return n

    return runtime.run_sync(run())


def test_purge_forgets_dtypes_of_emptied_batches_behind_a_waiting_job(q: pgq_nb.Queue) -> None:
    """One job waiting (a future execute_after) used to keep every later batch's dtypes for
    ever: only batches below the lowest id left were forgotten."""
    _echo(q)
    q.enqueue(ECHO, {"v": 0}, execute_after=dt.timedelta(days=30))
    for i in range(200):
        q.enqueue_df(ECHO, pd.DataFrame({"v": [i, i + 1]}), progress=False)
    q.run_until_idle(wait_for_scheduled=1)
    kept = q.enqueue_df(ECHO, pd.DataFrame({"v": [Decimal("2.50")]}), progress=False)
    assert _recorded(q) == 201
    assert q.purge_history(dt.timedelta(0)) == 400
    assert _recorded(q) == 1  # the batch whose job is still queued keeps its dtypes
    q.run_until_idle(wait_for_scheduled=1)
    assert q.results(ECHO, ids=kept.tolist())["v"].tolist() == [Decimal("2.50")]


def test_purge_keeps_a_batch_while_any_of_its_ranges_has_a_job_left(
    q: pgq_nb.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch one of whose jobs is purged and one still queued keeps its dtypes, and so does a
    batch of several id ranges whose only job left is in its last range; the walk goes one
    batch per statement here, so that it has to go on from where a statement stopped."""
    monkeypatch.setattr(frames, "PURGE_DTYPES_BATCH", 1, raising=False)
    _echo(q)
    q.enqueue(ECHO, {"v": 0}, execute_after=dt.timedelta(days=30))
    q.enqueue_df(ECHO, pd.DataFrame({"v": [Decimal("1")] * 3}), progress=False)  # all gone
    later = pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=30)
    partly = q.enqueue_df(
        ECHO,
        pd.DataFrame({"v": [Decimal("3"), Decimal("4")], "at": [pd.NaT, later]}),
        execute_after="at",
        columns=["v"],
        progress=False,
    )
    alone = q.enqueue_df(ECHO, pd.DataFrame({"v": [Decimal("5")]}), progress=False)
    q.run_until_idle(wait_for_scheduled=1)
    last = int(partly.iloc[-1])

    async def sql(statement: str, *args: Any) -> Any:
        return await q.aio.pool.fetch(statement, *args)

    # a record of two ranges, the first of ids no job ever had, the second holding `last`
    runtime.run_sync(
        sql(
            f"INSERT INTO {SCHEMA}.payload_dtypes (entrypoint, job_ids, dtypes) "
            "SELECT $1, int8multirange(int8range(-10, -5), int8range($2::bigint, $2::bigint + 1)), "
            "dtypes "
            f"FROM {SCHEMA}.payload_dtypes WHERE job_ids @> $3::bigint",
            ECHO,
            last,
            int(alone.iloc[0]),
        )
    )
    assert _recorded(q) == 4
    assert q.purge_history(dt.timedelta(0)) == 5  # three, one of `partly`, `alone`
    left = runtime.run_sync(sql(f"SELECT job_ids::text AS r FROM {SCHEMA}.payload_dtypes"))
    assert sorted(row["r"] for row in left) == sorted(
        [f"{{[{int(partly.iloc[0])},{last + 1})}}", f"{{[-10,-5),[{last},{last + 1})}}"]
    )
    runtime.run_sync(sql(f"UPDATE {SCHEMA}.jobs SET execute_after = now() WHERE id = $1", last))
    q.run_until_idle(wait_for_scheduled=1)
    back = q.results(ECHO, ids=[last])
    assert back["v"].tolist() == [Decimal("4")] and back["v"].dtype == object
