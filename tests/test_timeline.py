"""run.timeline(): a Gantt chart of a workflow run (issue #21, item 5). The timing rules are
pure functions (pgq_nb.workflow_timeline), table-tested here without a database; the figure
and the web page's SVG are checked against real runs on the test database."""

from __future__ import annotations

import datetime as dt
import os
import threading
from typing import Any

import nbformat
import pytest
from matplotlib.colors import to_hex
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from nbclient import NotebookClient

import pgq_nb
from pgq_nb import runtime, workflow_timeline
from pgq_nb.errors import InvalidInputError, JobNotFoundError
from pgq_nb.notebook.timeline import timeline_figure
from pgq_nb.workflow_run import AsyncWorkflowRun, WorkflowRun
from pgq_nb.workflow_timeline import (
    STATUS_COLOURS,
    build,
    merge,
    nice_ticks,
    seconds_label,
    step_label,
    step_parts,
)
from tests.conftest import SCHEMA, execute_sql, wait_until

T0 = dt.datetime(2026, 11, 30, 5, 0, tzinfo=dt.UTC)


def t(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def step(
    status: str,
    *,
    created: float = 0,
    due: float | None = 0,
    started: float | None = None,
    finished: float | None = None,
    pending: int = 0,
    name: str = "s",
    index: int | None = None,
    path: list[int] | None = None,
    id: int = 1,
) -> dict[str, Any]:
    return {
        "id": id,
        "step_name": name,
        "step_index": index,
        "step_path": path,
        "entrypoint": name,
        "status": status,
        "attempts": 1 if started is not None else 0,
        "created": t(created),
        "execute_after": None if due is None else t(due),
        "started": None if started is None else t(started),
        "finished": None if finished is None else t(finished),
        "pending": pending,
    }


NOW = 100.0
# (what, the step's row, its parts as (kind, start s, end s); open ones end at NOW)
PARTS = [
    (
        "a root that ran",
        step("succeeded", started=2, finished=5),
        [("queued", 0, 2), ("running", 2, 5)],
    ),
    (
        "a child: due when its last parent succeeded",
        step("failed", due=10, started=12, finished=13),
        [("queued", 10, 12), ("running", 12, 13)],
    ),
    (
        "running: open to now",
        step("picked", due=1, started=4),
        [("queued", 1, 4), ("running", 4, NOW)],
    ),
    (
        "claimed the moment it was due: no wait",
        step("succeeded", due=3, started=3, finished=4),
        [("running", 3, 4)],
    ),
    ("queued and due: waiting to now", step("queued", due=30), [("queued", 30, NOW)]),
    ("still blocked on a parent", step("blocked", pending=1), [("blocked", 0, NOW)]),
    (
        "upstream_failed: never runnable",
        step("upstream_failed", finished=40, pending=1),
        [("blocked", 0, 40)],
    ),
    ("cancelled in the queue", step("cancelled", due=5, finished=9), [("queued", 5, 9)]),
    (
        "cancelled while it waited for parents",
        step("cancelled", finished=9, pending=2),
        [("blocked", 0, 9)],
    ),
    ("queued but not yet due (a back-off)", step("queued", due=500), [("blocked", 0, NOW)]),
    (
        "now read before a start in another snapshot",
        step("picked", due=0, started=120),
        [("queued", 0, 120), ("running", 120, 120)],
    ),
    (
        "succeeded from cache: never started",
        step("succeeded", due=7, finished=7),
        [("queued", 7, 7)],
    ),
]


@pytest.mark.parametrize(("what", "row", "expected"), PARTS, ids=[p[0] for p in PARTS])
def test_step_parts(
    what: str, row: dict[str, Any], expected: list[tuple[str, float, float]]
) -> None:
    got = [
        (kind, (a - T0).total_seconds(), (b - T0).total_seconds())
        for kind, a, b in step_parts(row, t(NOW))
    ]
    assert got == expected


@pytest.mark.parametrize(
    ("spans", "gap", "expected"),
    [
        ([], 1, []),
        ([(5, 6), (0, 1)], 0.5, [(0, 1), (5, 6)]),
        ([(0, 3), (1, 2), (2.5, 4)], 0, [(0, 4)]),
        ([(0, 1), (1.2, 2)], 0.5, [(0, 2)]),
        ([(0, 1), (1.2, 2)], 0.1, [(0, 1), (1.2, 2)]),
    ],
)
def test_merge(
    spans: list[tuple[float, float]], gap: float, expected: list[tuple[float, float]]
) -> None:
    assert merge(spans, gap) == expected


@pytest.mark.parametrize(
    ("span", "ticks"),
    [
        (0.748, [0.0, 0.2, 0.4, 0.6]),
        (4.3, [0.0, 1.0, 2.0, 3.0, 4.0]),
        (100, [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]),
        (1000, [0.0, 300.0, 600.0, 900.0]),
        (0, [0.0]),
    ],
)
def test_nice_ticks(span: float, ticks: list[float]) -> None:
    assert nice_ticks(span) == pytest.approx(ticks)


@pytest.mark.parametrize(
    ("seconds", "span", "label"),
    [(0, 10, "0"), (2.5, 10, "2.5 s"), (90, 600, "1:30"), (5400, 20000, "1:30")],
)
def test_seconds_label(seconds: float, span: float, label: str) -> None:
    assert seconds_label(seconds, span) == label


@pytest.mark.parametrize(
    ("row", "label"),
    [
        (step("queued", name="extract"), "extract"),
        (step("queued", name="transform", index=3), "transform[3]"),
        (step("queued", name="transform", index=3, path=[3, 1]), "transform[3.1]"),
    ],
)
def test_step_label(row: dict[str, Any], label: str) -> None:
    assert step_label(row) == label


@pytest.mark.parametrize("bad", [0, -1, 2.5, "50", True, None])
def test_bad_max_rows_is_a_clear_error(bad: object) -> None:
    with pytest.raises(InvalidInputError, match="max_rows must be a positive int"):
        build(RUN, [], t(1), max_rows=bad)  # type: ignore[arg-type]


RUN = {"id": 7, "name": "etl", "status": "running", "created": T0}


def test_a_large_run_folds_by_step_name() -> None:
    steps = [step("succeeded", name="extract", started=0, finished=1, id=1)]
    steps += [
        step(
            "failed" if i == 17 else "succeeded",
            name="transform",
            index=i,
            due=1,
            started=1 + i * 0.01,
            finished=1.5 + i * 0.01,
            id=2 + i,
        )
        for i in range(10_000)
    ]
    steps.append(step("blocked", name="aggregate", pending=10_000, id=10_002))
    tl = build(RUN, steps, t(200))
    assert [r.label for r in tl.rows] == ["extract", "transform (10,000 steps)", "aggregate"]
    folded = tl.rows[1]
    assert folded.steps == 10_000 and folded.status == "failed"
    assert folded.counts == {"succeeded": 9_999, "failed": 1}
    running = [s for s in folded.segments if s.kind == "running"]
    assert running[-1].status == "failed"  # the most telling drawn last
    assert sum(s.status == "succeeded" for s in running) <= 2  # merged, not 10,000 bars
    assert min(s.start for s in running) == 1 and max(s.end for s in running) == pytest.approx(
        101.49
    )
    assert tl.folded == 10_000 and tl.notes() == ["10,000 steps folded into one row per step name"]
    fig = timeline_figure(tl)
    ax = fig.axes[0]
    assert [x.get_text() for x in ax.get_yticklabels()] == [r.label for r in tl.rows]
    assert "10,000 steps folded" in ax.get_title(loc="left")


def test_one_row_per_step_up_to_max_rows() -> None:
    steps = [
        step("succeeded", name="m", index=i, started=i, finished=i + 1, id=i + 1) for i in range(5)
    ]
    assert len(build(RUN, steps, t(10), max_rows=5).rows) == 5
    folded = build(RUN, steps, t(10), max_rows=4)
    assert [r.label for r in folded.rows] == ["m (5 steps)"] and folded.folded == 5
    many_names = [
        step("succeeded", name=f"n{i}", started=i, finished=i + 1, id=i + 1) for i in range(5)
    ]
    cut = build(RUN, many_names, t(10), max_rows=3)
    assert len(cut.rows) == 3 and cut.hidden_rows == 2
    assert cut.notes() == ["2 more rows not shown"]
    capped = build(RUN, steps, t(10), capped=True)
    assert capped.notes() == ["only the first 5 steps were read"]


# -- real runs -------------------------------------------------------------------------------


def bars(fig: Figure) -> dict[tuple[str, int], tuple[str, float, float]]:
    """{(kind, row): (colour, start, end)} of the figure's bars (one of each kind per row)."""
    out = {}
    for container in fig.axes[0].containers:
        assert isinstance(container, BarContainer)
        for rect in container.patches:
            kind, row, status = str(rect.get_gid()).split(":")
            key = (kind, int(row))
            assert key not in out, f"two {kind} bars on row {row}"
            out[key] = (
                to_hex(rect.get_facecolor(), keep_alpha=False),
                rect.get_x(),
                rect.get_x() + rect.get_width(),
            )
            assert STATUS_COLOURS[status] == out[key][0]
    return out


def seconds(value: dt.datetime, origin: dt.datetime) -> float:
    return (value - origin).total_seconds()


def test_a_failed_run_has_one_bar_per_step_with_its_colour_and_span(q: pgq_nb.Queue) -> None:
    @q.entrypoint("ok")
    def ok(job: pgq_nb.Job) -> int:
        return 1

    @q.entrypoint("bad", retry=pgq_nb.RetryPolicy.none())
    def bad(job: pgq_nb.Job) -> None:
        raise ValueError("bad step")

    @q.entrypoint("gate")
    def gate(job: pgq_nb.Job) -> None:
        pass

    wf = q.workflow("mixed")
    first = wf.step("ok")
    failing = wf.step("bad", depends_on=first)
    wf.step("ok", name="after_bad", depends_on=failing)
    held = wf.step("gate")
    wf.step("ok", name="after_gate", depends_on=held)
    run = wf.submit()
    # gate is left queued (not run here), so the step after it stays blocked
    q.run_until_idle(entrypoints=["ok", "bad"], timeout=60)
    by_name = {s["step_name"]: s for s in run.steps()}
    assert {n: s["status"] for n, s in by_name.items()} == {
        "ok": "succeeded",
        "bad": "failed",
        "after_bad": "upstream_failed",
        "gate": "queued",
        "after_gate": "blocked",
    }
    fig = run.timeline()
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    labels = [x.get_text() for x in ax.get_yticklabels()]
    assert labels == ["ok", "bad", "after_bad", "gate", "after_gate"]  # submission order
    drawn = bars(fig)
    origin = min(s["created"] for s in by_name.values())
    green, red = STATUS_COLOURS["succeeded"], STATUS_COLOURS["failed"]
    for row, name, colour in ((0, "ok", green), (1, "bad", red)):
        s = by_name[name]
        assert drawn["running", row][0] == colour
        assert drawn["running", row][1] == pytest.approx(seconds(s["started"], origin), abs=1e-6)
        assert drawn["running", row][2] >= seconds(s["finished"], origin) - 1e-6
    # the failed step waited in the queue from its parent's success (as recorded: the finish
    # time is the worker's clock, the unblock the database's, a flush later)
    assert drawn["queued", 1][1] == pytest.approx(
        seconds(by_name["ok"]["finished"], origin), abs=0.5
    )
    assert drawn["queued", 1][2] == pytest.approx(
        seconds(by_name["bad"]["started"], origin), abs=1e-6
    )
    # never runnable: hatched from creation to its end (upstream_failed) or now (blocked)
    assert drawn["blocked", 2][0] == STATUS_COLOURS["upstream_failed"]
    assert drawn["blocked", 2][2] == pytest.approx(
        seconds(by_name["after_bad"]["finished"], origin), abs=1e-3
    )
    assert drawn["blocked", 4][0] == STATUS_COLOURS["blocked"]
    assert drawn["queued", 3][0] == STATUS_COLOURS["queued"]
    assert set(drawn) == {
        ("queued", 0),
        ("running", 0),
        ("queued", 1),
        ("running", 1),
        ("blocked", 2),
        ("queued", 3),
        ("blocked", 4),
    }
    box = ax.get_legend()
    assert box is not None
    legend = [x.get_text() for x in box.get_texts()]
    assert legend[:5] == ["succeeded", "failed", "upstream failed", "queued", "blocked"]
    assert "queue wait" in legend and "run" in legend and "not runnable yet" in legend
    assert "workflow mixed" in ax.get_title(loc="left") and "failed" in ax.get_title(loc="left")


def test_a_running_run_draws_open_bars_to_now(q: pgq_nb.Queue) -> None:
    release = threading.Event()

    @q.entrypoint("slow")
    def slow(job: pgq_nb.Job) -> None:
        release.wait(60)

    wf = q.workflow("live")
    wf.step("slow", name="after", depends_on=wf.step("slow"))
    run = wf.submit()
    worker = q.start_worker()
    try:
        wait_until(lambda: run.counts()["picked"] == 1, 30, "the first step running")
        fig = run.timeline()
        tl = runtime.run_sync(workflow_timeline.read(q.aio.pool, q.aio.queries, run.id))
    finally:
        release.set()
        worker.stop()
    assert tl.state == "running" and [r.open for r in tl.rows] == [True, True]
    now = (tl.now - tl.origin).total_seconds()
    running = tl.rows[0].segments[-1]
    assert running.kind == "running" and running.status == "picked" and running.end == now
    assert tl.rows[1].segments[0].kind == "blocked" and tl.rows[1].segments[0].end == now
    drawn = bars(fig)
    assert drawn["running", 0][0] == STATUS_COLOURS["picked"]
    assert "so far" in fig.axes[0].get_title(loc="left")
    assert any(line.get_linestyle() == "--" for line in fig.axes[0].get_lines())  # now


def test_a_large_submitted_run_folds(q: pgq_nb.Queue) -> None:
    @q.entrypoint("extract")
    def extract(job: pgq_nb.Job) -> None:
        pass

    @q.entrypoint("transform")
    def transform(job: pgq_nb.Job) -> None:
        pass

    wf = q.workflow("big")
    wf.map("transform", [{"n": i} for i in range(300)], depends_on=wf.step("extract"))
    run = wf.submit()
    fig = run.timeline()
    labels = [x.get_text() for x in fig.axes[0].get_yticklabels()]
    assert labels == ["extract", "transform (300 steps)"]
    assert "300 steps folded into one row per step name" in fig.axes[0].get_title(loc="left")
    assert len(run.timeline(max_rows=400).axes[0].get_yticklabels()) == 301


def test_an_unknown_run_and_bad_max_rows_are_clear_errors(q: pgq_nb.Queue) -> None:
    with pytest.raises(JobNotFoundError, match="no workflow run with id 424242"):
        q.workflow_run(424242)
    gone = WorkflowRun(AsyncWorkflowRun(q.aio.store, 424242, "gone"))
    with pytest.raises(JobNotFoundError, match=r"no workflow run with id 424242: q.workflows\(\)"):
        gone.timeline()

    @q.entrypoint("noop")
    def noop(job: pgq_nb.Job) -> None:
        pass

    wf = q.workflow("tiny")
    wf.step("noop")
    run = wf.submit()
    with pytest.raises(InvalidInputError, match="max_rows must be a positive int"):
        run.timeline(max_rows=0)


def test_a_notebook_shows_the_chart_once_as_a_static_image(dsn: str) -> None:
    cells = [
        "import pgq_nb\nq = pgq_nb.connect(schema='pgq_nb_timeline_nb')\nq.install()",
        "@q.entrypoint('one')\n"
        "def one(job):\n"
        "    return 1\n"
        "wf = q.workflow('nb')\n"
        "wf.step('one', depends_on=wf.step('one'))\n"
        "run = wf.submit()\n"
        "q.run_until_idle(timeout=60)",
        "run.timeline()",  # pyplot never imported
        "fig = run.timeline()",  # not the cell's value: nothing shown
        "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()",  # the inline backend
        "run.timeline()",
        "q.uninstall()",
    ]
    nb = nbformat.v4.new_notebook()  # type: ignore[no-untyped-call]
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]  # type: ignore[no-untyped-call]
    env = dict(os.environ, PGQ_NB_DSN=dsn)
    env.pop("PGQ_NB_HOME", None)
    NotebookClient(nb, timeout=120, kernel_name="python3").execute(env=env)
    for cell in (2, 5):
        outputs = nb.cells[cell].outputs
        assert [o.output_type for o in outputs] == ["execute_result"], cell  # shown once
        assert "image/png" in outputs[0].data, cell  # static: it stays in the saved notebook
    assert nb.cells[3].outputs == []


def test_a_run_without_rows_left_says_so() -> None:
    # retention purges a succeeded run's rows: its timeline has no steps to draw
    tl = build({**RUN, "status": "succeeded"}, [], t(5))
    assert tl.rows == () and tl.steps == 0
    ax = timeline_figure(tl).axes[0]
    assert [x.get_text() for x in ax.texts] == ["no steps"]


def test_steps_added_while_the_run_runs_appear(q: pgq_nb.Queue, installed: str) -> None:
    # wf.map_over (issue #21, item 1) adds steps as rows of the run with map_source and
    # step_path; written here as that code writes them, the timeline reads them unchanged
    @q.entrypoint("extract")
    def extract(job: pgq_nb.Job) -> None:
        pass

    wf = q.workflow("grows")
    wf.step("extract")
    run = wf.submit()
    (parent,) = [s["id"] for s in run.steps()]
    execute_sql(
        installed,
        f"INSERT INTO {SCHEMA}.jobs (entrypoint, status, workflow_id, step_name, step_index, "
        f"map_source, step_path) SELECT 'extract', 'queued', {run.id}, 'per_region', i, "
        f"{parent}, ARRAY[0, i] FROM generate_series(0, 2) AS i",
    )
    labels = [x.get_text() for x in run.timeline().axes[0].get_yticklabels()]
    assert labels == ["extract", "per_region[0.0]", "per_region[0.1]", "per_region[0.2]"]
