"""The web dashboard's run page shows the run's timeline as inline SVG drawn by the server
(issue #21, item 5): one row per step (folded by name past the cap), coloured by status,
every name escaped, nothing loaded from elsewhere."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

import pgq_nb
from pgq_nb.workflow_timeline import STATUS_COLOURS
from tests.conftest import stop_processes
from tests.test_web import XSS, client
from tests.test_web_browser import (  # the fixture, used by name
    browser,  # noqa: F401
    free_port,
    screenshot_on_failure,
    start_web,
    wait_for,
)


@pytest.fixture
def web(q: pgq_nb.Queue) -> Iterator[TestClient]:
    with client(q) as c:
        yield c


def svg_of(page: str) -> str:
    found = re.search(r'<svg[^>]*class="pgq-timeline".*?</svg>', page, re.S)
    assert found, "the run page has no timeline"
    return found.group(0)


def test_the_run_page_draws_every_step(q: pgq_nb.Queue, web: TestClient) -> None:
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
    wf.step("ok", name="after_bad", depends_on=wf.step("bad", depends_on=wf.step("ok")))
    wf.step("ok", name="after_gate", depends_on=wf.step("gate"))
    run = wf.submit()
    q.run_until_idle(entrypoints=["ok", "bad"], timeout=60)
    page = web.get(f"/workflows/{run.id}")
    assert page.status_code == 200
    svg = svg_of(page.text)
    rows = re.findall(r'<g data-row="([^"]*)" data-status="([^"]*)">', svg)
    assert rows == [
        ("ok", "succeeded"),
        ("bad", "failed"),
        ("after_bad", "upstream_failed"),
        ("gate", "queued"),
        ("after_gate", "blocked"),
    ]
    bars = re.findall(
        r'fill="([^"]*)" fill-opacity="[^"]*" data-kind="(\w+)" data-status="(\w+)"', svg
    )
    assert (STATUS_COLOURS["succeeded"], "running", "succeeded") in bars
    assert (STATUS_COLOURS["failed"], "running", "failed") in bars
    assert (STATUS_COLOURS["queued"], "queued", "queued") in bars
    assert [k for _, k, s in bars if s in ("upstream_failed", "blocked")] == ["blocked", "blocked"]
    assert "data-now" not in svg  # a finished run has no "now" line
    live = re.search(r'<div data-live="run">.*', page.text, re.S)
    assert live and 'class="pgq-timeline"' in live.group(0)  # refreshed with the run
    assert "http" not in svg.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing fetched
    assert web.get(f"/workflows/{run.id}").text.count("<rect") == page.text.count("<rect")


def test_names_are_escaped_in_the_timeline(q: pgq_nb.Queue, web: TestClient) -> None:
    name = "evil" + XSS

    @q.entrypoint(name)
    def evil(job: pgq_nb.Job) -> None:
        pass

    wf = q.workflow("evil" + XSS)
    wf.step(name)
    run = wf.submit()
    page = web.get(f"/workflows/{run.id}").text
    svg = svg_of(page)
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert" in svg
    assert unescape(re.findall(r'<g data-row="([^"]*)"', svg)[0]) == name


def test_a_large_run_folds_and_an_unknown_run_is_404(q: pgq_nb.Queue, web: TestClient) -> None:
    @q.entrypoint("extract")
    def extract(job: pgq_nb.Job) -> None:
        pass

    @q.entrypoint("transform")
    def transform(job: pgq_nb.Job) -> None:
        pass

    wf = q.workflow("big")
    wf.map("transform", [{"n": i} for i in range(300)], depends_on=wf.step("extract"))
    run = wf.submit()
    page = web.get(f"/workflows/{run.id}").text
    svg = svg_of(page)
    assert re.findall(r'<g data-row="([^"]*)"', svg) == ["extract", "transform (300 steps)"]
    assert "300 steps folded into one row per step name" in page
    assert 'data-now=""' in svg  # a running run: a line at now
    missing = web.get("/workflows/424242")
    assert missing.status_code == 404 and "no workflow run with id 424242" in missing.text
    assert web.get("/workflows/nope").status_code in (400, 404)


def test_the_timeline_in_chromium_updates_in_place(
    q: pgq_nb.Queue,
    installed: str,
    browser: Any,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    """Drawn by a real `pgq-nb web` in headless Chromium (an alert from the run's name,
    full of script, would fail every later command), and redrawn by the live update."""
    from selenium.webdriver.common.by import By

    @q.entrypoint("first")
    def first(job: pgq_nb.Job) -> None:
        pass

    @q.entrypoint("second")
    def second(job: pgq_nb.Job) -> None:
        pass

    wf = q.workflow("in" + XSS)
    wf.step("second", depends_on=wf.step("first"))
    run = wf.submit()
    q.run_until_idle(entrypoints=["first"], timeout=60)
    port = free_port()
    processes = [start_web(installed, port)]
    try:
        with screenshot_on_failure(browser, tmp_path, "timeline"):
            browser.get(f"http://127.0.0.1:{port}/workflows/{run.id}")
            svg = browser.find_element(By.CSS_SELECTOR, "svg.pgq-timeline")
            assert svg.size["width"] > 500 and svg.size["height"] > 40  # drawn, not blank
            rows = browser.find_elements(By.CSS_SELECTOR, "svg.pgq-timeline g[data-row]")
            assert [r.get_attribute("data-status") for r in rows] == ["succeeded", "queued"]
            assert browser.find_elements(By.CSS_SELECTOR, "svg.pgq-timeline [data-now]")
            browser.execute_script("window.pgqMarker = 'same page';")
            q.run_until_idle(entrypoints=["second"], timeout=60)

            def second_done(d: Any) -> bool:
                found = d.find_elements(By.CSS_SELECTOR, 'g[data-row="second"]')
                return bool(found) and found[0].get_attribute("data-status") == "succeeded"

            wait_for(browser, second_done, "the live update to redraw the timeline")
            assert browser.execute_script("return window.pgqMarker") == "same page"
            assert not browser.find_elements(By.CSS_SELECTOR, "svg.pgq-timeline [data-now]")
    finally:
        stop_processes(processes)
