"""Tags and metadata (issue #20, item 2): carried by every enqueue form to the handler and to
history, filtered on by every view through the GIN indexes; bad labels write nothing."""

from __future__ import annotations

from typing import Any

import pytest

import pgq_nb
from pgq_nb import runtime
from pgq_nb.enqueue import DuplicatesSkipped
from pgq_nb.errors import InvalidInputError
from pgq_nb.labels import META_LIMIT, TAG_LIMIT, check_filter, check_meta, check_tags
from tests.conftest import SCHEMA


def _fetch(q: pgq_nb.Queue, sql: str, *args: Any) -> list[Any]:
    return runtime.run_sync(q.aio.pool.fetch(sql.replace("S.", f"{SCHEMA}."), *args))


def _labels(q: pgq_nb.Queue, table: str) -> dict[int, tuple[Any, Any]]:
    rows = _fetch(q, f"SELECT id, tags, meta FROM S.{table} ORDER BY id")
    return {r["id"]: (r["tags"], r["meta"]) for r in rows}


def _register(q: pgq_nb.Queue, seen: dict[int, tuple[Any, Any]]) -> None:
    @q.entrypoint("work")
    def work(job: pgq_nb.Job) -> dict[str, Any]:
        seen[job.id] = (job.tags, job.meta)
        if job.data and job.data.get("fail"):
            raise RuntimeError("asked to fail")
        return {"ok": job.id}


def test_single_and_batch_enqueues_carry_labels_to_the_handler_and_history(
    q: pgq_nb.Queue,
) -> None:
    seen: dict[int, tuple[Any, Any]] = {}
    _register(q, seen)
    one = q.enqueue("work", {"n": 1}, tags=["exp-7", "ds-a"], meta={"run": 7, "by": "ana"})
    batch = q.enqueue(["work", "work"], [{"n": 2}, {"n": 3}], tags=["exp-8"], meta={"run": 8})
    plain = q.enqueue("work", {"n": 4})
    q.run_until_idle()
    assert seen[one] == (["exp-7", "ds-a"], {"run": 7, "by": "ana"})
    assert all(seen[i] == (["exp-8"], {"run": 8}) for i in batch)
    assert seen[plain] == (None, None)
    history = _labels(q, "history")
    assert history[one] == (["exp-7", "ds-a"], {"run": 7, "by": "ana"})
    assert history[batch[0]] == history[batch[1]] == (["exp-8"], {"run": 8})
    assert history[plain] == (None, None)


def test_deduped_batch_labels_only_the_rows_written(q: pgq_nb.Queue) -> None:
    _register(q, {})
    first = q.enqueue("work", None, dedupe_key="k1")
    with pytest.warns(DuplicatesSkipped):
        ids = q.enqueue(["work", "work"], None, dedupe_key=["k1", "k2"], tags=["t"])
    assert ids[0] is None and ids[1] is not None
    live = _labels(q, "jobs")
    assert live[first] == (None, None)
    assert live[ids[1]] == (["t"], None)


def test_every_view_filters_by_tag_and_meta(q: pgq_nb.Queue) -> None:
    _register(q, {})
    a = q.enqueue("work", {"n": 1}, tags=["red", "big"], meta={"team": "x", "v": 1})
    b = q.enqueue("work", {"n": 2}, tags=["red"], meta={"team": "y"})
    c = q.enqueue("work", {"n": 3, "fail": True}, tags=["red", "big"], meta={"team": "x"})
    q.enqueue("work", {"n": 4})
    q.run_until_idle()
    waiting = q.enqueue("work", {"n": 5}, tags=["blue"], execute_after=pgq_nb_delay())

    assert set(q.history(tag="red")["job_id"]) == {a, b, c}
    assert set(q.history(tags=["red", "big"])["job_id"]) == {a, c}
    assert set(q.history(meta={"team": "x"})["job_id"]) == {a, c}
    assert set(q.history(tag="big", meta={"v": 1})["job_id"]) == {a}
    assert set(q.history(tag="red", status="failed")["job_id"]) == {c}
    assert set(q.history(tag="red", entrypoint="work", limit=None)["job_id"]) == {a, b, c}
    assert q.history(tag="nobody").empty
    assert set(q.failed(tag="big")["job_id"]) == {c}
    assert q.failed(meta={"team": "y"}).empty
    assert set(q.results("work", tag="red")["job_id"]) == {a, b}
    assert set(q.results("work", meta={"team": "x"}, ids=[a, b, c])["job_id"]) == {a}
    assert list(q.jobs(tag="blue")["job_id"]) == [waiting]
    assert q.jobs(tag="red").empty
    stats = q.stats(tag="red")
    assert stats.loc["work", "succeeded"] == 2 and stats.loc["work", "failed"] == 1
    assert stats.loc["work", "queued"] == 0
    blue = q.stats(tag="blue")
    assert blue.loc["work", "queued"] == 1 and blue.loc["work", "succeeded"] == 0
    assert q.stats(meta={"team": "x"}).loc["work", "succeeded"] == 1


def pgq_nb_delay() -> Any:
    import datetime as dt

    return dt.timedelta(hours=1)


def test_requeued_failed_jobs_keep_their_labels(q: pgq_nb.Queue) -> None:
    _register(q, {})
    job = q.enqueue("work", {"fail": True}, tags=["again"], meta={"k": "v"})
    q.run_until_idle()
    assert q.requeue_failed([job]) == 1
    assert _labels(q, "jobs")[job] == (["again"], {"k": "v"})


def _nested(depth: int) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for _ in range(depth):
        meta = {"a": meta}
    return meta


def _circular() -> dict[str, Any]:
    meta: dict[str, Any] = {}
    meta["self"] = meta
    return meta


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tags": "red"}, "tags must be a list of str"),
        ({"tags": [1]}, r"tags\[0\] is int"),
        ({"tags": [""]}, "empty str"),
        ({"tags": ["x" * (TAG_LIMIT + 1)]}, "characters long"),
        ({"tags": ["a\x00b"]}, "NUL"),
        ({"meta": ["not", "an", "object"]}, "meta must be a dict"),
        ({"meta": {1: "x"}}, "keys must be str"),
        ({"meta": {"when": object()}}, "not JSON-serialisable"),
        ({"meta": {"nan": float("nan")}}, "not JSON-serialisable"),
        ({"meta": {"big": "x" * META_LIMIT}}, "at most"),
        ({"meta": {"a": "b\x00"}}, "NUL"),
        ({"meta": _nested(1200)}, "nested too deeply"),  # RecursionError before
        ({"meta": _circular()}, "not JSON-serialisable"),
    ],
)
def test_bad_labels_are_refused_and_nothing_is_written(
    q: pgq_nb.Queue, kwargs: dict[str, Any], message: str
) -> None:
    _register(q, {})
    with pytest.raises(InvalidInputError, match=message):
        q.enqueue("work", {"n": 1}, **kwargs)
    with pytest.raises(InvalidInputError, match=message):
        q.enqueue(["work", "work"], [1, 2], **kwargs)
    assert _fetch(q, "SELECT id FROM S.jobs") == []


def test_bad_view_filters_are_refused(q: pgq_nb.Queue) -> None:
    with pytest.raises(InvalidInputError, match="tag must be a str"):
        q.history(tag=["a"])  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="meta must be a dict"):
        q.jobs(meta="x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("tags", "expected"),
    [(None, None), ([], None), (["a", "b", "a"], ["a", "b"]), (("x",), ["x"])],
)
def test_tags_are_normalised(tags: Any, expected: Any) -> None:
    assert check_tags(tags) == expected


def test_filters_combine_tag_and_tags() -> None:
    assert check_filter("a", ["b"], None) == (["a", "b"], None)
    assert check_filter(None, None, {}) == (None, None)
    assert check_meta({"a": [1, {"b": None}]}) == {"a": [1, {"b": None}]}


def test_tag_filters_use_the_gin_indexes(q: pgq_nb.Queue) -> None:
    """On a populated history, the tag and meta filters are index scans of the GIN indexes."""
    _fetch(
        q,
        """INSERT INTO S.history (id, entrypoint, priority, status, attempts, created, finished,
               tags, meta)
           SELECT i, 'work', 0, 'succeeded', 1, now(), now() - make_interval(secs => i),
               CASE WHEN i % 1000 = 0 THEN ARRAY['rare', 'r' || i] ELSE ARRAY['common'] END,
               jsonb_build_object('run', i % 500)
           FROM generate_series(1, 20000) AS i""",
    )
    _fetch(q, "ANALYZE S.history")
    queries = q.aio.queries

    def plan(name: str, *args: Any) -> str:
        async def run() -> str:
            async with q.aio.pool.acquire() as conn:
                statement = await conn.prepare("EXPLAIN " + queries[name])
                return "\n".join(r[0] for r in await statement.fetch(*args))

        return runtime.run_sync(run())

    tagged = plan("history_tagged", None, None, None, 1000, None, ["rare"], None)
    assert "history_tags_idx" in tagged, tagged
    by_meta = plan("history_tagged", None, None, None, 1000, None, None, {"run": 7})
    assert "history_meta_idx" in by_meta, by_meta
    failed = plan("failed_tagged", 100, None, None, ["rare"], None)
    assert "Seq Scan" not in failed, failed  # (no failed rows: history_failed_idx is cheaper)
    counted = plan("finished_tagged", None, None, ["rare"], None)
    assert "history_tags_idx" in counted, counted
    assert len(q.history(tag="rare", limit=None)) == 20


def test_enqueue_df_labels_from_a_value_or_a_column(q: pgq_nb.Queue) -> None:
    import pandas as pd

    seen: dict[int, tuple[Any, Any]] = {}
    _register(q, seen)
    df = pd.DataFrame(
        {
            "n": [1, 2, 3],
            "labels": [["a", "b"], None, ["b"]],
            "info": [{"k": 1}, {"k": 2}, None],
        }
    )
    ids = q.enqueue_df("work", df, tags="labels", meta="info")
    same = q.enqueue_df("work", df[["n"]], tags=["all"], meta={"batch": 1})
    deduped = q.enqueue_df("work", df.assign(key=["x", "x", "y"]), dedupe_key="key", tags="labels")
    q.run_until_idle()
    assert [seen[int(i)] for i in ids] == [(["a", "b"], {"k": 1}), (None, {"k": 2}), (["b"], None)]
    assert all(seen[int(i)] == (["all"], {"batch": 1}) for i in same)
    assert seen[int(deduped.iloc[0])][0] == ["a", "b"] and pd.isna(deduped.iloc[1])
    assert seen[int(deduped.iloc[2])][0] == ["b"]
    payloads = q.results("work", expand=False, ids=list(ids))["payload"].tolist()
    assert payloads == [{"n": 1}, {"n": 2}, {"n": 3}]  # label columns are not in the payload
    assert set(q.history(tag="b")["job_id"]) == {
        int(ids.iloc[0]),
        int(ids.iloc[2]),
        int(deduped.iloc[0]),
        int(deduped.iloc[2]),
    }


def test_enqueue_df_meta_takes_numpy_scalars_and_refuses_nan(q: pgq_nb.Queue) -> None:
    import numpy as np
    import pandas as pd

    seen: dict[int, tuple[Any, Any]] = {}
    _register(q, seen)
    info = [
        {"k": np.int64(3), "f": np.float32(0.5), "ok": np.bool_(True), "l": [np.int8(1)]},
        {"k": np.float64(2.5)},
    ]
    ids = q.enqueue_df("work", pd.DataFrame({"n": [1, 2], "info": info}), meta="info")
    q.run_until_idle()
    assert [seen[int(i)][1] for i in ids] == [
        {"k": 3, "f": 0.5, "ok": True, "l": [1]},
        {"k": 2.5},
    ]
    for bad in (np.float32("nan"), np.array([1, 2]), np.datetime64("2026-01-01")):
        with pytest.raises(InvalidInputError, match="not JSON-serialisable"):
            q.enqueue_df("work", pd.DataFrame({"n": [1], "info": [{"k": bad}]}), meta="info")
    assert len(_fetch(q, "SELECT id FROM S.history")) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tags": "labels"}, r"column 'labels', row 1: tags\[0\] is int"),
        ({"meta": "info"}, "column 'info', row 0: meta must be a dict"),
        ({"tags": "nope"}, "names a column the frame does not have"),
        ({"tags": [3]}, r"tags\[0\] is int"),
    ],
)
def test_enqueue_df_bad_labels_write_nothing(
    q: pgq_nb.Queue, kwargs: dict[str, Any], message: str
) -> None:
    import pandas as pd

    _register(q, {})
    df = pd.DataFrame({"n": [1, 2], "labels": [["ok"], [5]], "info": ["x", {"k": 1}]})
    with pytest.raises(InvalidInputError, match=message):
        q.enqueue_df("work", df, **kwargs)
    assert _fetch(q, "SELECT id FROM S.jobs") == []


def test_workflow_steps_and_maps_carry_labels(q: pgq_nb.Queue) -> None:
    seen: dict[int, tuple[Any, Any]] = {}
    _register(q, seen)
    wf = q.workflow("labelled")
    first = wf.step("work", {"n": 1}, tags=["wf-a"], meta={"stage": "load"})
    wf.map("work", [{"n": 2}, {"n": 3}], depends_on=first, name="fan", tags=["wf-b"])
    wf.step("work", {"n": 4}, depends_on="fan", name="plain")
    run = wf.submit()
    q.run_until_idle()
    steps = _fetch(
        q,
        "SELECT step_name, tags, meta FROM S.history WHERE workflow_id = $1 ORDER BY id",
        run.id,
    )
    assert [(r["step_name"], r["tags"], r["meta"]) for r in steps] == [
        ("work", ["wf-a"], {"stage": "load"}),
        ("fan", ["wf-b"], None),
        ("fan", ["wf-b"], None),
        ("plain", None, None),
    ]
    assert len(seen) == 4
    with pytest.raises(InvalidInputError, match="meta must be a dict"):
        q.workflow("bad").step("work", meta=[1])  # type: ignore[arg-type]


def test_schedule_ticks_carry_the_schedules_labels(q: pgq_nb.Queue) -> None:
    import datetime as dt

    _register(q, {})

    @q.schedule("nightly", "0 3 * * *", tags=["cron"], meta={"owner": "ops"})
    def nightly(tick: Any) -> None:
        return None

    q.add_schedule("data-sched", "0 4 * * *", entrypoint="work", tags=["d"], meta={"k": 1})
    q.run_until_idle()  # registers the @q.schedule schedule
    now = dt.datetime.now(dt.UTC)
    fired = q.backfill("data-sched", now - dt.timedelta(days=2), now)
    code_job = q.run_schedule_now("nightly")
    labels = _labels(q, "jobs")
    assert len(fired) == 2
    assert all(labels[int(i)] == (["d"], {"k": 1}) for i in fired["job_id"])
    assert labels[code_job] == (["cron"], {"owner": "ops"})
    q.update_schedule("data-sched", tags=["e"])
    again = q.run_schedule_now("data-sched")
    assert _labels(q, "jobs")[again] == (["e"], {"k": 1})
    with pytest.raises(InvalidInputError, match=r"schedule 'x': tags\[0\] is int"):
        q.add_schedule("x", "0 4 * * *", entrypoint="work", tags=[1])  # type: ignore[list-item]
    assert [r["name"] for r in _fetch(q, "SELECT name FROM S.schedules ORDER BY name")] == [
        "data-sched",
        "nightly",
    ]


def test_failed_jobs_and_the_cli_filter_by_tag(q: pgq_nb.Queue, installed: str) -> None:
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import worker_env

    _register(q, {})
    red = q.enqueue("work", {"fail": True}, tags=["red", "big"])
    blue = q.enqueue("work", {"fail": True}, tags=["blue"])
    q.run_until_idle()
    assert [j.id for j in q.failed_jobs(tag="red")] == [red]
    assert {j.id for j in q.failed_jobs()} == {red, blue}
    assert q.failed_jobs(tags=["red", "blue"]) == []

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "pgq_nb.cli", *args],
            env=worker_env(installed),
            cwd=str(Path(__file__).parent.parent),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout

    shown = cli("failed", "--tag", "blue")
    listed = [line.split()[0] for line in shown.splitlines()[2:] if line.strip()]
    assert listed == [str(blue)], shown
    assert "no failed jobs tagged red, blue" in cli("failed", "--tag", "red", "--tag", "blue")


def test_the_dashboard_shows_a_failed_jobs_tags(q: pgq_nb.Queue) -> None:
    from pgq_nb.notebook.dashboard import dashboard

    _register(q, {})
    job = q.enqueue("work", {"fail": True}, tags=["exp-9", "<b>"])
    q.run_until_idle()
    board = dashboard(q, refresh=3600)
    try:
        board.refresh_now()
        board.failures.select.value = (job,)
        assert "tags exp-9, &lt;b&gt;" in board.failures.detail.value
    finally:
        board.close()


def test_the_claim_plan_is_the_same_with_labelled_jobs_queued(q: pgq_nb.Queue) -> None:
    from tests.test_claim_order import _explain, _index_names, _node_types

    q.entrypoint("rec")(lambda job: None)
    n = 20_000  # above ANALYZE_AFTER_ROWS: the enqueue refreshes statistics itself
    q.enqueue(["rec"] * n, [None] * n, [0] * n)
    before = _explain(q)
    q.enqueue(["rec"] * n, [None] * n, [0] * n, tags=["exp"], meta={"k": 1})
    after = _explain(q)
    assert "jobs_claim_idx" in _index_names(after)
    assert (_index_names(after), _node_types(after)) == (
        _index_names(before),
        _node_types(before),
    )


def test_a_workers_ticks_carry_the_schedules_labels(q: pgq_nb.Queue) -> None:
    from tests.conftest import wait_until

    q.entrypoint("beat")(lambda job: None)
    handle = q.start_worker()
    try:
        q.add_schedule(
            "labelled_beat", "* * * * * *", entrypoint="beat", tags=["tick"], meta={"s": 1}
        )

        def ticks() -> list[Any]:
            return _fetch(
                q,
                "SELECT tags, meta FROM S.jobs WHERE schedule_name = 'labelled_beat' "
                "UNION ALL SELECT tags, meta FROM S.history WHERE schedule_name = 'labelled_beat'",
            )

        wait_until(lambda: len(ticks()) >= 2, 60, "two ticks")
    finally:
        handle.stop(timeout=30)
    assert {(tuple(r["tags"]), r["meta"]["s"]) for r in ticks()} == {(("tick",), 1)}


def test_a_transactions_enqueue_labels_its_jobs_and_rolls_back_with_it(q: pgq_nb.Queue) -> None:
    _register(q, {})
    with q.transaction() as tx:
        kept = tx.enqueue("work", {"n": 1}, tags=["tx"], meta={"in": "tx"})
    with pytest.raises(RuntimeError), q.transaction() as tx:
        tx.enqueue("work", {"n": 2}, tags=["gone"])
        raise RuntimeError("roll back")
    assert _labels(q, "jobs") == {kept: (["tx"], {"in": "tx"})}
