"""A workflow run's timeline: when each step waited and ran, as spans in seconds from the
run's submission, for ``run.timeline()`` (matplotlib: :mod:`pgq_nb.notebook.timeline`) and
the web dashboard's run page (inline SVG: :mod:`pgq_nb.web.timeline`). Pure functions of the
rows of the named query ``workflow_timeline_steps`` (table-tested), and :func:`read`, which
runs it; no pandas, no matplotlib.

A step's bar has up to two parts, ``end`` being its finish, or now while it is live:

- ``running``: its last attempt, from ``started`` to ``end``;
- ``queued`` (queue wait): from when its last attempt became due to its start (or ``end``).
  That is ``execute_after``: the submission for a step without parents; for one that waited,
  the moment its last parent's success was recorded (the statement that unblocks a step sets
  it); the end of a retry's back-off or of a snooze; a ``run.retry()``'s requeue. Earlier
  attempts are not drawn (the row's ``attempts`` says how many there were);
- ``blocked`` instead of both, for a step that never became runnable (still blocked,
  upstream_failed, cancelled while it waited for its parents, or queued but not yet due):
  from its creation to ``end``.

Steps added while the run runs (``wf.map_over``) are rows of the same run: they appear with
no extra work. A run of more than ``max_rows`` steps is folded: every step name with more than
one step becomes one row, its steps' parts merged per status, and the timeline says how many
steps were folded.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pgq_nb.errors import InvalidInputError, JobNotFoundError

#: A step's colour by its status (a job's statuses: "picked" is running).
STATUS_COLOURS = {
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "cancelled": "#757575",
    "upstream_failed": "#ef6c00",
    "picked": "#1565c0",
    "queued": "#8e24aa",
    "blocked": "#90a4ae",
}
STATUS_LABELS = {"picked": "running", "upstream_failed": "upstream failed"}
#: The parts of a bar, in the order they are drawn.
KINDS = ("blocked", "queued", "running")
KIND_LABELS = {"blocked": "not runnable yet", "queued": "queue wait", "running": "run"}
#: A folded row's status: the first of these its steps have.
_TELLING = ("failed", "picked", "queued", "blocked", "upstream_failed", "cancelled", "succeeded")
#: Rows drawn one per step up to this many steps; more are folded by step name.
MAX_ROWS = 50
#: run.timeline() reads at most this many steps of a run (the note says when there were more).
READ_CAP = 50_000
#: A folded row's parts closer than this fraction of the whole span are drawn as one.
MERGE_FRACTION = 1 / 500


@dataclasses.dataclass(frozen=True, slots=True)
class Segment:
    """One part of a bar: ``kind`` (blocked, queued, running) of steps of ``status``, from
    ``start`` to ``end`` seconds after the run's submission."""

    kind: str
    status: str
    start: float
    end: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class Row:
    """One row of the chart: a step, or every step of one name when folded."""

    label: str
    #: the step's status; a folded row's most telling one (failed first, succeeded last)
    status: str
    segments: tuple[Segment, ...]
    #: 1, or how many steps were folded into this row
    steps: int = 1
    job_id: int | None = None
    attempts: int = 0
    #: a part still going (it ends at now)
    open: bool = False
    #: a folded row's steps per status
    counts: Mapping[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Timeline:
    run_id: int
    name: str
    state: str
    #: the run's submission (the time axis' zero) and the server's clock when read
    origin: dt.datetime
    now: dt.datetime
    #: seconds from the origin to the latest end drawn
    span: float
    rows: tuple[Row, ...]
    #: steps read, per status
    counts: Mapping[str, int]
    #: steps folded into rows by name; rows left out past max_rows; whether READ_CAP was hit
    folded: int = 0
    hidden_rows: int = 0
    capped: bool = False

    @property
    def steps(self) -> int:
        return sum(self.counts.values())

    def notes(self) -> list[str]:
        """What the chart does not show one row per step, in words."""
        out = []
        if self.folded:
            out.append(f"{self.folded:,} steps folded into one row per step name")
        if self.hidden_rows:
            out.append(f"{self.hidden_rows:,} more rows not shown")
        if self.capped:
            out.append(f"only the first {self.steps:,} steps were read")
        return out


def step_label(step: Mapping[str, Any]) -> str:
    """``name``, ``name[3]`` for a map's step, ``name[3.1]`` for a step of a map over maps."""
    name = str(step["step_name"] or step["entrypoint"])
    path = step.get("step_path")
    if path:
        return f"{name}[{'.'.join(str(p) for p in path)}]"
    if step.get("step_index") is not None:
        return f"{name}[{step['step_index']}]"
    return name


def step_parts(
    step: Mapping[str, Any], now: dt.datetime
) -> list[tuple[str, dt.datetime, dt.datetime]]:
    """The parts of one step's bar as (kind, start, end): see the module's docstring."""
    status, created = step["status"], step["created"]
    started, finished, due = step["started"], step.get("finished"), step.get("execute_after")
    end = max(finished if finished is not None else now, created)
    if started is not None:
        end = max(end, started)  # now read before a start in another snapshot
        parts = []
        if due is not None and max(due, created) < started:
            parts.append(("queued", max(due, created), started))
        parts.append(("running", started, end))
        return parts
    runnable = (
        status not in ("blocked", "upstream_failed")
        and not step.get("pending")
        and due is not None
        and due <= end
    )
    if runnable:
        return [("queued", max(due, created), end)]
    return [("blocked", created, end)]


def merge(spans: Iterable[tuple[float, float]], gap: float) -> list[tuple[float, float]]:
    """The union of ``spans``, sorted, joining those less than ``gap`` apart."""
    out: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if out and start - out[-1][1] < gap:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def seconds_label(seconds: float, span: float) -> str:
    """A tick of the time axis: "12.5 s" for a short run, "m:ss" up to two hours, then
    "h:mm"."""
    if span < 120:
        return f"{seconds:.3g} s" if seconds else "0"
    whole = round(seconds)
    if span < 7200:
        return f"{whole // 60}:{whole % 60:02d}"
    return f"{whole // 3600}:{whole % 3600 // 60:02d}"


def duration_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def nice_ticks(span: float, most: int = 7) -> list[float]:
    """Ticks from 0 to ``span`` at a round step (1, 2 or 5 times a power of ten seconds, or
    whole minutes), fewer than ``most`` of them (unless the run took more than a day)."""
    if span <= 0:
        return [0.0]
    if span < 120:  # labelled in seconds
        steps = [m * 10.0**e for e in range(-3, 3) for m in (1, 2, 5)]
    else:  # labelled m:ss or h:mm
        steps = [60.0 * m for m in (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440)]
    step = min((s for s in steps if span / s < most), default=steps[-1])
    return [i * step for i in range(int(span / step + 1e-9) + 1)]


def band(kind: str, folded: bool) -> tuple[float, float]:
    """Where a part is drawn in its row, as fractions of the row's height: (its centre's offset
    below the row's centre, its height). A folded row draws its waiting parts in its upper half
    and its runs in the lower, so that the runs of some steps do not hide the waits of others."""
    if folded:
        return (0.21, 0.4) if kind == "running" else (-0.21, 0.4)
    return (0.0, 0.8) if kind == "running" else (0.0, 0.5)


def check_max_rows(max_rows: object) -> int:
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise InvalidInputError(
            f"max_rows must be a positive int (the rows drawn one per step before the steps "
            f"are folded by name), not {max_rows!r}: for example max_rows=100"
        )
    return max_rows


def build(
    run: Mapping[str, Any],
    steps: Sequence[Mapping[str, Any]],
    now: dt.datetime,
    *,
    max_rows: int = MAX_ROWS,
    capped: bool = False,
) -> Timeline:
    """The timeline of ``run`` (a ``workflows`` row) from its ``steps`` in submission order,
    as of ``now`` (the server's clock)."""
    max_rows = check_max_rows(max_rows)
    origin: dt.datetime = min([run["created"], *(s["created"] for s in steps)])
    parts = [step_parts(s, now) for s in steps]
    ends = [(end - origin).total_seconds() for ps in parts for _, _, end in ps]
    if run["status"] == "running":
        ends.append((now - origin).total_seconds())  # a running run's axis reaches now
    span = max([0.001, *ends])
    counts: dict[str, int] = {}
    for s in steps:
        counts[s["status"]] = counts.get(s["status"], 0) + 1

    def seconds(t: dt.datetime) -> float:
        return (t - origin).total_seconds()

    def single(step: Mapping[str, Any], ps: list[tuple[str, dt.datetime, dt.datetime]]) -> Row:
        status = step["status"]
        return Row(
            label=step_label(step),
            status=status,
            segments=tuple(Segment(k, status, seconds(a), seconds(b)) for k, a, b in ps),
            job_id=step["id"],
            attempts=step.get("attempts") or 0,
            open=step.get("finished") is None,
            counts={status: 1},
        )

    rows: list[Row] = []
    folded = 0
    if len(steps) <= max_rows:
        rows = [single(s, ps) for s, ps in zip(steps, parts, strict=True)]
    else:
        groups: dict[str, list[int]] = {}
        for i, s in enumerate(steps):
            groups.setdefault(str(s["step_name"] or s["entrypoint"]), []).append(i)
        for name, members in groups.items():
            if len(members) == 1:
                rows.append(single(steps[members[0]], parts[members[0]]))
            else:
                folded += len(members)
                rows.append(_folded(name, [(steps[i], parts[i]) for i in members], seconds, span))
    hidden = max(0, len(rows) - max_rows)
    return Timeline(
        run_id=run["id"],
        name=run["name"],
        state=run["status"],
        origin=origin,
        now=now,
        span=span,
        rows=tuple(rows[:max_rows]),
        counts=counts,
        folded=folded,
        hidden_rows=hidden,
        capped=capped,
    )


def _folded(
    name: str,
    members: list[tuple[Mapping[str, Any], list[tuple[str, dt.datetime, dt.datetime]]]],
    seconds: Any,
    span: float,
) -> Row:
    spans: dict[tuple[str, str], list[tuple[float, float]]] = {}
    counts: dict[str, int] = {}
    for step, ps in members:
        counts[step["status"]] = counts.get(step["status"], 0) + 1
        for kind, start, end in ps:
            spans.setdefault((kind, step["status"]), []).append((seconds(start), seconds(end)))
    order = {s: i for i, s in enumerate(reversed(_TELLING))}  # the most telling drawn last
    segments = [
        Segment(kind, status, start, end)
        for kind, status in sorted(spans, key=lambda k: (KINDS.index(k[0]), order.get(k[1], 0)))
        for start, end in merge(spans[kind, status], span * MERGE_FRACTION)
    ]
    return Row(
        label=f"{name} ({len(members):,} steps)",
        status=next((s for s in _TELLING if s in counts), members[0][0]["status"]),
        segments=tuple(segments),
        steps=len(members),
        open=any(step.get("finished") is None for step, _ in members),
        counts=counts,
    )


async def read(
    pool: Any, queries: Mapping[str, str], run_id: int, *, max_rows: int = MAX_ROWS
) -> Timeline:
    """The timeline of run ``run_id``: its row and its first READ_CAP steps, read in one
    snapshot with the server's clock. JobNotFoundError when there is no such run."""
    max_rows = check_max_rows(max_rows)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        run = await conn.fetchrow(queries["workflow_timeline_run"], run_id)
        if run is None:
            raise JobNotFoundError(
                f"no workflow run with id {run_id}: q.workflows() lists the runs there are"
            )
        steps = await conn.fetch(queries["workflow_timeline_steps"], run_id, READ_CAP + 1)
    return build(run, steps[:READ_CAP], run["now"], max_rows=max_rows, capped=len(steps) > READ_CAP)
