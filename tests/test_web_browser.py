"""``pgq-nb web`` in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by Selenium against real ``pgq-nb web`` and ``pgq-nb worker``
processes on the test database. Every http(s) request that is not to this machine goes to a
proxy that refuses it, so the page provably needs no network. On failure the test saves a
screenshot of the browser under its tmp_path (and copies it to $PGQ_NB_SCREENSHOT_DIR).

Without Chromium, its driver or Selenium the test skips, except in CI (CI=true), where it fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import pgq_nb
from tests.conftest import REPO, start_worker_process, stop_processes, unavailable, worker_env

TOKEN = "browser-test-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_web(dsn: str, port: int, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """`pgq-nb web` in a process of its own; returns once /healthz answers."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pgq_nb.cli",
            "--log-level",
            "WARNING",
            "web",
            "--port",
            str(port),
            *args,
        ],
        env=worker_env(dsn, **env),
        cwd=str(REPO),
    )
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, f"pgq-nb web exited ({process.returncode})"
        url = f"http://127.0.0.1:{port}/healthz"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as answer:
            if answer.status == 200:
                return process
        assert time.monotonic() < deadline, "pgq-nb web did not answer /healthz in 60 s"
        time.sleep(0.2)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("Selenium is not installed (pip install -e '.[dev]')")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None:
        unavailable("headless Chromium is not installed (Debian/Ubuntu: apt-get install chromium)")
    if driver_path is None:
        unavailable(
            "chromedriver is not installed (Debian/Ubuntu: apt-get install chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--proxy-server=127.0.0.1:9",
        "--no-first-run",
        "--disable-sync",
        "--disable-background-networking",
        "--window-size=1200,900",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@contextlib.contextmanager
def screenshot_on_failure(driver: Any, tmp_path: Path, name: str) -> Iterator[None]:
    try:
        yield
    except BaseException:
        png = tmp_path / f"{name}.png"
        with contextlib.suppress(Exception):
            driver.save_screenshot(str(png))
            target = os.environ.get("PGQ_NB_SCREENSHOT_DIR")
            if target:
                Path(target).mkdir(parents=True, exist_ok=True)
                shutil.copy(png, Path(target) / png.name)
        raise


def wait_for(driver: Any, condition: Callable[[Any], Any], what: str, timeout: float = 60) -> Any:
    """Until ``condition`` holds; an element the page's live update replaced while it was read
    (StaleElementReferenceException, seen in CI under load) is read again at the next poll."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(
        driver,
        timeout,
        poll_frequency=0.2,
        ignored_exceptions=(StaleElementReferenceException,),
    )
    return wait.until(condition, message=what)


def text_of(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def click(driver: Any, css: str) -> None:
    """Click the element; again if the page's live update replaced it in between."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def clicked(d: Any) -> bool:
        try:
            d.find_element(By.CSS_SELECTOR, css).click()
        except StaleElementReferenceException:
            return False
        return True

    wait_for(driver, clicked, f"a click on {css}", timeout=30)


def test_the_dashboard_in_chromium(
    q: pgq_nb.Queue, installed: str, browser: Any, tmp_path: Path
) -> None:
    @q.entrypoint("boom", retry=pgq_nb.RetryPolicy.none())
    def boom(job: pgq_nb.Job) -> None:
        raise ValueError("boom in the browser test")

    failed = q.enqueue("boom", {"x": 1})
    q.run_until_idle()
    q.entrypoint("tick")(lambda job: None)  # known here; the worker process runs them
    q.enqueue(["tick"] * 40, [b"{}"] * 40, [0] * 40)
    port = free_port()
    processes = [start_web(installed, port)]
    base = f"http://127.0.0.1:{port}"
    try:
        with screenshot_on_failure(browser, tmp_path, "overview"):
            browser.get(base + "/")
            assert text_of(browser, '[data-total="queued"]') == "40"
            assert text_of(browser, '[data-total="succeeded"]') == "0"
            browser.execute_script("window.pgqMarker = 'same page';")
            processes.append(start_worker_process(installed, "web_app:q"))
            wait_for(
                browser,
                lambda d: int(text_of(d, '[data-total="succeeded"]').replace(",", "")) > 0,
                "the succeeded count to go up while the worker runs",
            )
            # updated in place, not by a reload
            assert browser.execute_script("return window.pgqMarker") == "same page"

        with screenshot_on_failure(browser, tmp_path, "failures"):
            browser.get(base + "/failures")
            assert "boom in the browser test" in browser.page_source
            click(browser, f'[data-action="requeue:{failed}"]')
            wait_for(browser, lambda d: "requeued 1 of 1" in text_of(d, "#flash"), "the flash")
            assert q.get_job(failed).status == "queued"  # the worker has no handler for it

        with screenshot_on_failure(browser, tmp_path, "pause"):
            browser.get(base + "/")
            click(browser, '[data-action="pause:tick"]')
            wait_for(browser, lambda d: "paused tick" in text_of(d, "#flash"), "the flash")
            assert [f["entrypoint"] for f in q.flow() if f["paused"]] == ["tick"]
            assert text_of(browser, '[data-paused="tick"]') == "paused"
    finally:
        stop_processes(processes)


def test_a_public_address_refuses_actions_without_the_token(
    q: pgq_nb.Queue, installed: str, browser: Any, tmp_path: Path
) -> None:
    q.entrypoint("tick")(lambda job: None)
    q.enqueue("tick")  # no worker runs it: it waits, and the overview lists its entrypoint
    port = free_port()
    process = start_web(installed, port, "--host", "0.0.0.0", PGQ_NB_WEB_TOKEN=TOKEN)
    base = f"http://127.0.0.1:{port}"
    try:
        with screenshot_on_failure(browser, tmp_path, "login"):
            browser.get(base + "/")
            assert "/login" in browser.current_url  # no page without the token
            status = browser.execute_script(
                "return fetch('/entrypoints/pause', {method: 'POST', headers: {'Content-Type':"
                " 'application/x-www-form-urlencoded'}, body: 'entrypoint=tick'})"
                ".then(r => r.status)"
            )
            assert status == 401
            assert q.flow() == []  # nothing changed
            browser.find_element("id", "token").send_keys("not-the-token-" + "x" * 8)
            click(browser, "#login")
            wait_for(browser, lambda d: "wrong token" in text_of(d, "#problem"), "the refusal")
            browser.find_element("id", "token").send_keys(TOKEN)
            click(browser, "#login")
            wait_for(
                browser,
                lambda d: d.find_elements("css selector", '[data-total="queued"]'),
                "the overview after logging in",
            )
            click(browser, '[data-action="pause:tick"]')
            wait_for(browser, lambda d: "paused tick" in text_of(d, "#flash"), "the flash")
            assert q.flow()[0]["paused"]
    finally:
        stop_processes([process])
