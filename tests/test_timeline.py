"""run.timeline(): a Gantt chart of a workflow run (issue #21, item 5). The timing rules are
pure functions (pgq_nb.workflow_timeline), table-tested here without a database; the figure
and the web page's SVG are checked against real runs on the test database."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

import pgq_nb
from pgq_nb import runtime, workflow_timeline
from pgq_nb.errors import InvalidInputError, JobNotFoundError
from pgq_nb.notebook.timeline import timeline_figure
from pgq_nb.workflow_run import AsyncWorkflowRun
from pgq_nb.workflow_timeline import STATUS_COLOURS, build, merge, step_label, step_parts
from tests.conftest import wait_until

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
    ("a root that ran", step("succeeded", started=2, finished=5),
     [("queued", 0, 2), ("running", 2, 5)]),
    ("a child: due when its last parent succeeded", step("failed", due=10, started=12, finished=13),
     [("queued", 10, 12), ("running", 12, 13)]),
    ("running: open to now", step("picked", due=1, started=4), [("queued", 1, 4), ("running", 4, NOW)]),
    ("claimed the moment it was due: no wait", step("succeeded", due=3, started=3, finished=4),
     [("running", 3, 4)]),
    ("queued and due: waiting to now", step("queued", due=30), [("queued", 30, NOW)]),
    ("still blocked on a parent", step("blocked", pending=1), [("blocked", 0, NOW)]),
    ("upstream_failed: never runnable", step("upstream_failed", finished=40, pending=1),
     [("blocked", 0, 40)]),
    ("cancelled in the queue", step("cancelled", due=5, finished=9), [("queued", 5, 9)]),
    ("cancelled while it waited for parents", step("cancelled", finished=9, pending=2),
     [("blocked", 0, 9)]),
    ("queued but not yet due (a back-off)", step("queued", due=500), [("blocked", 0, NOW)]),
    ("now read before a start in another snapshot", step("picked", due=0, started=120),
     [("queued", 0, 120), ("running", 120, 120)]),
    ("succeeded from cache: never started", step("succeeded", due=7, finished=7),
     [("queued", 7, 7)]),
]


@pytest.mark.parametrize(("what", "row", "expected"), PARTS, ids=[p[0] for p in PARTS])
def test_step_parts(what: str, row: dict[str, Any], expected: list[tuple[str, float, float]]) -> None:
    got = [(kind, (a - T0).total_seconds(), (b - T0).total_seconds()) for kind, a, b in step_parts(row, t(NOW))]
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
def test_merge(spans: list[tuple[float, float]], gap: float, expected: list[tuple[float, float]]) -> None:
    assert merge(spans, gap) == expected


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
    assert min(s.start for s in running) == 1 and max(s.end for s in running) == pytest.approx(101.49)
    assert tl.folded == 10_000 and tl.notes() == ["10,000 steps folded into one row per step name"]
    fig = timeline_figure(tl)
    ax = fig.axes[0]
    assert [x.get_text() for x in ax.get_yticklabels()] == [r.label for r in tl.rows]
    assert "10,000 steps folded" in ax.get_title(loc="left")


def test_one_row_per_step_up_to_max_rows() -> None:
    steps = [step("succeeded", name="m", index=i, started=i, finished=i + 1, id=i + 1) for i in range(5)]
    assert len(build(RUN, steps, t(10), max_rows=5).rows) == 5
    folded = build(RUN, steps, t(10), max_rows=4)
    assert [r.label for r in folded.rows] == ["m (5 steps)"] and folded.folded == 5
    many_names = [step("succeeded", name=f"n{i}", started=i, finished=i + 1, id=i + 1) for i in range(5)]
    cut = build(RUN, many_names, t(10), max_rows=3)
    assert len(cut.rows) == 3 and cut.hidden_rows == 2
    assert cut.notes() == ["2 more rows not shown"]
