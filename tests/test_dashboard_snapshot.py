"""A saved notebook shows the dashboard as it was when displayed (#16, item 7).

A notebook made here runs jobs and displays ``q.dashboard()`` twice: in the cell that makes it,
and in a later cell after the dashboard's own refresh task has filled it in (whose messages
belong to the earlier cell, so a notebook runner drops them). nbclient executes it in a real
kernel against the test server and stores the widget state, as ``jupyter nbconvert --execute``
and papermill do. Then the saved notebook is checked three ways:

- its widget state holds the numbers, in the widgets of each displayed dashboard;
- exported by nbconvert without that state (what GitHub shows: it renders no widgets) and
  rendered by headless Chromium, the page shows the static snapshot's tables;
- exported by nbconvert with the state (nbviewer), with the local widget manager, Chromium
  renders the widgets themselves with the numbers.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

import pgq_nb
from pgq_nb import runtime
from pgq_nb.notebook import dashboard as dashboard_module
from pgq_nb.notebook.dashboard import dashboard
from tests import test_dashboard_browser as browser
from tests.conftest import SCHEMA, unavailable
from tests.test_dashboard import database_counts, wait_until

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
chromium = browser.chromium  # the browser test's fixtures, shared
embed_js = browser.embed_js

CELLS = (
    """
import datetime as dt
import time
import pgq_nb

q = pgq_nb.connect()  # PGQ_NB_DSN and PGQ_NB_SCHEMA: the test server

@q.entrypoint("add", retry=pgq_nb.RetryPolicy.none())
def add(job):
    return job.data["a"] + 1

@q.entrypoint("explode", retry=pgq_nb.RetryPolicy.none())
def explode(job):
    raise ValueError(f"boom {job.data['i']}")

q.enqueue(["add"] * 3, [{"a": i} for i in range(3)])
q.enqueue(["explode"] * 2, [{"i": i} for i in range(2)])
wf = q.workflow("nightly_etl")
wf.step("explode", {"i": 7}, depends_on=wf.step("add", {"a": 1}))
run = wf.submit()
q.run_until_idle()
q.enqueue("add", {"a": 9}, execute_after=dt.timedelta(hours=1))
""",
    "q.dashboard()",
    "dash = q.dashboard()",
    """
deadline = time.monotonic() + 60
while dash.refreshes < 1 and time.monotonic() < deadline:
    time.sleep(0.05)
dash.refreshes
""",
    "dash",
)
DISPLAYED = (1, 4)  # the cells that display a dashboard


@pytest.fixture
def html_exporter() -> Any:
    try:
        from nbconvert import HTMLExporter
    except ImportError:
        unavailable("nbconvert is not installed (pip install -e '.[dev]')")
    return HTMLExporter


@pytest.fixture
def saved(q: pgq_nb.Queue, installed: str, tmp_path: Path) -> Any:
    """The notebook, executed by nbclient with its widget state stored, saved and read back."""
    nb = nbformat.v4.new_notebook()  # type: ignore[no-untyped-call]
    nb.cells = [nbformat.v4.new_code_cell(source.strip()) for source in CELLS]  # type: ignore[no-untyped-call]
    client = NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=True)
    env = dict(os.environ, PGQ_NB_DSN=installed, PGQ_NB_SCHEMA=SCHEMA)
    env.pop("PGQ_NB_HOME", None)
    client.execute(env=env)
    path = tmp_path / "dashboard.ipynb"
    nbformat.write(nb, path)  # type: ignore[no-untyped-call]
    return nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]


def expected_cells(q: pgq_nb.Queue) -> list[str]:
    """The count cells the tables must show, from the database."""
    counts = database_counts(q)
    assert counts[("add", "succeeded")] == 4 and counts[("explode", "failed")] == 3
    cells = [f'data-entrypoint="{ep}" data-status="{s}">{n}<' for (ep, s), n in counts.items()]
    return [*cells, 'data-entrypoint="*" data-status="failed">3<']


def displayed(nb: Any, cell: int) -> dict[str, Any]:
    outputs = [o for o in nb.cells[cell].outputs if o.output_type == "execute_result"]
    assert len(outputs) == 1, nb.cells[cell].outputs
    data: dict[str, Any] = outputs[0].data
    return data


def widget_html(state: dict[str, Any], model_id: str) -> str:
    """Every HTML value and tab title in the widget ``model_id`` and the widgets inside it."""
    model = state[model_id]["state"]
    found = [str(model.get("value", "")), " ".join(model.get("titles", []))]
    for child in model.get("children", []):
        found.append(widget_html(state, child.removeprefix("IPY_MODEL_")))
    return "\n".join(found)


def test_a_saved_notebook_holds_the_dashboard_as_displayed(
    q: pgq_nb.Queue, saved: Any, tmp_path: Path, chromium: str, embed_js: Path, html_exporter: Any
) -> None:
    expected = expected_cells(q)
    state = saved.metadata["widgets"][WIDGET_STATE]["state"]
    for cell in DISPLAYED:
        data = displayed(saved, cell)
        # the widget state holds the numbers, in this dashboard's own widgets
        shown = widget_html(state, data[WIDGET_VIEW]["model_id"])
        for expect in expected:
            assert expect in shown, (cell, expect)
        assert "Failures (3)" in shown
        assert "1 queued · 0 running · 3 failed · 0 workers" in shown
        assert 'data-workflow="' in shown and "nightly_etl" in shown
        # and the static snapshot beside it
        snapshot = data["text/html"]
        assert snapshot.startswith('<div class="pgq-snapshot">')
        for expect in expected:
            assert expect in snapshot, (cell, expect)
        assert "nightly_etl" in snapshot and 'data-failed-total="3"' in snapshot

    # GitHub renders no widgets: exported without their state, the snapshot shows
    github = copy.deepcopy(saved)
    del github.metadata["widgets"]
    page = tmp_path / "github.html"
    page.write_text(html_exporter().from_notebook_node(github)[0], encoding="utf-8")
    dom = browser.without_scripts(
        browser.run_chromium(chromium, tmp_path / "p1", page, "--dump-dom")
    )
    assert dom.count('class="pgq-snapshot"') == len(DISPLAYED)
    for expect in expected:
        assert dom.count(expect) == len(DISPLAYED), expect
    assert dom.count("1 queued · 0 running · 3 failed · 0 workers") == len(DISPLAYED)
    assert "nightly_etl" in dom and "no workflow runs yet" not in dom

    # nbviewer renders the saved widget state (here with the local widget manager)
    for asset in embed_js.parent.iterdir():
        if asset.name == "embed.js" or asset.suffix in browser.FONT_SUFFIXES:
            shutil.copy(asset, tmp_path / asset.name)
    page = tmp_path / "nbviewer.html"
    exporter = html_exporter(widget_renderer_url="embed.js")
    page.write_text(exporter.from_notebook_node(saved)[0], encoding="utf-8")
    dom = browser.without_scripts(
        browser.run_chromium(chromium, tmp_path / "p2", page, "--dump-dom")
    )
    assert 'class="pgq-snapshot"' not in dom  # the widgets are rendered instead
    assert dom.count("widget-tab") >= len(DISPLAYED)
    for expect in expected:
        assert dom.count(expect) == len(DISPLAYED), expect
    assert len(re.findall(r"1 queued · 0 running · 3 failed · 0 workers", dom)) == len(DISPLAYED)
    assert "Failures (3)" in dom and "nightly_etl" in dom


def test_displaying_waits_a_bounded_time_for_a_slow_database(
    q: pgq_nb.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the jobs table is locked (every read waits), displaying returns after
    DISPLAY_WAIT_S with "loading…"; the refresh task fills the dashboard in once it can."""
    monkeypatch.setattr(dashboard_module, "DISPLAY_WAIT_S", 0.5)

    @q.entrypoint("add")
    def add(job: pgq_nb.Job) -> None:
        pass

    q.enqueue("add", {"a": 1})

    async def acquire() -> Any:
        return await q.aio.pool.acquire()

    locker = runtime.run_sync(acquire())
    transaction = locker.transaction()
    runtime.run_sync(transaction.start())
    runtime.run_sync(locker.execute(f"LOCK TABLE {SCHEMA}.jobs IN ACCESS EXCLUSIVE MODE"))
    dash = dashboard(q, refresh=3600)
    try:
        bundle = dash._repr_mimebundle_()
        assert WIDGET_VIEW in bundle
        assert "loading…" in bundle["text/html"] and "data-entrypoint" not in bundle["text/html"]
        assert "loading…" in dash.header.value and dash.snapshot is None
    finally:
        runtime.run_sync(transaction.rollback())
        runtime.run_sync(q.aio.pool.release(locker))
    try:
        wait_until(lambda: dash.snapshot is not None, timeout=30)
        assert (
            'data-entrypoint="add" data-status="queued">1<' in dash._repr_mimebundle_()["text/html"]
        )
        assert "loading…" not in dash.header.value
    finally:
        dash.close()


def test_displaying_on_the_loop_thread_does_not_block(q: pgq_nb.Queue) -> None:
    """From the pgq_nb loop thread (an async handler) displaying reads nothing and shows
    what the dashboard has."""
    dash = dashboard(q, refresh=3600)
    try:
        dash.refresh_now()

        async def display_here() -> dict[str, Any]:
            assert runtime.in_loop_thread()
            return dash._repr_mimebundle_()

        refreshes = dash.refreshes
        bundle = runtime.run_sync(display_here())
        assert dash.refreshes == refreshes
        assert "no jobs yet" in bundle["text/html"]
    finally:
        dash.close()
