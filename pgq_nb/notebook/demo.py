"""``pgq-nb demo``: the whole story on the sample data, in its own schema, in a few seconds.

1. enqueue the 5,000 sample orders with ``q.enqueue_df`` (one job per row);
2. convert each to EUR with a deliberately flaky handler: every 10th order fails its first
   attempt (a simulated FX-service timeout) and is retried by its RetryPolicy; orders in CHF,
   which has no exchange rate, fail for good (``GiveUp``) and stay inspectable;
3. a workflow aggregates the converted orders: one step per region (fan-out), then a report
   step over all of them (fan-in);
4. the ``hourly_report`` schedule (``"0 * * * *"``) is fired once with ``q.run_schedule_now``.

Then it prints a summary and where to look next. It resets its schema first (uninstall, then
install), so it can run any number of times; it never touches another schema, and it refuses
to reset a schema that holds jobs of anything but the demo.

The data comes from ``sample_data/*.csv`` in a source checkout, or is made in memory from the
same seed (:mod:`pgq_nb.notebook.demo_data`) when pgq_nb was installed from a wheel. This
module needs pandas; nothing in the core imports it (``pgq-nb demo`` loads it on use).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import io
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

import pgq_nb
from pgq_nb import db
from pgq_nb.cli_admin import text_table
from pgq_nb.errors import ConfigurationError
from pgq_nb.notebook import demo_data
from pgq_nb.worker_notices import WorkerWarning

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "sample_data"
DEFAULT_SCHEMA = "pgq_nb_demo"
#: Every entrypoint the demo registers; a schema holding others is not the demo's to reset.
ENTRYPOINTS = ("convert_order", "region_totals", "region_report", "hourly_report")
#: Every FLAKY_EVERY-th order fails its first attempt.
FLAKY_EVERY = 10
RETRY = pgq_nb.RetryPolicy(max_attempts=3, base_delay=0.2, max_delay=2.0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DemoSummary:
    """What a demo run did. ``ok`` is True when every part ended as the story says."""

    schema: str
    data_source: str
    orders: int
    succeeded: int
    failed: int
    retried: int  # orders that succeeded only after a retry
    failed_currencies: dict[str, int]
    regions: list[dict[str, Any]]  # one per region, highest paid revenue first
    paid_eur: float
    workflow_id: int
    workflow_status: str
    report: dict[str, Any]
    report_status: str
    timings: dict[str, float]  # seconds, per part, and "total"

    @property
    def ok(self) -> bool:
        return (
            self.succeeded + self.failed == self.orders
            and self.workflow_status == "succeeded"
            and self.report_status == "succeeded"
        )


# -- data ----------------------------------------------------------------------------------


def load_sample_data(folder: Path | None = SAMPLE_DIR) -> tuple[dict[str, pd.DataFrame], str]:
    """The sample tables as DataFrames, and where they came from: the CSV files in
    ``folder`` if all are there, else the same tables made in memory from the seed."""
    tables = demo_data.generate()
    names = [t.filename for t in tables.values()]
    # make_sample_data.py marks the project's folder (not some other package's sample_data/)
    marker = ["make_sample_data.py"] if folder == SAMPLE_DIR else []
    on_disk = folder is not None and all((folder / n).is_file() for n in [*names, *marker])
    frames: dict[str, pd.DataFrame] = {}
    for name, table in tables.items():
        source: Any = folder / table.filename if on_disk and folder else io.StringIO(table.to_csv())
        dates = ["ordered_at"] if name == "orders" else None
        frames[name] = pd.read_csv(source, parse_dates=dates)
    where = str(folder) if on_disk and folder else "generated in memory (same seed)"
    return frames, where


# -- handlers ------------------------------------------------------------------------------


def register(q: pgq_nb.Queue, fx_rates: pd.DataFrame) -> None:
    """The demo's handlers, on ``q``."""
    columns = [fx_rates[c].tolist() for c in ("date", "currency", "eur_per_unit")]
    rates = {(str(d), str(c)): float(r) for d, c, r in zip(*columns, strict=True)}

    @q.entrypoint("convert_order", retry=RETRY)
    def convert_order(job: pgq_nb.Job) -> dict[str, Any]:
        order = job.data
        if order["order_id"] % FLAKY_EVERY == 0 and job.attempts == 1:
            raise TimeoutError("FX service timed out (simulated; the retry will succeed)")
        day, currency = order["ordered_at"][:10], order["currency"]
        rate = rates.get((day, currency))
        if rate is None:  # retrying cannot help: fail at once, keep it for inspection
            raise pgq_nb.GiveUp(f"no EUR rate for {currency} on {day}")
        return {"amount_eur": round(order["amount"] * rate, 2)}

    @q.entrypoint("region_totals")
    def region_totals(job: pgq_nb.Job) -> dict[str, Any]:
        region, orders = job.data["region"], job.data["orders"]
        paid = [o["amount_eur"] for o in orders if o["status"] == "paid"]
        refunded = [o["amount_eur"] for o in orders if o["status"] == "refunded"]
        return {
            "region": region,
            "orders": len(orders),
            "paid_eur": round(sum(paid), 2),
            "refunded_eur": round(sum(refunded), 2),
            "avg_paid_eur": round(sum(paid) / len(paid), 2) if paid else 0.0,
        }

    @q.entrypoint("region_report")
    def region_report(job: pgq_nb.Job) -> dict[str, Any]:
        parts: list[dict[str, Any]] = job.parent_results()["region_totals"]
        total = round(sum(p["paid_eur"] for p in parts), 2)
        ranked = sorted(parts, key=lambda p: p["paid_eur"], reverse=True)
        for p in ranked:
            p["share"] = round(p["paid_eur"] / total, 4) if total else 0.0
        return {"paid_eur": total, "regions": ranked}

    @q.schedule("hourly_report", "0 * * * *")
    async def hourly_report(schedule: pgq_nb.Schedule) -> dict[str, Any]:
        start, end = schedule.fire_time - dt.timedelta(hours=1), schedule.fire_time
        # count with the aggregate; list every job of the hour (limit=None), never a capped list
        counts = await q.aio.stats(since=start, until=end)
        counted = counts.to_dict("index").get("convert_order", {})
        ok = await q.aio.history(
            since=start, until=end, entrypoint="convert_order", status="succeeded", limit=None
        )
        converted = await q.aio.results("convert_order", ids=ok["job_id"].tolist())
        revenue = converted.loc[converted["status"] == "paid", "amount_eur"].sum()
        return {
            "from": start.isoformat(timespec="seconds"),
            "to": end.isoformat(timespec="seconds"),
            "orders_converted": int(counted.get("succeeded", 0)),
            "orders_failed": int(counted.get("failed", 0)),
            "paid_eur": round(float(revenue), 2),
        }


# -- the story -----------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Keep the worker's per-job warnings (one per retry) out of the demo's output, and the
    line run_until_idle says of failed jobs (the demo's summary counts them)."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", WorkerWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def reset_schema(q: pgq_nb.Queue) -> None:
    """Uninstall and reinstall ``q``'s schema, if it holds nothing but the demo's jobs."""
    others = sorted({e for e, _, _ in q.counts()} - set(ENTRYPOINTS))
    if others:
        raise ConfigurationError(
            f"schema {q.schema!r} holds jobs of {others[:5]}, which are not the demo's; the "
            f"demo drops and recreates its schema, so give it one of its own "
            f"(pgq-nb --schema {DEFAULT_SCHEMA} demo)"
        )
    q.uninstall()
    q.install()


def _region_payloads(converted: pd.DataFrame) -> list[dict[str, Any]]:
    payloads = []
    for region, rows in converted.groupby("region", sort=True):
        orders = rows[["order_id", "amount_eur", "status"]].to_dict(orient="records")
        payloads.append({"region": str(region), "orders": orders})
    return payloads


def run_demo(
    dsn: str | None = None,
    *,
    schema: str = DEFAULT_SCHEMA,
    out: Callable[[str], object] = print,
) -> DemoSummary:
    """Run the demo against ``dsn`` (default: PGQ_NB_DSN, else the embedded server) in
    ``schema``, which it resets first; print the summary through ``out``; return it."""
    timings: dict[str, float] = {}
    began = time.perf_counter()

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 3)
        return now

    frames, source = load_sample_data()
    orders, fx = frames["orders"], frames["fx_rates"]
    out(f"pgq_nb demo: {len(orders):,} orders from {source}")
    q = pgq_nb.connect(dsn, schema=schema)
    reset_schema(q)
    register(q, fx)
    out(f"Postgres: {db.describe_dsn(q.aio.dsn)}; schema {schema!r}, reset")
    t = lap("connect and reset schema", began)

    with _quiet("pgq_nb.worker", "pgq_nb.schedule.runner"):
        ids = q.enqueue_df("convert_order", orders, progress=False)
        t = lap("enqueue_df", t)
        q.run_until_idle(entrypoints=["convert_order"])
        t = lap("convert to EUR", t)

        history = q.history(entrypoint="convert_order", limit=len(orders) + 10)
        results = q.results("convert_order", ids=ids.tolist())
        converted = results[["job_id", "amount_eur"]].merge(orders.assign(job_id=ids), on="job_id")
        wf = q.workflow("region_report")
        parts = wf.map("region_totals", _region_payloads(converted))
        wf.step("region_report", depends_on=parts)
        run = wf.submit()
        q.run_until_idle(entrypoints=["region_totals", "region_report"])
        workflow_status = run.wait(timeout=30, progress=False)
        report = run.results().get("region_report") or {"paid_eur": 0.0, "regions": []}
        t = lap("workflow", t)

        tick = q.run_schedule_now("hourly_report")
        q.run_until_idle(entrypoints=["hourly_report"])
        tick_job = q.get_job(tick)
        t = lap("scheduled report", t)
    timings["total"] = round(t - began, 3)

    failed = history[history["status"] == "failed"]
    failed_orders = orders.assign(job_id=ids)
    failed_orders = failed_orders[failed_orders["job_id"].isin(failed["job_id"])]
    ok = history[history["status"] == "succeeded"]
    summary = DemoSummary(
        schema=schema,
        data_source=source,
        orders=len(orders),
        succeeded=len(ok),
        failed=len(failed),
        retried=int((ok["attempts"] > 1).sum()),
        failed_currencies={
            str(k): int(v) for k, v in failed_orders["currency"].value_counts().items()
        },
        regions=list(report["regions"]),
        paid_eur=float(report["paid_eur"]),
        workflow_id=run.id,
        workflow_status=workflow_status,
        report=dict(tick_job.result or {}),
        report_status=tick_job.status.value,
        timings=timings,
    )
    for line in format_summary(summary, dsn_given=dsn is not None):
        out(line)
    return summary


# -- output --------------------------------------------------------------------------------


def format_summary(s: DemoSummary, *, dsn_given: bool = False) -> list[str]:
    """The summary as lines of text."""
    tm = s.timings
    failed_by = ", ".join(f"{n} in {c}" for c, n in sorted(s.failed_currencies.items()))
    steps = [
        ["1", "enqueue_df: one job per order", f"{s.orders:,} jobs", f"{tm['enqueue_df']:.2f} s"],
        [
            "2",
            "convert_order (flaky, RetryPolicy)",
            f"{s.succeeded:,} succeeded, {s.retried:,} of them after a retry, {s.failed} failed",
            f"{tm['convert to EUR']:.2f} s",
        ],
        [
            "3",
            f"workflow region_report (run {s.workflow_id})",
            f"{len(s.regions)} region steps -> 1 report: {s.workflow_status}",
            f"{tm['workflow']:.2f} s",
        ],
        [
            "4",
            "schedule hourly_report, run now",
            f"{s.report_status}: {s.report.get('orders_converted', 0):,} orders in its hour",
            f"{tm['scheduled report']:.2f} s",
        ],
    ]
    regions = [
        [
            str(r["region"]),
            f"{r['orders']:,}",
            f"{r['paid_eur']:,.2f}",
            f"{r['refunded_eur']:,.2f}",
            f"{r['share']:.1%}",
        ]
        for r in s.regions
    ]
    regions.append(["total", f"{sum(r['orders'] for r in s.regions):,}", f"{s.paid_eur:,.2f}"])
    regions[-1] += ["", ""]
    flag = f"--schema {s.schema}" + (" --dsn ..." if dsn_given else "")
    verdict = "done" if s.ok else "FINISHED WITH SURPRISES (see above)"
    return [
        "",
        *text_table(["step", "what", "outcome", "time"], steps, {3}).splitlines(),
        "",
        f"Failed for good: {failed_by or 'none'} (no exchange rate: GiveUp, not retried)",
        "",
        "Revenue by region (converted orders, EUR)",
        *text_table(
            ["region", "orders", "paid", "refunded", "share"], regions, {1, 2, 3, 4}
        ).splitlines(),
        "",
        f"{verdict} in {tm['total']:.1f} s (schema {s.schema})",
        "",
        "Where to look next:",
        "  notebooks/01_quickstart.ipynb .. 04_monitoring.ipynb   the same ideas, step by step",
        f"  pgq-nb {flag} status       jobs per entrypoint and status",
        f"  pgq-nb {flag} failed       the {s.failed} failed orders, with their errors",
        f"  pgq-nb {flag} schedules    the hourly_report schedule",
        f'  in a notebook:  q = pgq_nb.connect(schema="{s.schema}"); q.dashboard()',
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pgq_nb.notebook.demo [--dsn DSN] [--schema SCHEMA]``; exit code 0 when all went
    as the story says."""
    parser = argparse.ArgumentParser(
        prog="python -m pgq_nb.notebook.demo", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--dsn", help="Postgres DSN (default: PGQ_NB_DSN, else embedded)")
    parser.add_argument("--schema", default=DEFAULT_SCHEMA, help="its own schema (reset!)")
    args = parser.parse_args(argv)
    summary = run_demo(args.dsn, schema=args.schema)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
