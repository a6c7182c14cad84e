"""Every notebook runs top to bottom in a real kernel (nbclient), against the test server, and
shows what its text says it shows, the same on every run, as it is stored.

The kernel gets PGQ_NB_DSN, so each notebook's ``pgq_nb.connect(schema=...)`` reaches the test
server, in the schema the notebook names for itself and resets. PGQ_NB_SCHEMA names a sentinel
schema the notebooks must leave alone (a user's own queue). All six run in order, then all
six again, with nothing reset in between: the second runs must show the numbers of the first
(a notebook that counted an earlier run's jobs would not). The content checks read the first
runs. Cells whose output is checked carry a ``check-...`` tag; cells tagged ``varies`` show
clock times, durations or rates, and only the kinds of their outputs are compared.

The notebooks are stored with the outputs of a run; ``python -m tests.store_notebook_outputs``
refreshes them (README, "The notebooks").
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import tempfile
from collections.abc import Iterator
from typing import Any

import nbformat
import pandas as pd
import pytest

import pgq_nb
from tests import notebook_runs
from tests.conftest import REPO
from tests.notebook_runs import NAMES, SCHEMAS, WIDGET_STATE

SAMPLE = REPO / "sample_data"
SENTINEL_SCHEMA = "pgq_nb_nb_sentinel"
#: "about a minute or less" each, kernel start included
BUDGET_S = 60.0
WIDGET = "application/vnd.jupyter.widget-view+json"

#: twelve notebook runs (a few seconds each when the machine is idle) in one fixture
pytestmark = pytest.mark.timeout(900)


@dataclasses.dataclass
class Executed:
    """A notebook after a run: its cells with outputs, and how long the run took."""

    name: str
    nb: Any
    seconds: float

    def outputs(self, tag: str) -> list[Any]:
        cells = [c for c in self.nb.cells if tag in c.get("metadata", {}).get("tags", [])]
        assert len(cells) == 1, f"{self.name}: expected one cell tagged {tag!r}"
        return list(cells[0].outputs)

    def text(self, tag: str) -> str:
        """The tagged cell's printed text and the text/plain of what it displayed."""
        (cell,) = [c for c in self.nb.cells if tag in c.get("metadata", {}).get("tags", [])]
        return notebook_runs.shown_text(cell)

    def result(self, tag: str) -> str:
        """The text/plain of the tagged cell's value (its last expression)."""
        found = [o for o in self.outputs(tag) if o.output_type == "execute_result"]
        assert found, f"{self.name}: the cell tagged {tag!r} shows no value"
        text: str = found[-1].data["text/plain"]
        return text


@dataclasses.dataclass
class Runs:
    """Each notebook's two runs, and the sentinel schema's job counts after them."""

    first: dict[str, Executed]
    second: dict[str, Executed]
    sentinel_counts: list[tuple[str, str, int]]


@pytest.fixture(scope="module")
def runs(installed: str) -> Iterator[Runs]:
    """01 to 06, then 01 to 06 again, each in a fresh kernel, nothing reset in between."""
    sentinel = pgq_nb.connect(installed, schema=SENTINEL_SCHEMA)
    sentinel.uninstall()
    sentinel.install()
    sentinel.entrypoint("to_eur")(lambda job: None)
    sentinel.enqueue("to_eur", {"mine": True})
    env = {"PGQ_NB_SCHEMA": SENTINEL_SCHEMA}
    done: list[dict[str, Executed]] = [{}, {}]
    for ran in done:
        for name in NAMES:
            nb, seconds = notebook_runs.execute(name, installed, env)
            ran[name] = Executed(name, nb, seconds)
    yield Runs(done[0], done[1], sorted(sentinel.counts()))
    for executed in [*done[0].values(), *done[1].values()]:
        print(f"\n{executed.name}: {executed.seconds:.1f} s")


@pytest.fixture(scope="module")
def orders() -> pd.DataFrame:
    return pd.read_csv(SAMPLE / "orders.csv", parse_dates=["ordered_at"])


@pytest.fixture(scope="module")
def fx() -> pd.DataFrame:
    return pd.read_csv(SAMPLE / "fx_rates.csv")


def test_every_notebook_is_tested_and_keeps_to_a_schema_of_its_own() -> None:
    assert sorted(p.stem for p in notebook_runs.NOTEBOOKS.glob("*.ipynb")) == sorted(NAMES)
    assert len(set(SCHEMAS.values())) == len(NAMES)
    for name in NAMES:
        nb = notebook_runs.read(name)
        nbformat.validate(nb)
        assert nb.cells[0].cell_type == "markdown"
        code = notebook_runs.code_cells(nb)
        assert code
        # connect() with its own schema, so PGQ_NB_SCHEMA (a user's own queue) cannot be the
        # schema it resets; the reset comes right after, before anything else uses the queue
        first = code[0].source
        connect = f'q = pgq_nb.connect(schema="{SCHEMAS[name]}")'
        assert first.count("pgq_nb.connect(") == 1, name
        assert connect in first, name
        reset = first[first.index(connect) :].splitlines()
        assert [line.split("#")[0].strip() for line in reset[1:3]] == [
            "q.uninstall()",
            "q.install()",
        ], name
        assert "pgq_nb.connect(" not in "".join(c.source for c in code[1:]), name


def test_the_notebooks_leave_the_configured_schema_alone(runs: Runs) -> None:
    """PGQ_NB_SCHEMA named the sentinel (think: the user's own queue) in every run; its one
    job is still there, and nothing was added to it."""
    assert runs.sentinel_counts == [("to_eur", "queued", 1)]


def test_every_notebook_shows_the_same_numbers_on_every_run(runs: Runs) -> None:
    with_numbers = 0
    for name in NAMES:
        first, second = runs.first[name].nb, runs.second[name].nb
        assert notebook_runs.shape(second) == notebook_runs.shape(first), name
        compared = notebook_runs.numbers(first)
        assert notebook_runs.numbers(second) == compared, name
        assert any(compared.values()), name
        with_numbers += sum(1 for found in compared.values() if found)
    assert with_numbers >= 15  # most cells are compared, not waved through as "varies"


def test_the_notebooks_are_stored_with_the_outputs_of_a_run(runs: Runs) -> None:
    stale = "stored outputs differ from a fresh run: python -m tests.store_notebook_outputs"
    for name in NAMES:
        stored = notebook_runs.read(name)
        fresh = runs.first[name].nb
        code = notebook_runs.code_cells(stored)
        # one clean run, top to bottom: every code cell ran once, in order, without an error
        assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), name
        assert not [o for c in code for o in c.outputs if o.output_type == "error"], name
        assert notebook_runs.shape(stored) == notebook_runs.shape(fresh), f"{name}: {stale}"
        assert notebook_runs.numbers(stored) == notebook_runs.numbers(fresh), f"{name}: {stale}"
        # nothing volatile besides the outputs
        assert all("execution" not in c.metadata for c in stored.cells), name
        assert stored.metadata["language_info"] == {"name": "python"}, name
        assert notebook_runs.path(name).read_text(encoding="utf-8") == notebook_runs.storable(
            stored
        ), f"{name} was not written by tests.store_notebook_outputs"
        # the throw-away server's address is shown as a user's default home, not a temp dir
        text = notebook_runs.path(name).read_text(encoding="utf-8")
        assert tempfile.gettempdir() not in text, f"{name} names a temporary directory"


def test_stored_widgets_are_numbered_and_complete(runs: Runs) -> None:
    """Widget model ids (random per run) are renumbered in order, so refreshing the outputs
    changes only what changed; layouts leave out their unset attributes (most of the state);
    every widget an output or another widget refers to has its state stored (it renders on
    nbviewer and in JupyterLab without a kernel)."""
    ran = runs.first["04_monitoring"]
    copy = nbformat.from_dict(json.loads(json.dumps(ran.nb)))  # type: ignore[no-untyped-call]
    text = notebook_runs.storable(copy)
    nb = nbformat.reads(text, as_version=4)  # type: ignore[no-untyped-call]
    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    assert list(state) == [f"{n:032x}" for n in range(1, len(state) + 1)]
    shown = [
        out.data[WIDGET]["model_id"]
        for cell in notebook_runs.code_cells(nb)
        for out in cell.outputs
        if WIDGET in out.get("data", {})
    ]
    assert shown
    referred = set(re.findall(r"IPY_MODEL_([0-9a-f]{32})", json.dumps(state)))
    assert set(shown) | referred <= set(state)
    layouts = [m["state"] for m in state.values() if m["model_name"] == "LayoutModel"]
    assert layouts
    assert all(None not in layout.values() for layout in layouts)  # unset: left out
    assert notebook_runs.shape(nb) == notebook_runs.shape(ran.nb)
    assert notebook_runs.numbers(nb) == notebook_runs.numbers(ran.nb)


def test_01_quickstart_joins_results_to_the_input(runs: Runs, orders: pd.DataFrame) -> None:
    ran = runs.first["01_quickstart"]
    info = ran.text("check-results")  # joined.info()
    assert f"RangeIndex: {len(orders)} entries" in info
    columns = {
        m["name"]: (int(m["count"]), m["dtype"])
        for m in re.finditer(
            r"^\s*\d+\s+(?P<name>\S+)\s+(?P<count>\d+) non-null\s+(?P<dtype>\S+)", info, re.M
        )
    }
    assert list(columns) == [*orders.columns, "job_id", "amount_eur", "rate"]
    no_rate = int((orders["currency"] == "CHF").sum())
    assert columns["job_id"] == (len(orders), "Int64")
    assert columns["amount_eur"] == (len(orders) - no_rate, "float64")
    assert ran.seconds < BUDGET_S


def test_02_scheduled_report_runs_now_and_has_history(
    runs: Runs, orders: pd.DataFrame, fx: pd.DataFrame
) -> None:
    ran = runs.first["02_scheduled_reports"]
    schedules = ran.result("check-schedules")
    assert "hourly_report" in schedules
    assert "0 * * * *" in schedules
    first_day = orders[orders["ordered_at"] < pd.Timestamp("2026-10-02", tz="UTC")]
    day = first_day["ordered_at"].dt.strftime("%Y-%m-%d")
    rates = {(r.date, r.currency): r.eur_per_unit for r in fx.itertuples()}
    eur = pd.Series(
        [rates.get((d, c)) for d, c in zip(day, first_day["currency"], strict=True)],
        index=first_day.index,
        dtype="float64",
    )
    eur = (first_day["amount"] * eur).round(2)[first_day["status"] == "paid"]
    by_region = eur.groupby(first_day["region"]).sum()
    report = ran.text("check-report")
    match = re.search(r"^(\d+) orders converted, ([\d,.]+) EUR paid$", report, re.M)
    assert match is not None, report
    assert int(match[1]) == len(first_day)  # counted by SQL, every one of them
    assert float(match[2].replace(",", "")) == pytest.approx(float(eur.sum()), abs=0.01)
    for region, total in by_region.items():
        assert re.search(rf"^{re.escape(str(region))} +{total:.2f}$", report, re.M), report
    history = ran.result("check-history")
    assert "succeeded" in history
    assert "hourly_report" in history
    # a run in the minute before the top of the hour also waits for the real tick and runs it
    # (run_until_idle returns once nothing is due within a minute): up to a minute more
    assert ran.seconds < BUDGET_S + 60


def test_03_workflow_fails_then_succeeds_after_retry(
    runs: Runs, orders: pd.DataFrame, fx: pd.DataFrame
) -> None:
    ran = runs.first["03_workflows"]
    assert ran.result("check-first-state") == "'failed'"
    failed_steps = ran.result("check-failed-steps")
    assert "GiveUp: no EUR rate for CHF" in failed_steps
    assert failed_steps.count("upstream_failed") == 2  # aggregate and report
    assert ran.result("check-status") == "'succeeded'"

    report = ast.literal_eval(ran.result("check-report"))
    day = "2026-10-02"
    todays_fx = fx[fx["date"] == day]
    rates = dict(zip(todays_fx["currency"], todays_fx["eur_per_unit"], strict=True))
    rates["CHF"] = 1.07  # the notebook's fix
    todays = orders[orders["ordered_at"].dt.strftime("%Y-%m-%d") == day]
    paid = todays[todays["status"] == "paid"]
    eur = [round(a * rates[c], 2) for a, c in zip(paid["amount"], paid["currency"], strict=True)]
    by_region = pd.Series(eur, index=paid["region"].to_numpy()).groupby(level=0).sum().round(2)
    assert report["day"] == day
    assert report["paid_eur"] == pytest.approx(round(float(by_region.sum()), 2), abs=0.02)
    assert report["best_region"] == by_region.idxmax()
    assert ran.seconds < BUDGET_S


def _counts_by_status_and_attempts(text: str) -> dict[tuple[str, int], int]:
    """Parse a printed ``groupby(["status", "attempts"]).size()`` Series."""
    counts: dict[tuple[str, int], int] = {}
    status = ""
    for line in text.splitlines():
        tokens = line.split()
        if len(tokens) < 2 or not (tokens[-1].isdigit() and tokens[-2].isdigit()):
            continue
        if len(tokens) == 3:
            status = tokens[0]
        counts[status, int(tokens[-2])] = int(tokens[-1])
    return counts


def test_04_monitoring_retries_fails_and_requeues(runs: Runs, orders: pd.DataFrame) -> None:
    ran = runs.first["04_monitoring"]
    assert any(WIDGET in out.get("data", {}) for out in ran.outputs("check-dashboard"))

    batch = orders.head(500)
    chf = int((batch["currency"] == "CHF").sum())
    flaky = int(((batch["order_id"] % 10 == 0) & (batch["currency"] != "CHF")).sum())
    assert chf > 0
    assert flaky > 0
    attempts = _counts_by_status_and_attempts(ran.result("check-attempts"))
    assert attempts == {
        ("succeeded", 1): len(batch) - chf - flaky,
        ("succeeded", 2): flaky,
        ("failed", 1): chf,
    }
    assert ran.result("check-failed").count("KeyError: (") == chf
    assert ran.result("check-requeue") == str(chf)
    after = ran.text("check-after-requeue")
    assert f"{chf} of {chf} requeued jobs succeeded" in after
    assert "0 enrich_order jobs still failed" in after
    assert ran.seconds < BUDGET_S


def test_05_schedules_a_notebook_per_region_backfills_and_reads_back(
    runs: Runs, orders: pd.DataFrame
) -> None:
    """A notebook report scheduled per region (q.add_schedule(..., notebook=...)), backfilled
    over a morning, run in kernels of its own, its recorded numbers read back as a DataFrame
    that matches the sample data (#18, item 5)."""
    ran = runs.first["05_schedule_a_report"]
    schedules = ran.result("check-schedules")
    assert "orders_europe" in schedules and "orders_north_america" in schedules
    assert schedules.count("pgq_nb.notebook") == 2
    backfill = ran.text("check-backfill")
    assert backfill.count("4 runs queued, ticks 09:00, 10:00, 11:00, 12:00") == 2
    shown = ran.text("check-runs")
    assert "8 of 8 runs succeeded" in shown
    for hour in range(9, 13):
        tick = pd.Timestamp(f"2026-10-01 {hour:02d}:00", tz="UTC")
        counts = [
            int(
                (
                    (orders["region"] == region)
                    & (orders["ordered_at"] >= tick - pd.Timedelta(hours=1))
                    & (orders["ordered_at"] < tick)
                ).sum()
            )
            for region in ("Europe", "North America")
        ]
        row = rf"^{re.escape(str(tick))} +{counts[0]} +{counts[1]}$"
        assert re.search(row, shown, re.M), (row, shown)
    assert "status  orders" in ran.result("check-by-status")  # a recorded DataFrame
    assert ran.text("check-output").startswith("succeeded 5 of 5 cells;")
    assert ran.seconds < BUDGET_S


def test_06_grows_at_run_time_caches_snoozes_and_keys(runs: Runs, orders: pd.DataFrame) -> None:
    """map_over over the days a step finds, the re-run served from the cache, a snoozing job
    and per-key limits, shown with numbers that match the sample data (#21)."""
    ran = runs.first["06_dynamic_pipelines"]
    days = orders["ordered_at"].dt.strftime("%Y-%m-%d")
    october = sorted(d for d in days.unique() if d.startswith("2026-10"))
    paid = orders[orders["status"] == "paid"].assign(day=days).groupby("day").size()
    month = ast.literal_eval(ran.result("check-month"))
    assert month == {
        "days": len(october),
        "orders": int(days.str.startswith("2026-10").sum()),
        "best_day": paid[october].idxmax(),
    }
    steps = ran.result("check-steps")
    assert re.search(rf"^day_summary +{len(october)}$", steps, re.M), steps
    assert re.search(r"^find_days +1$", steps, re.M)
    assert re.search(r"^month_summary +1$", steps, re.M)
    assert ast.literal_eval(ran.result("check-cache")) == {
        "day_summary steps": 2 * len(october),
        "handler calls": len(october),
        "from the cache": len(october),
    }
    snooze = ran.result("check-snooze")
    assert re.search(r"succeeded +1 +3$", snooze, re.M), snooze
    busiest = orders["customer_id"].value_counts().index[:5]
    jobs = int(orders["customer_id"].isin(busiest).sum())
    assert ast.literal_eval(ran.result("check-keys")) == {
        "jobs": jobs,
        "customers": 5,
        "overlaps": 0,
    }
    assert ran.seconds < BUDGET_S
