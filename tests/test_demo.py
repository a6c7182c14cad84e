"""``pgq-nb demo`` against the test server: its summary, its re-runs, its own schema only, and
the sample data it reads (files and in-memory fallback alike)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pandas as pd
import pytest

import pgq_nb
from pgq_nb.errors import ConfigurationError
from pgq_nb.notebook import demo, demo_data
from tests.conftest import REPO

DEMO_SCHEMA = "pgq_nb_demo_test"
SAMPLE = REPO / "sample_data"


def _expected(orders: pd.DataFrame, fx: pd.DataFrame) -> dict[str, object]:
    """What the demo must find, computed here with pandas alone."""
    rates = fx.rename(columns={"date": "day"})
    frame = orders.assign(day=orders["ordered_at"].dt.strftime("%Y-%m-%d")).merge(
        rates, on=["day", "currency"], how="left"
    )
    converted = frame[frame["eur_per_unit"].notna()]
    eur = [
        round(a * r, 2) for a, r in zip(converted["amount"], converted["eur_per_unit"], strict=True)
    ]
    paid = pd.Series(eur, index=converted.index)[converted["status"] == "paid"]
    by_region = paid.groupby(converted["region"]).sum().round(2)
    return {
        "failed": int(frame["eur_per_unit"].isna().sum()),
        "retried": int(((converted["order_id"] % demo.FLAKY_EVERY) == 0).sum()),
        "by_region": by_region.to_dict(),
        "orders_by_region": converted["region"].value_counts().to_dict(),
    }


def test_demo_summary(installed: str) -> None:
    lines: list[str] = []
    start = time.perf_counter()
    summary = demo.run_demo(installed, schema=DEMO_SCHEMA, out=lines.append)
    elapsed = time.perf_counter() - start

    frames, source = demo.load_sample_data()
    assert source == str(SAMPLE)
    expected = _expected(frames["orders"], frames["fx_rates"])
    assert summary.ok
    assert summary.schema == DEMO_SCHEMA
    assert summary.orders == len(frames["orders"]) == 5_000
    assert summary.failed == expected["failed"]
    assert summary.failed > 0
    assert summary.failed_currencies == {"CHF": summary.failed}
    assert summary.succeeded == summary.orders - summary.failed
    assert summary.retried == expected["retried"]
    assert summary.workflow_status == "succeeded"
    assert summary.report_status == "succeeded"
    assert summary.report["orders_converted"] == summary.succeeded
    assert summary.report["orders_failed"] == summary.failed

    regions = {r["region"]: r for r in summary.regions}
    assert set(regions) == set(demo_data.REGIONS)
    by_region = expected["by_region"]
    assert isinstance(by_region, dict)
    for name, region in regions.items():
        assert region["paid_eur"] == pytest.approx(by_region[name], abs=0.01)
        assert region["orders"] == expected["orders_by_region"][name]  # type: ignore[index]
    paid = [r["paid_eur"] for r in summary.regions]
    assert paid == sorted(paid, reverse=True)
    assert summary.paid_eur == pytest.approx(sum(by_region.values()), abs=0.05)
    assert sum(r["share"] for r in summary.regions) == pytest.approx(1.0, abs=0.001)

    text = "\n".join(lines)
    assert f"{summary.succeeded:,} succeeded" in text
    assert f"{summary.failed} failed" in text
    assert "Revenue by region" in text
    assert "Where to look next" in text
    assert f"pgq-nb --schema {DEMO_SCHEMA} --dsn ... failed" in text
    assert "q.dashboard()" in text
    assert set(summary.timings) >= {"enqueue_df", "convert to EUR", "workflow", "total"}
    assert elapsed < 30

    # the data stays for `pgq-nb status` / `pgq-nb failed` to show
    q = pgq_nb.connect(installed, schema=DEMO_SCHEMA)
    assert len(q.failed("convert_order")) == summary.failed


def test_demo_runs_twice_as_a_command(installed: str) -> None:
    env = dict(os.environ, PGQ_NB_DSN=installed)
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "pgq_nb.notebook.demo", "--schema", DEMO_SCHEMA],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "succeeded" in done.stdout
        assert "Where to look next" in done.stdout
    q = pgq_nb.connect(installed, schema=DEMO_SCHEMA)
    # reset at the start of each run: one run's jobs, not two
    assert sum(n for e, _, n in q.counts() if e == "convert_order") == 5_000


def test_demo_never_resets_a_schema_that_is_not_its_own(installed: str, q: pgq_nb.Queue) -> None:
    @q.entrypoint("someone_elses_job")
    def handler(job: pgq_nb.Job) -> None:
        return None

    job_id = q.enqueue("someone_elses_job", {"keep": "me"})
    with pytest.raises(ConfigurationError, match="not the demo's"):
        demo.run_demo(installed, schema=q.schema, out=lambda line: None)
    assert q.get_job(job_id).status == pgq_nb.JobStatus.QUEUED

    summary = demo.run_demo(installed, schema=DEMO_SCHEMA, out=lambda line: None)
    assert summary.ok
    assert q.get_job(job_id).status == pgq_nb.JobStatus.QUEUED  # another schema: untouched


def test_sample_data_files_match_the_seed_and_the_in_memory_fallback() -> None:
    assert demo_data.differences(SAMPLE) == []
    done = subprocess.run(
        [sys.executable, str(SAMPLE / "make_sample_data.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    from_files, source = demo.load_sample_data(SAMPLE)
    in_memory, generated = demo.load_sample_data(None)
    assert source == str(SAMPLE)
    assert generated.startswith("generated in memory")
    assert from_files.keys() == in_memory.keys() == {"customers", "orders", "fx_rates"}
    for name, frame in from_files.items():
        pd.testing.assert_frame_equal(frame, in_memory[name])


def test_sample_data_is_consistent() -> None:
    frames, _ = demo.load_sample_data(SAMPLE)
    orders, customers, fx = frames["orders"], frames["customers"], frames["fx_rates"]
    assert len(orders) == demo_data.N_ORDERS
    assert len(customers) == demo_data.N_CUSTOMERS
    assert orders["order_id"].is_unique
    assert orders["order_id"].is_monotonic_increasing
    assert orders["ordered_at"].is_monotonic_increasing
    assert str(orders["ordered_at"].dtype).endswith("UTC]")
    assert orders["ordered_at"].dt.strftime("%Y-%m").unique().tolist() == ["2026-10"]
    assert set(orders["status"]) == {"paid", "refunded", "cancelled"}
    assert (orders["amount"] > 0).all()
    merged = orders.merge(customers, on="customer_id", suffixes=("", "_customer"))
    assert len(merged) == len(orders)  # every order's customer exists
    assert (merged["region"] == merged["region_customer"]).all()
    assert set(fx["currency"]) == set(demo_data.BASE_RATES)  # every currency but CHF
    assert set(orders["currency"]) - set(fx["currency"]) == {"CHF"}
    assert fx.groupby("currency").size().eq(demo_data.DAYS).all()
