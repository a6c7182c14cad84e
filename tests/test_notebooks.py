"""Every notebook runs top to bottom in a real kernel (nbclient), against the test server, and
shows what its text says it shows.

The kernel gets PGQ_NB_DSN and PGQ_NB_SCHEMA, so the notebooks' own ``pgq_nb.connect()`` (no
arguments: the embedded server for a new user) reaches the test server, in a schema reset
before each notebook. Cells whose output is checked carry a ``check-...`` tag.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from pgq_nb import db, runtime, schema_install
from tests.conftest import REPO

NOTEBOOKS = REPO / "notebooks"
SAMPLE = REPO / "sample_data"
NB_SCHEMA = "pgq_nb_nb_test"
NAMES = ("01_quickstart", "02_scheduled_reports", "03_workflows", "04_monitoring")
#: "about a minute or less" each, kernel start included
BUDGET_S = 60.0
WIDGET = "application/vnd.jupyter.widget-view+json"


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
        parts = []
        for out in self.outputs(tag):
            if out.output_type == "stream" and out.name == "stdout":
                parts.append(out.text)
            elif out.output_type in ("execute_result", "display_data"):
                parts.append(out.data.get("text/plain", ""))
        return "\n".join(parts)

    def result(self, tag: str) -> str:
        """The text/plain of the tagged cell's value (its last expression)."""
        found = [o for o in self.outputs(tag) if o.output_type == "execute_result"]
        assert found, f"{self.name}: the cell tagged {tag!r} shows no value"
        text: str = found[-1].data["text/plain"]
        return text


def _reset_schema(dsn: str) -> None:
    async def reset() -> None:
        pool = await db.get_pool(dsn)
        await schema_install.uninstall(pool, NB_SCHEMA)
        await schema_install.install(pool, NB_SCHEMA)

    runtime.run_sync(reset())


def execute(name: str, dsn: str) -> Executed:
    _reset_schema(dsn)
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)  # type: ignore[no-untyped-call]
    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},  # cwd notebooks/, as in Jupyter
    )
    env = dict(os.environ, PGQ_NB_DSN=dsn, PGQ_NB_SCHEMA=NB_SCHEMA)
    env.pop("PGQ_NB_HOME", None)
    start = time.perf_counter()
    client.execute(env=env)  # raises CellExecutionError, with the cell, if any cell raised
    return Executed(name, nb, time.perf_counter() - start)


@pytest.fixture(scope="module")
def run_notebook(installed: str) -> Iterator[Callable[[str], Executed]]:
    """Runs a notebook (once per module) and reports every run's time at the end."""
    done: dict[str, Executed] = {}

    def run(name: str) -> Executed:
        if name not in done:
            done[name] = execute(name, installed)
        return done[name]

    yield run
    for ran in done.values():
        print(f"\n{ran.name}: {ran.seconds:.1f} s")


@pytest.fixture(scope="module")
def orders() -> pd.DataFrame:
    return pd.read_csv(SAMPLE / "orders.csv", parse_dates=["ordered_at"])


@pytest.fixture(scope="module")
def fx() -> pd.DataFrame:
    return pd.read_csv(SAMPLE / "fx_rates.csv")


def test_every_notebook_is_tested_and_stored_without_outputs() -> None:
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(NAMES)
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)  # type: ignore[no-untyped-call]
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code
        assert all(c.outputs == [] and c.execution_count is None for c in code), name
        assert "pgq_nb.connect()" in "".join(c.source for c in code), name
        assert nb.cells[0].cell_type == "markdown"


def test_01_quickstart_joins_results_to_the_input(
    run_notebook: Callable[[str], Executed], orders: pd.DataFrame
) -> None:
    ran = run_notebook("01_quickstart")
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
    run_notebook: Callable[[str], Executed], orders: pd.DataFrame
) -> None:
    ran = run_notebook("02_scheduled_reports")
    schedules = ran.result("check-schedules")
    assert "hourly_report" in schedules
    assert "0 * * * *" in schedules
    first_day = int((orders["ordered_at"] < pd.Timestamp("2026-10-02", tz="UTC")).sum())
    report = ran.text("check-report")
    match = re.search(r"(\d+) orders converted, ([\d,.]+) EUR paid", report)
    assert match is not None, report
    assert int(match[1]) == first_day
    assert all(region in report for region in orders["region"].unique())
    history = ran.result("check-history")
    assert "succeeded" in history
    assert "hourly_report" in history
    assert ran.seconds < BUDGET_S


def test_03_workflow_fails_then_succeeds_after_retry(
    run_notebook: Callable[[str], Executed], orders: pd.DataFrame, fx: pd.DataFrame
) -> None:
    ran = run_notebook("03_workflows")
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


def test_04_monitoring_retries_fails_and_requeues(
    run_notebook: Callable[[str], Executed], orders: pd.DataFrame
) -> None:
    ran = run_notebook("04_monitoring")
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
