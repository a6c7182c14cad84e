"""The dashboard in a real browser: its widget state embedded in a static page with a local
copy of the widget manager (npm ``@jupyter-widgets/html-manager``, ``dist/embed.js``,
installed by ``npm ci`` in tests/browser the first time), rendered by headless Chromium
(Debian package ``chromium``) with no network. The test reads the rendered DOM for the counts
and keeps PNG screenshots (copied to $PGQ_NB_SCREENSHOT_DIR when set).

Without Chromium or npm the test skips, except in CI (CI=true), where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ipywidgets.embed import embed_minimal_html
from matplotlib.image import imread

import pgq_nb
from pgq_nb.notebook.dashboard import dashboard
from tests.conftest import unavailable
from tests.test_dashboard import database_counts, make_jobs

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
EMBED_JS = BROWSER_DIR / "node_modules" / "@jupyter-widgets" / "html-manager" / "dist" / "embed.js"
TABS = ("overview", "failures", "schedules", "workflows")
CHROMIUM_NAMES = ("chromium", "chromium-browser")
#: Offline and quiet: no first-run work, no background requests, no QUIC, and every http(s)
#: request goes to a proxy that refuses it (so the page provably needs no network); file://
#: pages may load file:// scripts; virtual time lets the page's promises settle before the dump.
CHROMIUM_FLAGS = (
    "--proxy-server=127.0.0.1:9",
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-file-access-from-files",
    "--hide-scrollbars",
    "--virtual-time-budget=5000",
)
FONT_SUFFIXES = {".woff2", ".woff", ".ttf", ".eot", ".svg"}
SUCCEEDED_GREEN = (0x2E, 0x7D, 0x32)  # charts.STATUS_COLOURS["succeeded"]


@pytest.fixture(scope="session")
def chromium() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path is not None:
            return path
    unavailable("headless Chromium is not installed (Debian/Ubuntu: apt-get install chromium)")


@pytest.fixture(scope="session")
def embed_js() -> Path:
    """The widget manager's embed script, installed from package-lock.json if missing."""
    if not EMBED_JS.is_file():
        npm = shutil.which("npm")
        if npm is None:
            unavailable("npm is not installed (Debian/Ubuntu: apt-get install npm)")
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=BROWSER_DIR,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0 or not EMBED_JS.is_file():
            unavailable(f"`npm ci` in {BROWSER_DIR} failed: {result.stderr[-2000:]}")
    return EMBED_JS


def run_chromium(chromium: str, profile: Path, page: Path, *args: str) -> str:
    result = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=120,
    )
    assert result.returncode == 0, f"chromium failed ({result.returncode}): {result.stderr}"
    return result.stdout


def without_scripts(dom: str) -> str:
    """The rendered page minus its <script> elements (which hold the widget state as JSON,
    so a match there would prove nothing)."""
    return re.sub(r"<script\b.*?</script>", "", dom, flags=re.DOTALL)


def keep(png: Path) -> None:
    target = os.environ.get("PGQ_NB_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(target) / png.name)


def pixels_like(png: Path, colour: tuple[int, int, int]) -> int:
    image = imread(png)[..., :3] * 255
    return int((np.abs(image - np.array(colour)).max(axis=-1) < 12).sum())


def fill(q: pgq_nb.Queue) -> int:
    """Jobs (see make_jobs), a workflow run that failed, a schedule; returns the run's id."""
    make_jobs(q)
    wf = q.workflow("nightly_etl")
    wf.step("explode", {"i": 7}, depends_on=wf.step("add", {"a": 1}))
    run = wf.submit()
    q.run_until_idle()

    @q.schedule("hourly_report", "0 * * * *", tz="Europe/Oslo")
    def hourly_report(schedule: Any) -> None:
        pass

    q.schedule_list()  # stores the schedule
    return run.id


def test_dashboard_renders_in_headless_chromium(
    q: pgq_nb.Queue, tmp_path: Path, chromium: str, embed_js: Path
) -> None:
    run_id = fill(q)
    expected = database_counts(q)
    failed_ids = sorted(job.id for job in q.failed_jobs())
    for asset in embed_js.parent.iterdir():  # the script and the icon fonts it refers to
        if asset.name == "embed.js" or asset.suffix in FONT_SUFFIXES:
            shutil.copy(asset, tmp_path / asset.name)
    worker = q.start_worker(entrypoints=["crash"])  # nothing to do: it only heartbeats
    dash = dashboard(q, refresh=3600)
    pages = {}
    try:
        deadline = time.monotonic() + 10
        while not q.worker_list() and time.monotonic() < deadline:
            time.sleep(0.05)
        dash.refresh_now()
        dash.stop()
        for index, name in enumerate(TABS):
            dash.tabs.selected_index = index
            pages[name] = tmp_path / f"dashboard-{name}.html"
            embed_minimal_html(
                pages[name],
                views=[dash],
                title=f"pgq_nb dashboard ({name})",
                requirejs=False,
                embed_url="embed.js",
                cors=False,
            )
    finally:
        dash.close()
        worker.stop()
    source = pages["overview"].read_text(encoding="utf-8")
    assert '<script src="embed.js"></script>' in source
    assert "cdn.jsdelivr.net" not in source and "cdnjs" not in source

    rendered = without_scripts(
        run_chromium(chromium, tmp_path / "profile", pages["overview"], "--dump-dom")
    )
    # the widget manager built the views: tabs, the header, the counts table, the chart
    assert "lm-TabBar" in rendered and "widget-tab" in rendered
    assert "1 queued · 0 running · 4 failed · 1 worker ·" in rendered
    for (entrypoint, status), n in expected.items():
        assert f'data-entrypoint="{entrypoint}" data-status="{status}">{n}<' in rendered
    assert 'data-entrypoint="*" data-status="failed">4<' in rendered
    assert 'class="pgq-throughput"' in rendered
    assert re.search(r'data-worker-heartbeat="\d+">\d+ s ago<', rendered)
    # every tab is in the page, the hidden ones too
    assert "Failures (4)" in rendered and "Schedules (1)" in rendered
    shown_failures = re.findall(r"<option[^>]*>#(\d+)&nbsp;", rendered)
    assert sorted(map(int, shown_failures)) == failed_ids
    assert 'data-schedule="hourly_report"' in rendered
    assert f'data-workflow-status="{run_id}:succeeded">succeeded 1<' in rendered
    # the finished run's bar is full and red (a step failed)
    assert re.search(r'class="progress-bar progress-bar-danger" style="[^"]*width: 100%', rendered)

    for name, page in pages.items():
        png = tmp_path / f"dashboard-{name}.png"
        run_chromium(
            chromium, tmp_path / "profile", page, f"--screenshot={png}", "--window-size=1000,620"
        )
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        keep(png)
        image = imread(png)
        assert image.shape[:2] == (620, 1000)
        assert (image[..., :3] < 0.9).any(axis=-1).mean() > 0.01, f"{png} is blank"
        if name == "overview":  # the chart's succeeded bars are drawn
            assert pixels_like(png, SUCCEEDED_GREEN) > 30
