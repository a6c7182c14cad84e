"""The live dashboard without a browser: its widget values match the database, its buttons
act, it refreshes by itself on the pgq_nb loop thread until stopped, and a database error
shows in it without stopping it. Also q.plot_throughput()'s figure."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

import pgq_nb
from pgq_nb import runtime
from pgq_nb.errors import InvalidInputError
from pgq_nb.notebook.charts import plot_throughput
from pgq_nb.notebook.dashboard import Dashboard, dashboard
from tests.conftest import SCHEMA

QUEUED_TOTAL = re.compile(r'data-entrypoint="\*" data-status="queued">(?:<span[^>]*>)?(\d+)<')
COUNT_CELL = re.compile(
    r'data-entrypoint="([^"]+)" data-status="([^"]+)">(?:<span[^>]*>)?([\d,]+)<'
)


def make_jobs(q: pgq_nb.Queue) -> dict[str, list[int]]:
    """3 succeeded and 1 queued `add` jobs, 2 failed `explode` jobs, 1 failed `crash` job."""

    @q.entrypoint("add", retry=pgq_nb.RetryPolicy.none())
    def add(job: pgq_nb.Job) -> int:
        return int(job.data["a"]) + 1

    @q.entrypoint("explode", retry=pgq_nb.RetryPolicy.none())
    def explode(job: pgq_nb.Job) -> None:
        raise ValueError(f"boom {job.data['i']}")

    @q.entrypoint("crash", retry=pgq_nb.RetryPolicy.none())
    def crash(job: pgq_nb.Job) -> None:
        raise RuntimeError("disk full")

    ids = {
        "add": q.enqueue(["add"] * 3, [{"a": i} for i in range(3)]),
        "explode": q.enqueue(["explode"] * 2, [{"i": i} for i in range(2)]),
        "crash": [q.enqueue("crash", None)],
    }
    q.run_until_idle()
    ids["queued"] = [q.enqueue("add", {"a": 9}, execute_after=dt.timedelta(hours=1))]
    return ids


def fetch(q: pgq_nb.Queue, query: str, *args: Any) -> list[Any]:
    return runtime.run_sync(q.aio.pool.fetch(query.replace("{schema}", SCHEMA), *args))


def database_counts(q: pgq_nb.Queue) -> dict[tuple[str, str], int]:
    """The truth, counted the slow way (fine in a test, never in the dashboard)."""
    rows = fetch(
        q,
        "SELECT entrypoint, status, count(*) AS n FROM {schema}.jobs GROUP BY 1, 2 "
        "UNION ALL SELECT entrypoint, status, count(*) FROM {schema}.history GROUP BY 1, 2",
    )
    return {(r["entrypoint"], r["status"]): r["n"] for r in rows}


def shown_counts(dash: Dashboard) -> dict[tuple[str, str], int]:
    cells = COUNT_CELL.findall(dash.overview.counts.value)
    return {(ep, s): int(n.replace(",", "")) for ep, s, n in cells if ep != "*" and n != "0"}


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} s: {condition}")
        time.sleep(0.02)


@pytest.fixture
def dash(q: pgq_nb.Queue) -> Iterator[Dashboard]:
    """A dashboard that refreshes only when told (refresh_now), closed after the test."""
    board = dashboard(q, refresh=3600)
    yield board
    board.close()


def test_overview_and_failures_match_the_database(q: pgq_nb.Queue, dash: Dashboard) -> None:
    ids = make_jobs(q)
    dash.refresh_now()

    assert dash.last_error is None
    expected = database_counts(q)
    assert expected == {
        ("add", "succeeded"): 3,
        ("add", "queued"): 1,
        ("explode", "failed"): 2,
        ("crash", "failed"): 1,
    }
    assert shown_counts(dash) == expected
    assert 'data-entrypoint="*" data-status="failed">3<' in dash.overview.counts.value
    assert "1 queued · 0 running · 3 failed · 0 workers" in dash.header.value

    failed = fetch(
        q,
        "SELECT id, error FROM {schema}.history WHERE status = 'failed' "
        "ORDER BY finished DESC, id DESC",
    )
    assert [value for _, value in dash.failures.select.options] == [r["id"] for r in failed]
    assert sorted(r["id"] for r in failed) == sorted(ids["explode"] + ids["crash"])
    for (label, job_id), row in zip(dash.failures.select.options, failed, strict=True):
        assert f"#{job_id} " in label
        assert row["error"].splitlines()[-1] in label  # "ValueError: boom 1", ...
    assert dash.failures.entrypoint.options == (("crash (1 failed)", "crash"),
                                                ("explode (2 failed)", "explode"))  # fmt: skip
    assert 'data-failed-total="3"' in dash.failures.summary.value
    assert dash.tabs.titles == ("Overview", "Failures (3)", "Schedules", "Workflows")

    # the throughput chart counts what finished in the last minutes
    assert dash.snapshot is not None
    assert dash.snapshot.throughput.totals() == {"succeeded": 3, "failed": 3}
    assert "<svg" in dash.overview.chart.value and "3 succeeded, 3 failed" in (
        dash.overview.chart.value
    )

    # selecting a failure shows its whole error
    dash.failures.select.value = (ids["crash"][0],)
    assert "RuntimeError: disk full" in dash.failures.detail.value


def test_workers_show_with_their_heartbeat(q: pgq_nb.Queue, dash: Dashboard) -> None:
    dash.refresh_now()
    assert "no worker alive" in dash.overview.workers.value

    @q.entrypoint("add")
    def add(job: pgq_nb.Job) -> None:
        pass

    worker = q.start_worker(concurrency=2)
    try:
        wait_until(lambda: len(q.worker_list()) == 1)
        dash.refresh_now()
        (alive,) = q.worker_list()
        assert f'data-worker-heartbeat="{alive["id"]}">' in dash.overview.workers.value
        assert re.search(r"data-worker-heartbeat=\"\d+\">\d+ s ago<", dash.overview.workers.value)
        assert "1 worker ·" in dash.header.value
    finally:
        worker.stop()


def test_limits_and_pauses_show_with_their_waiting_jobs(q: pgq_nb.Queue, dash: Dashboard) -> None:
    dash.refresh_now()
    assert "no limits and nothing paused" in dash.overview.limits.value
    q.entrypoint("api", max_running=2, rate_limit="10/s")(lambda job: None)
    q.start_worker().stop()  # a worker records the limits
    q.pause("api")
    q.enqueue(["api"] * 4)
    dash.refresh_now()
    html = dash.overview.limits.value
    assert "<b>paused</b>" in html
    assert 'data-limit-waiting="api">4<' in html
    assert ">10/s<" in html
    assert ">2<" in html


def test_requeue_selected_and_requeue_all_of_one_entrypoint(
    q: pgq_nb.Queue, dash: Dashboard
) -> None:
    ids = make_jobs(q)
    dash.refresh_now()
    failures = dash.failures
    assert failures.requeue_selected.disabled  # nothing selected yet

    first, second = ids["explode"]
    failures.select.value = (first,)
    assert not failures.requeue_selected.disabled
    failures.requeue_selected.click()
    assert dash.last_action is not None
    assert dash.last_action.result(timeout=10) == "requeued 1 of 1 selected job"
    assert q.get_job(first).status == "queued"
    assert q.get_job(second).status == "failed"
    # the action refreshed the widget: the job left the list and counts as queued
    assert first not in [value for _, value in failures.select.options]
    assert shown_counts(dash)[("explode", "queued")] == 1
    assert "requeued 1 of 1 selected job" in dash.message_line.value

    failures.entrypoint.value = "explode"
    failures.requeue_all.click()
    assert dash.last_action.result(timeout=10) == "requeued 1 failed job of 'explode'"
    assert q.get_job(second).status == "queued"
    # only that entrypoint's failures were requeued
    assert [job.id for job in q.failed_jobs()] == ids["crash"]
    assert [value for _, value in failures.select.options] == ids["crash"]
    assert failures.entrypoint.options == (("crash (1 failed)", "crash"),)
    assert shown_counts(dash) == database_counts(q)


def test_refreshes_by_itself_on_the_loop_thread_until_stopped(q: pgq_nb.Queue) -> None:
    dash = dashboard(q, refresh=0.1)
    threads: set[str] = set()
    in_flight = [0]
    most_in_flight = [0]
    read = dash.reader.read

    async def watched_read() -> Any:
        threads.add(threading.current_thread().name)
        in_flight[0] += 1
        most_in_flight[0] = max(most_in_flight[0], in_flight[0])
        try:
            return await read()
        finally:
            in_flight[0] -= 1

    dash.reader.read = watched_read  # type: ignore[method-assign]
    try:
        wait_until(lambda: dash.refreshes >= 3)
        # a blocked "cell" (this thread) does not hold refreshes up
        before = dash.refreshes
        time.sleep(1.0)
        assert dash.refreshes >= before + 3

        # new jobs appear without anyone asking
        @q.entrypoint("add")
        def add(job: pgq_nb.Job) -> None:
            pass

        q.enqueue("add", {"a": 1})
        wait_until(lambda: shown_counts(dash) == {("add", "queued"): 1})

        # refresh_now from other threads meanwhile: still one refresh at a time
        callers = [threading.Thread(target=dash.refresh_now) for _ in range(4)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()
        assert most_in_flight[0] == 1
        assert threads == {"pgq_nb-loop"}

        dash.stop()
        assert not dash.running
        stopped_at = dash.refreshes
        time.sleep(0.5)
        assert dash.refreshes == stopped_at
        assert "stopped" in dash.header.value

        dash.start()
        wait_until(lambda: dash.refreshes >= stopped_at + 2)
    finally:
        dash.close()
    assert not dash.running
    assert dash.comm is None  # closed widgets have no comm
    closed_at = dash.refreshes
    time.sleep(0.4)
    assert dash.refreshes == closed_at


def test_idle_while_every_view_is_gone(q: pgq_nb.Queue) -> None:
    dash = dashboard(q, refresh=0.1)
    try:
        wait_until(lambda: dash.refreshes >= 2)
        dash._view_count = 1  # what the frontend reports when it displays the widget
        dash._view_count = 0  # ... and when that output is cleared
        assert "idle while not displayed" in dash.header.value
        time.sleep(0.2)  # a refresh already running ends
        idle_at = dash.refreshes
        time.sleep(0.4)
        assert dash.refreshes == idle_at and dash.running
        dash._view_count = 1
        wait_until(lambda: dash.refreshes > idle_at, timeout=2)
    finally:
        dash.close()


KERNEL_CELLS = (
    """
import time
import pgq_nb
from pgq_nb.notebook.dashboard import dashboard
q = pgq_nb.connect({dsn!r}, schema={schema!r})
dash = dashboard(q, refresh=0.2)
display(dash)
""",
    "time.sleep(2.0)",
    "dash.close()",
)


def test_updates_reach_the_frontend_while_a_cell_blocks(q: pgq_nb.Queue, installed: str) -> None:
    """In a real kernel: while one cell sleeps, the dashboard's comm updates keep coming,
    showing the jobs another process enqueues meanwhile."""
    from jupyter_client.manager import start_new_kernel

    @q.entrypoint("add")
    def add(job: pgq_nb.Job) -> None:
        pass

    def enqueue_meanwhile() -> None:
        time.sleep(0.3)
        for i in range(6):
            q.enqueue("add", {"a": i})
            time.sleep(0.25)

    manager, client = start_new_kernel(kernel_name="python3", startup_timeout=60)
    try:
        queued_shown: dict[int, set[int]] = {}
        for cell, code in enumerate(KERNEL_CELLS):
            msg_id = client.execute(code.format(dsn=installed, schema=SCHEMA))
            if cell == 1:
                producer = threading.Thread(target=enqueue_meanwhile)
                producer.start()
            shown = queued_shown.setdefault(cell, set())
            while True:
                msg = client.get_iopub_msg(timeout=30)
                kind, content = msg["msg_type"], msg["content"]
                if kind == "error":
                    raise AssertionError("\n".join(content["traceback"]))
                if kind == "comm_msg" and content["data"].get("method") == "update":
                    value = str(content["data"]["state"].get("value", ""))
                    shown.update(int(n) for n in QUEUED_TOTAL.findall(value))
                if (
                    kind == "status"
                    and content["execution_state"] == "idle"
                    and msg["parent_header"].get("msg_id") == msg_id
                ):
                    break
            if cell == 1:
                producer.join()
        # the sleeping cell saw the queue grow, one refresh after another
        assert len(queued_shown[1]) >= 3, queued_shown
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


EXIT_SCRIPT = """
import time, pgq_nb
from pgq_nb.notebook.dashboard import dashboard
q = pgq_nb.connect({dsn!r}, schema={schema!r})
running, closed = dashboard(q, refresh=0.1), dashboard(q, refresh=0.1)
closed.close()
time.sleep(0.3)
"""


def test_a_process_with_a_running_dashboard_exits(installed: str) -> None:
    """At exit, Widget.__del__ closes every widget: that must not wait for (or start) the
    pgq_nb loop thread."""
    script = EXIT_SCRIPT.format(dsn=installed, schema=SCHEMA)
    done = subprocess.run([sys.executable, "-c", script], timeout=30, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()


def test_a_database_error_shows_and_refreshing_goes_on(installed: str) -> None:
    other = pgq_nb.connect(installed, schema=f"{SCHEMA}_gone")
    dash = dashboard(other, refresh=0.1)
    try:
        wait_until(lambda: dash.refreshes >= 1)
        assert dash.last_error is None and dash.error_line.value == ""

        other.uninstall()
        wait_until(lambda: dash.last_error is not None)
        assert "UndefinedTableError" in dash.error_line.value
        assert "does not exist" in dash.error_line.value
        assert "retrying every 0.1 s" in dash.error_line.value
        failed_before = dash.failed_refreshes
        wait_until(lambda: dash.failed_refreshes >= failed_before + 3)
        assert dash.running

        other.install()
        wait_until(lambda: dash.last_error is None)
        assert dash.error_line.value == ""
        assert dash.running
    finally:
        dash.close()
        other.uninstall()


def test_schedules_tab_lists_and_pauses_resumes_and_runs_now(
    q: pgq_nb.Queue, dash: Dashboard
) -> None:
    dash.refresh_now()
    assert "no schedules" in dash.schedules.table.value
    assert dash.schedules.pause.disabled and dash.schedules.run_now.disabled

    @q.schedule("hourly_report", "0 * * * *", tz="Europe/Oslo")
    def hourly_report(schedule: Any) -> None:
        pass

    q.schedule_list()  # stores the schedule
    dash.refresh_now()
    tab = dash.schedules
    assert 'data-schedule="hourly_report"' in tab.table.value
    assert "0 * * * *" in tab.table.value and "never" in tab.table.value
    assert tab.pick.value == "hourly_report"
    assert not tab.pause.disabled and tab.resume.disabled and not tab.run_now.disabled
    assert dash.tabs.titles[2] == "Schedules (1)"

    def enabled() -> bool:
        row = fetch(q, "SELECT enabled FROM {schema}.schedules WHERE name = 'hourly_report'")
        return bool(row[0]["enabled"])

    tab.pause.click()
    assert dash.last_action is not None
    dash.last_action.result(timeout=10)
    assert not enabled()
    assert "<b>paused</b>" in tab.table.value
    assert tab.pause.disabled and not tab.resume.disabled

    tab.resume.click()
    dash.last_action.result(timeout=10)
    assert enabled()
    assert not tab.pause.disabled and tab.resume.disabled

    tab.run_now.click()
    dash.last_action.result(timeout=10)
    queued = fetch(q, "SELECT id FROM {schema}.jobs WHERE entrypoint = 'hourly_report'")
    assert len(queued) == 1


def test_workflows_tab_shows_progress_and_counts(q: pgq_nb.Queue, dash: Dashboard) -> None:
    make_jobs(q)
    wf = q.workflow("etl")
    first = wf.step("add", {"a": 1})
    wf.step("explode", {"i": 7}, depends_on=first)
    done = wf.submit()
    q.run_until_idle()
    waiting = q.workflow("later")
    waiting.step("add", {"a": 2}, depends_on=waiting.step("add", {"a": 3}))
    pending = waiting.submit()
    dash.refresh_now()

    tab = dash.workflows
    assert tab.empty.layout.display == "none"
    # newest first: the waiting run, then the finished one
    assert f'data-workflow="{pending.id}"' in tab.labels[0].value
    assert (tab.bars[0].value, tab.bars[0].max) == (0, 2)
    assert f'data-workflow-status="{pending.id}:queued">queued 1<' in tab.counts[0].value
    assert f'data-workflow-status="{pending.id}:blocked">blocked 1<' in tab.counts[0].value
    assert f'data-workflow="{done.id}"' in tab.labels[1].value
    assert (tab.bars[1].value, tab.bars[1].max) == (2, 2)
    assert tab.bars[1].bar_style == "danger"
    assert done.counts()["succeeded"] == 1
    assert f'data-workflow-status="{done.id}:succeeded">succeeded 1<' in tab.counts[1].value
    assert f'data-workflow-status="{done.id}:failed">failed 1<' in tab.counts[1].value
    assert tab.rows[2].layout.display == "none"
    assert dash.tabs.titles[3] == "Workflows (1 running)"


def test_display_and_repr(q: pgq_nb.Queue, dash: Dashboard) -> None:
    bundle = dash._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"].startswith(f"<pgq_nb Dashboard schema={SCHEMA!r} running")
    with pytest.raises(InvalidInputError, match=r"at least 0\.1 seconds"):
        dashboard(q, refresh=0)


def test_plot_throughput_draws_finished_jobs_per_minute(q: pgq_nb.Queue) -> None:
    make_jobs(q)
    fig = plot_throughput(q, since="1h")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    bars = {c.get_label(): c for c in ax.containers if isinstance(c, BarContainer)}
    assert set(bars) == {"succeeded", "failed"}
    assert sum(p.get_height() for p in bars["succeeded"].patches) == 3
    assert sum(p.get_height() for p in bars["failed"].patches) == 3
    assert len(bars["succeeded"].patches) == 61  # every minute of the hour, this one included
    assert "last 1 h: 6" in ax.get_title(loc="left")

    recent = plot_throughput(q.aio, since=dt.timedelta(minutes=5))
    assert "last 5 min: 6" in recent.axes[0].get_title(loc="left")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    empty = plot_throughput(q, since=later)
    assert not [c for c in empty.axes[0].containers if isinstance(c, BarContainer)]
    with pytest.raises(InvalidInputError, match="neither a duration"):
        plot_throughput(q, since="yesterday-ish")
    with pytest.raises(InvalidInputError, match="no time zone"):
        plot_throughput(q, since=dt.datetime(2026, 1, 1))
