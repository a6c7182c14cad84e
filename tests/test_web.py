"""``pgq-nb web`` through Starlette's TestClient against the real test database: the pages,
the actions, who may do what (login, bearer token, CSRF, Host, read-only, hidden payloads),
bad input, escaping, /healthz and /metrics. tests/test_web_browser.py drives a real server in
Chromium."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="pgq_nb[web] is not installed (pip install 'pgq_nb[web]')")

from starlette.testclient import TestClient

import pgq_nb
from pgq_nb import runtime
from pgq_nb.errors import ConfigurationError
from pgq_nb.queue import AsyncQueue
from pgq_nb.web.app import create_app
from pgq_nb.web.auth import local_path, same_origin
from pgq_nb.web.config import WebConfig, build_config, is_loopback, read_token_file
from pgq_nb.web.html import error_type
from pgq_nb.web.throttle import LoginThrottle
from tests.conftest import REPO, SCHEMA, stop_processes
from tests.test_dashboard import make_jobs
from tests.test_web_browser import free_port, start_web

TOKEN = "correct-horse-battery-staple-42"
XSS = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'


#: What Prometheus sends as Accept
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def client(q: pgq_nb.Queue, **options: Any) -> TestClient:
    """The dashboard of ``q`` with ``options``, as a browser reaches it (accepting HTML)."""
    config = WebConfig(**options)
    return TestClient(
        create_app(q.aio, config),
        base_url="http://127.0.0.1:8080",
        headers={"accept": "text/html,application/xhtml+xml,*/*;q=0.8"},
    )


def csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def failed_ids(q: pgq_nb.Queue) -> list[int]:
    return sorted(job.id for job in q.failed_jobs())


@pytest.fixture
def jobs(q: pgq_nb.Queue) -> dict[str, list[int]]:
    return make_jobs(q)


@pytest.fixture
def web(q: pgq_nb.Queue) -> Iterator[TestClient]:
    with client(q) as c:
        yield c


def test_the_pages_show_the_queue(
    q: pgq_nb.Queue, jobs: dict[str, list[int]], web: TestClient
) -> None:
    overview = web.get("/")
    assert overview.status_code == 200
    assert 'data-entrypoint="add" data-status="succeeded">3<' in overview.text
    assert 'data-total="failed">3<' in overview.text
    assert "<svg" in overview.text and "/static/live.js" in overview.text
    failures = web.get("/failures")
    assert failures.status_code == 200
    for job_id in failed_ids(q):
        assert f'data-failed-job="{job_id}"' in failures.text
    assert "ValueError: boom 1" in failures.text and "Traceback" in failures.text
    assert 'data-failed-total="3"' in failures.text
    only = web.get("/failures", params={"entrypoint": "crash", "limit": "5"})
    assert "disk full" in only.text and "boom" not in only.text
    done = jobs["add"][0]
    page = web.get(f"/jobs/{done}")
    assert page.status_code == 200
    assert (
        "&quot;a&quot;: 0" in page.text
        and 'data-job-status="' in page.text
        and "succeeded" in page.text
    )
    failed = web.get(f"/jobs/{jobs['explode'][0]}").text
    assert "boom 0" in failed and "Every attempt" in failed
    found = web.get("/search", params={"id": str(done)}, follow_redirects=False)
    assert found.status_code == 303 and found.headers["location"] == f"/jobs/{done}"
    assert web.get("/static/live.js").headers["content-type"].startswith("text/javascript")
    policy = overview.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
    assert overview.headers["x-frame-options"] == "DENY"


def test_schedules_and_workflow_runs(q: pgq_nb.Queue, web: TestClient) -> None:
    @q.entrypoint("step", retry=pgq_nb.RetryPolicy.none())
    def step(job: pgq_nb.Job) -> None:
        if job.data == "bad":
            raise ValueError("bad step")

    @q.schedule("hourly_report", "0 * * * *", tz="Europe/Oslo")
    def report(schedule: Any) -> None:
        pass

    q.schedule_list()
    wf = q.workflow("nightly")
    wf.step("step", "bad", depends_on=wf.step("step", "ok"))
    run = wf.submit()
    q.run_until_idle()
    schedules = web.get("/schedules").text
    assert 'data-schedule="hourly_report"' in schedules and "0 * * * *" in schedules
    assert schedules.count("<time") >= 3  # the next ticks
    runs = web.get("/workflows").text
    assert f'data-workflow-status="{run.id}">failed' in runs
    page = web.get(f"/workflows/{run.id}").text
    assert page.count("data-step-status=") == 2 and "bad step" in page

    token = csrf(schedules)
    for path, check in (
        ("/schedules/pause", lambda: not q.schedule_list()[0]["enabled"]),
        ("/schedules/resume", lambda: q.schedule_list()[0]["enabled"]),
    ):
        answer = web.post(path, data={"csrf": token, "name": "hourly_report"})
        assert answer.status_code == 200 and check()
    ran = web.post("/schedules/run", data={"csrf": token, "name": "hourly_report"})
    assert "queued a run of hourly_report now" in ran.text
    assert q.stats().loc["hourly_report", "queued"] == 1
    retried = web.post(f"/workflows/{run.id}/retry", data={"csrf": token})
    assert "1 steps requeued" in retried.text and run.state() == "running"
    cancelled = web.post(f"/workflows/{run.id}/cancel", data={"csrf": token})
    assert "1 steps cancelled or told to stop" in cancelled.text
    assert run.state() == "cancelled"
    unknown = web.post("/schedules/pause", data={"csrf": token, "name": "no_such_schedule"})
    assert unknown.status_code == 400 and "no schedule named 'no_such_schedule'" in unescape(
        unknown.text
    )
    missing = web.post("/entrypoints/pause", data={"csrf": token, "entrypoint": ""})
    assert missing.status_code == 400 and "lacks its 'entrypoint' field" in unescape(missing.text)
    assert web.post("/workflows/4242/retry", data={"csrf": token}).status_code == 404


def test_requeue_one_selected_and_all_of_an_entrypoint(
    q: pgq_nb.Queue, jobs: dict[str, list[int]], web: TestClient
) -> None:
    token = csrf(web.get("/failures").text)
    one = jobs["crash"][0]
    answer = web.post("/failures/requeue", data={"csrf": token, "ids": str(one)})
    assert answer.status_code == 200 and "requeued 1 of 1 selected jobs" in answer.text
    assert one not in failed_ids(q)
    assert "requeued" not in web.get("/failures").text  # the message is shown once
    explode = jobs["explode"]
    q.run_until_idle()
    web.post("/failures/requeue", data={"csrf": token, "ids": [str(explode[0]), str(one)]})
    assert failed_ids(q) == [explode[1]]
    answer = web.post("/failures/requeue", data={"csrf": token, "entrypoint": "explode"})
    assert "requeued 1 failed jobs of explode" in answer.text
    assert failed_ids(q) == []
    nothing = web.post("/failures/requeue", data={"csrf": token})
    assert nothing.status_code == 400 and "select failed jobs" in nothing.text


def test_pause_resume_and_cancel(
    q: pgq_nb.Queue, jobs: dict[str, list[int]], web: TestClient
) -> None:
    token = csrf(web.get("/").text)
    web.post("/entrypoints/pause", data={"csrf": token, "entrypoint": "add"})
    assert q.flow()[0]["paused"] and 'data-paused="add"' in web.get("/").text
    web.post("/entrypoints/resume", data={"csrf": token, "entrypoint": "add"})
    assert q.flow() == []
    queued = jobs["queued"][0]
    answer = web.post(f"/jobs/{queued}/cancel", data={"csrf": token})
    assert f"job {queued}: cancelled" in answer.text
    assert q.get_job(queued).status == "cancelled"
    gone = web.post("/jobs/987654/cancel", data={"csrf": token})
    assert gone.status_code == 404


def test_an_entrypoint_without_jobs_can_be_paused(q: pgq_nb.Queue, web: TestClient) -> None:
    q.entrypoint("idle")(lambda job: None)
    q.run_until_idle()  # registers it, as a worker does
    assert 'data-action="pause:idle"' in web.get("/").text


def test_forged_and_tampered_posts_change_nothing(
    q: pgq_nb.Queue, jobs: dict[str, list[int]], web: TestClient
) -> None:
    token = csrf(web.get("/failures").text)
    before = failed_ids(q)
    form = {"entrypoint": "explode"}
    for data, headers in (
        (form, {}),  # no token
        ({**form, "csrf": token[:-2] + "xx"}, {}),  # a tampered one
        ({**form, "csrf": token}, {"origin": "https://evil.example"}),  # another site
    ):
        answer = web.post("/failures/requeue", data=data, headers=headers)
        assert answer.status_code == 403, answer.text
        assert 'id="problem"' in answer.text
    # the same form from a browser without the session (a cross-site post carries no cookie)
    with client(q) as stranger:
        answer = stranger.post("/failures/requeue", data={**form, "csrf": token})
        assert answer.status_code == 403 and "reload the page" in answer.text
    # a forged session cookie is a new session: its forms' tokens are not the old ones
    web.cookies.set("pgq_nb_session", "v1:abc:1:1.forged")
    assert web.post("/failures/requeue", data={**form, "csrf": token}).status_code == 403
    assert web.post(
        "/failures/requeue", content=b"{}", headers={"content-type": "application/json"}
    ).status_code in (403, 415)
    assert failed_ids(q) == before


def test_bad_input_gets_a_clear_4xx_page(q: pgq_nb.Queue, web: TestClient) -> None:
    for path, status, words in (
        ("/jobs/987654", 404, "no job with id 987654"),
        ("/jobs/abc", 400, "a job id is a whole number"),
        ("/jobs/%C2%B2", 400, "a job id is a whole number"),  # a digit to str.isdigit()
        ("/jobs/99999999999999999999", 400, "a job id is a whole number"),
        ("/failures?limit=ten", 400, "limit must be a whole number from 1 to 500"),
        ("/failures?limit=0", 400, "limit must be a whole number"),
        ("/workflows?limit=-3", 400, "limit must be a whole number"),
        ("/workflows/4242", 404, "no workflow run with id 4242"),
        ("/workflows/x", 400, "a workflow run id is a whole number"),
        ("/failures?limit=5_0", 400, "limit must be a whole number"),
        ("/failures?limit=%EF%BC%95", 400, "limit must be a whole number"),  # a wide 5
        ("/search?id=12x", 400, "a job id is a whole number"),
        ("/search?id=", 400, "a job id is a whole number"),
        ("/nowhere", 404, "nothing at /nowhere"),
    ):
        answer = web.get(path)
        assert answer.status_code == status, (path, answer.text)
        assert words in answer.text, (path, answer.text)
        assert 'id="problem"' in answer.text


def test_everything_from_the_database_is_escaped(q: pgq_nb.Queue, web: TestClient) -> None:
    name = "evil" + XSS

    @q.entrypoint(name, retry=pgq_nb.RetryPolicy.none())
    def evil(job: pgq_nb.Job) -> Any:
        raise ValueError(XSS)

    job_id = q.enqueue(name, {"html": XSS})
    q.run_until_idle()
    q.pause(name)
    pages = ["/", "/failures", f"/jobs/{job_id}", f"/failures?entrypoint={name}"]
    for path in pages:
        text = web.get(path).text
        assert "<script>alert" not in text and "<img src=x" not in text, path
        assert "&lt;script&gt;alert" in text, path


def test_read_only_has_no_actions(q: pgq_nb.Queue, jobs: dict[str, list[int]]) -> None:
    with client(q, read_only=True) as web:
        for path in ("/", "/failures", f"/jobs/{jobs['queued'][0]}", "/schedules"):
            page = web.get(path).text
            assert 'method="post"' not in page and "(read-only)" in page, path
        before = failed_ids(q)
        for path in (
            "/failures/requeue",
            "/entrypoints/pause",
            f"/jobs/{jobs['queued'][0]}/cancel",
        ):
            answer = web.post(path, data={"entrypoint": "explode", "ids": "1"})
            assert answer.status_code in (404, 405), path
        assert failed_ids(q) == before and q.flow() == []
        assert q.get_job(jobs["queued"][0]).status == "queued"


def test_hide_payloads_never_shows_payloads_or_results(
    q: pgq_nb.Queue, jobs: dict[str, list[int]]
) -> None:
    @q.entrypoint("secret")
    def secret(job: pgq_nb.Job) -> dict[str, str]:
        return {"salary": "SECRET-RESULT-93"}

    job_id = q.enqueue("secret", {"ssn": "SECRET-PAYLOAD-17"})
    q.run_until_idle()
    with client(q, hide_payloads=True) as web:
        page = web.get(f"/jobs/{job_id}").text
        assert "SECRET-PAYLOAD-17" not in page and "SECRET-RESULT-93" not in page
        assert "hidden (pgq-nb web --hide-payloads)" in page
    with client(q) as web:
        page = web.get(f"/jobs/{job_id}").text
        assert "SECRET-PAYLOAD-17" in page and "SECRET-RESULT-93" in page


def test_with_a_token_every_page_and_action_needs_it(
    q: pgq_nb.Queue, jobs: dict[str, list[int]]
) -> None:
    with client(q, host="0.0.0.0", token=TOKEN) as web:
        redirect = web.get("/failures?limit=5", follow_redirects=False)
        assert redirect.status_code == 303
        assert redirect.headers["location"] == "/login?next=%2Ffailures%3Flimit%3D5"
        before = failed_ids(q)
        refused = web.post("/failures/requeue", data={"entrypoint": "explode"})
        assert refused.status_code == 401 and "log in" in refused.text.lower()
        wrong = web.get("/", headers={"authorization": "Bearer not-the-token-at-all"})
        assert wrong.status_code == 401
        assert web.post("/login", data={"token": "guess", "next": "/"}).status_code == 401
        assert failed_ids(q) == before
        right = web.get("/", headers={"authorization": f"Bearer {TOKEN}"})
        assert right.status_code == 200 and "set-cookie" not in right.headers
        api = web.post(
            "/entrypoints/pause",
            data={"entrypoint": "add"},
            headers={"authorization": f"Bearer {TOKEN}"},
            follow_redirects=False,
        )
        assert api.status_code == 303 and q.flow()[0]["paused"]
        login = web.post(
            "/login", data={"token": TOKEN, "next": "/failures"}, follow_redirects=False
        )
        assert login.status_code == 303 and login.headers["location"] == "/failures"
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        page = web.get("/failures")
        assert page.status_code == 200 and 'data-failed-total="3"' in page.text
        answer = web.post(
            "/failures/requeue", data={"csrf": csrf(page.text), "entrypoint": "explode"}
        )
        assert "requeued 2 failed jobs of explode" in answer.text
        web.post("/logout", data={"csrf": csrf(answer.text)})
        assert web.get("/", follow_redirects=False).status_code == 303
        # another secret: the old session is no longer valid
    with client(q, host="0.0.0.0", token=TOKEN + "-rotated") as other:
        other.cookies.update(dict(web.cookies))
        assert other.get("/", follow_redirects=False).status_code == 303


def test_without_a_token_only_loopback_hosts_are_served(q: pgq_nb.Queue) -> None:
    app = create_app(q.aio, WebConfig())
    with TestClient(app, base_url="http://rebound.example:8080") as web:
        answer = web.get("/")
        assert answer.status_code == 400 and "loopback" in answer.text
    with TestClient(app, base_url="http://localhost:8080") as web:
        assert web.get("/").status_code == 200


def test_healthz(q: pgq_nb.Queue) -> None:
    with client(q, host="0.0.0.0", token=TOKEN) as web:
        answer = web.get("/healthz")  # no login: for load balancers and systemd
        assert answer.status_code == 200 and answer.json() == {"status": "ok", "database": "ok"}


def test_metrics_without_prometheus_client_say_what_to_install(
    q: pgq_nb.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pgq_nb.metrics", None)  # import fails as if absent
    with client(q) as web:
        answer = web.get("/metrics")
        assert answer.status_code == 404 and "install pgq_nb[metrics]" in answer.text


def test_metrics_are_served(q: pgq_nb.Queue, jobs: dict[str, list[int]]) -> None:
    pytest.importorskip("prometheus_client")
    with client(q, host="0.0.0.0", token=TOKEN) as web:
        assert web.get("/metrics", follow_redirects=False).status_code == 303  # a browser
        # Prometheus (or curl) without the token: a 401 that says how to send it, not the login
        scrape = web.get("/metrics", headers={"accept": PROMETHEUS_ACCEPT}, follow_redirects=False)
        assert scrape.status_code == 401 and scrape.headers["www-authenticate"].startswith("Bearer")
        assert "credentials_file" in scrape.text
        wrong = web.get("/metrics", headers={"authorization": "Bearer not-the-token-at-all"})
        assert wrong.status_code == 401 and "invalid_token" in wrong.headers["www-authenticate"]
        answer = web.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/")
        assert "pgq_nb_up 1.0" in answer.text
        assert 'pgq_nb_finished_jobs{entrypoint="explode",outcome="failed"} 2.0' in answer.text


# -- configuration: pure decisions, and the token file ------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("example.com", False),
        ("localhost.example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_non_loopback_address_needs_a_secret() -> None:
    with pytest.raises(ConfigurationError, match=r"will not listen on 0\.0\.0\.0 without a secret"):
        build_config(host="0.0.0.0", environ={})
    assert build_config(host="0.0.0.0", environ={"PGQ_NB_WEB_TOKEN": TOKEN}).token == TOKEN
    with pytest.raises(ConfigurationError, match="at least 16"):
        build_config(environ={"PGQ_NB_WEB_TOKEN": "short"})
    for weak in ("a" * 20, "ab" * 10, "1234512345123451234"):
        with pytest.raises(ConfigurationError, match="must be random"):
            build_config(environ={"PGQ_NB_WEB_TOKEN": weak})
    assert build_config(environ={}).token is None
    with pytest.raises(ConfigurationError, match="not a TCP port"):
        build_config(port=0, environ={})


def test_the_token_file_must_be_private_and_not_a_symlink(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    secret.chmod(0o600)
    assert read_token_file(secret) == TOKEN
    secret.chmod(0o640)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        read_token_file(secret)
    secret.chmod(0o600)
    link = tmp_path / "link"
    link.symlink_to(secret)
    with pytest.raises(ConfigurationError, match="symbolic link"):
        read_token_file(link)
    with pytest.raises(ConfigurationError, match="does not exist"):
        read_token_file(tmp_path / "missing")
    with pytest.raises(ConfigurationError, match="one way only"):
        build_config(token_file=secret, environ={"PGQ_NB_WEB_TOKEN": TOKEN})


def test_pgq_nb_web_refuses_a_public_address_without_a_secret() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PGQ_NB_WEB_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-m", "pgq_nb.cli", "web", "--host", "0.0.0.0"],
        env={**env, "PYTHONPATH": str(REPO)},
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "will not listen on 0.0.0.0 without a secret" in done.stderr
    assert "PGQ_NB_WEB_TOKEN" in done.stderr and "--token-file" in done.stderr


def test_the_web_layer_is_lean_and_the_core_does_not_load_it() -> None:
    """`pgq_nb.web` needs no pandas or widgets; `import pgq_nb` and the CLI load no Starlette."""
    probe = (
        "import json, sys\n"
        "import pgq_nb, pgq_nb.cli\n"
        "core = [m for m in ('starlette', 'uvicorn', 'pgq_nb.web') if m in sys.modules]\n"
        "import pgq_nb.web.app, pgq_nb.web.server\n"
        "heavy = [m for m in ('pandas', 'ipywidgets', 'IPython', 'tqdm', 'matplotlib',\n"
        "         'pgq_nb.notebook') if m in sys.modules]\n"
        "print(json.dumps([core, heavy]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.stdout.strip().splitlines()[-1] == "[[], []]"


@pytest.mark.parametrize(
    ("origin", "host", "same"),
    [
        (None, "127.0.0.1:8080", True),
        ("http://127.0.0.1:8080", "127.0.0.1:8080", True),
        ("https://dash.example", "dash.example", True),
        ("https://evil.example", "dash.example", False),
        ("http://127.0.0.1:9999", "127.0.0.1:8080", False),
        ("null", "127.0.0.1:8080", False),
        ("http://127.0.0.1:8080", None, False),
    ],
)
def test_same_origin(origin: str | None, host: str | None, same: bool) -> None:
    assert same_origin(origin, host) is same


@pytest.mark.parametrize(
    ("target", "kept"),
    [
        ("/failures?limit=5", "/failures?limit=5"),
        ("/", "/"),
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("/a\\b", "/"),
        ("/x\r\nSet-Cookie: a=b", "/"),
        ("", "/"),
        (None, "/"),
        ("failures", "/"),
    ],
)
def test_after_the_login_only_local_paths(target: str | None, kept: str) -> None:
    assert local_path(target) == kept


def test_the_login_never_sends_the_browser_elsewhere(q: pgq_nb.Queue) -> None:
    with client(q, host="0.0.0.0", token=TOKEN) as web:
        answer = web.post(
            "/login", data={"token": TOKEN, "next": "/\\evil.example"}, follow_redirects=False
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/"


def test_a_reverse_proxys_basic_login_is_not_taken_for_a_wrong_token(q: pgq_nb.Queue) -> None:
    basic = {"authorization": "Basic dXNlcjpwYXNz"}
    with client(q) as web:
        assert web.get("/", headers=basic).status_code == 200
    with client(q, host="0.0.0.0", token=TOKEN) as web:
        assert web.get("/", headers=basic, follow_redirects=False).status_code == 303


def test_pgq_nb_web_without_the_extra_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['starlette'] = None\n"  # as if pgq_nb[web] were not installed
        "from pgq_nb.cli import main; sys.exit(main(['web']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "pip install 'pgq_nb[web]'" in done.stderr and "starlette" in done.stderr


# -- the attack review of issue #19 --------------------------------------------------------


@contextlib.contextmanager
def locked(q: pgq_nb.Queue, *tables: str) -> Iterator[None]:
    """``tables`` locked ACCESS EXCLUSIVE by another connection for the block."""

    async def acquire() -> Any:
        return await q.aio.pool.acquire()

    locker = runtime.run_sync(acquire())
    transaction = locker.transaction()
    runtime.run_sync(transaction.start())
    try:
        for table in tables:
            runtime.run_sync(
                locker.execute(f"LOCK TABLE {SCHEMA}.{table} IN ACCESS EXCLUSIVE MODE")
            )
        yield
    finally:
        runtime.run_sync(transaction.rollback())
        runtime.run_sync(q.aio.pool.release(locker))


def test_a_locked_table_gives_a_503_page_not_a_hung_one(
    q: pgq_nb.Queue, jobs: dict[str, list[int]]
) -> None:
    with client(q, read_timeout_s=1.0) as web, locked(q, "jobs", "history"):
        for path in ("/", "/failures", f"/jobs/{jobs['queued'][0]}"):
            answer = web.get(path)
            assert answer.status_code == 503, (path, answer.text)
            assert "the database is not answering" in answer.text, path
            assert answer.headers["x-frame-options"] == "DENY"
        # /healthz has a connection of its own: the server answers, so it is healthy
        assert web.get("/healthz").json() == {"status": "ok", "database": "ok"}
    with client(q, read_timeout_s=1.0) as web:
        assert web.get("/").status_code == 200  # the pool's connections came back


def test_healthz_answers_503_in_time_when_the_database_does_not_answer(q: pgq_nb.Queue) -> None:
    with socket.socket() as silent:  # accepts connections and never answers: a frozen server
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        frozen = AsyncQueue(q.aio.pool, f"postgresql://pgq@127.0.0.1:{port}/pgq", q.aio.settings)
        with TestClient(create_app(frozen, WebConfig()), base_url="http://127.0.0.1:8080") as web:
            for _ in range(2):
                answer = web.get("/healthz")
                assert answer.status_code == 503
                assert answer.json() == {
                    "status": "unavailable",
                    "database": "no answer within 2 s",
                }


def test_a_nul_byte_gets_a_400_page_and_errors_have_the_security_headers(
    q: pgq_nb.Queue, jobs: dict[str, list[int]], web: TestClient
) -> None:
    token = csrf(web.get("/failures").text)
    for answer in (
        web.get("/failures", params={"entrypoint": "\x00"}),
        web.post("/schedules/pause", data={"csrf": token, "name": "a\x00b"}),
        web.post("/schedules/run", data={"csrf": token, "name": "a\x00b"}),
    ):
        assert answer.status_code == 400, answer.text
        assert "holds a NUL character" in answer.text and 'id="problem"' in answer.text
        assert answer.headers["x-frame-options"] == "DENY"
    # a server error (here: a schema that is not installed) is a page with the headers too
    nowhere = dataclasses.replace(q.aio.settings, schema="pgq_nb_not_installed")
    broken = AsyncQueue(q.aio.pool, q.aio.dsn, nowhere)
    app = create_app(broken, WebConfig())
    with TestClient(app, base_url="http://127.0.0.1:8080", raise_server_exceptions=False) as web2:
        answer = web2.get("/failures")
        assert answer.status_code == 500 and "the pgq-nb web log has the error" in answer.text
        assert "content-security-policy" in answer.headers


def test_only_known_entrypoints_can_be_paused_and_names_are_capped(
    q: pgq_nb.Queue, jobs: dict[str, list[int]], web: TestClient
) -> None:
    token = csrf(web.get("/").text)
    for path in ("/entrypoints/pause", "/entrypoints/resume"):
        answer = web.post(path, data={"csrf": token, "entrypoint": "nonexistent-ep"})
        assert answer.status_code == 404, answer.text
        assert "no entrypoint named 'nonexistent-ep'" in unescape(answer.text)
    long = web.post("/entrypoints/pause", data={"csrf": token, "entrypoint": "x" * 201})
    assert long.status_code == 400 and "at most 200" in long.text
    long = web.post("/schedules/pause", data={"csrf": token, "name": "s" * 5000})
    assert long.status_code == 400 and "at most 200" in long.text
    assert q.flow() == [] and "nonexistent-ep" not in web.get("/").text
    typo = web.post("/entrypoints/pause", data={"csrf": token, "entrypoint": "ad"})
    assert typo.status_code == 404 and "did you mean 'add'" in unescape(typo.text)


def test_hide_payloads_hides_error_texts_and_tracebacks(q: pgq_nb.Queue) -> None:
    @q.entrypoint("leaky", retry=pgq_nb.RetryPolicy.none())
    def leaky(job: pgq_nb.Job) -> None:
        raise ValueError("bad card " + job.data["card"])

    @q.schedule("leaky_report", "0 * * * *")
    def report(schedule: Any) -> None:
        raise RuntimeError("SECRET-SCHEDULE-66 in the report")

    job_id = q.enqueue("leaky", {"card": "SECRET-CARD-55"})
    q.schedule_list()
    q.run_schedule_now("leaky_report")
    wf = q.workflow("leaks")
    wf.step("leaky", {"card": "SECRET-STEP-77"})
    run = wf.submit()
    q.run_until_idle()
    pages = ["/failures", f"/jobs/{job_id}", "/schedules", f"/workflows/{run.id}"]
    with client(q) as web:
        shown = "".join(web.get(path).text for path in pages)
        assert all(s in shown for s in ("SECRET-CARD-55", "SECRET-SCHEDULE-66", "SECRET-STEP-77"))
    with client(q, hide_payloads=True) as web:
        for path in pages:
            text = web.get(path).text
            assert "SECRET-" not in text, path
            assert "Error" in text and "hidden: pgq-nb web --hide-payloads" in text, path


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("ValueError: boom", "ValueError"),
        ("pgq_nb.errors.JobTimeoutError: ran 5 s", "pgq_nb.errors.JobTimeoutError"),
        ("KeyboardInterrupt", "KeyboardInterrupt"),
        ("the card 4111 was declined", "error"),
        ("4111: declined", "error"),
        ("", "error"),
        (None, "error"),
    ],
)
def test_the_error_type_never_takes_the_text(text: str | None, kind: str) -> None:
    assert error_type(text) == kind


def test_a_logout_ends_the_session_on_the_server(
    q: pgq_nb.Queue, jobs: dict[str, list[int]]
) -> None:
    with client(q, host="0.0.0.0", token=TOKEN) as web:
        web.post("/login", data={"token": TOKEN, "next": "/"})
        page = web.get("/failures")
        assert page.status_code == 200
        stolen, token = web.cookies["pgq_nb_session"], csrf(page.text)
        web.post("/logout", data={"csrf": token})
        web.cookies.set("pgq_nb_session", stolen)  # the cookie kept (copied, or not deleted)
        assert web.get("/", follow_redirects=False).status_code == 303
        before = failed_ids(q)
        answer = web.post("/failures/requeue", data={"csrf": token, "entrypoint": "explode"})
        assert answer.status_code == 401 and failed_ids(q) == before
        web.cookies.clear()
        web.post("/login", data={"token": TOKEN, "next": "/"})  # a new login works
        assert web.get("/", follow_redirects=False).status_code == 200


@pytest.mark.parametrize("argv", [["--token", TOKEN], [f"--token={TOKEN}"], ["--tok", TOKEN]])
def test_a_secret_on_the_command_line_is_refused_and_not_echoed(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pgq_nb.cli", "web", *argv],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    if argv[0].startswith("--token"):
        assert "secrets are never taken on the command line" in done.stderr
        assert "PGQ_NB_WEB_TOKEN or --token-file" in done.stderr
        assert TOKEN not in done.stderr + done.stdout
    else:  # not an abbreviation of --token-file: an unknown option
        assert "--token-file" not in done.stderr.splitlines()[-1]


def test_a_client_slow_to_send_its_request_head_is_disconnected(installed: str) -> None:
    port = free_port()
    web = start_web(installed, port)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as slow:
            slow.sendall(b"GET /metrics HTTP/1.1\r\n")
            started = time.monotonic()
            closed = False
            while time.monotonic() - started < 60 and not closed:
                try:
                    slow.sendall(b"X-Trickle: 1\r\n")  # one header line a second, never the end
                    slow.settimeout(1)
                    closed = slow.recv(1024) == b""
                except TimeoutError:
                    continue
                except OSError:  # reset by the server
                    closed = True
            assert closed, "a client trickling header lines kept its connection for 60 s"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as answer:
            assert answer.status == 200  # and the server serves the others
    finally:
        stop_processes([web])


def test_without_a_token_requests_through_a_proxy_are_refused(
    q: pgq_nb.Queue, jobs: dict[str, list[int]]
) -> None:
    proxied = [
        {"x-forwarded-for": "203.0.113.5"},
        {"x-forwarded-host": "dash.example"},
        {"forwarded": "for=203.0.113.5;host=dash.example"},
        {"x-real-ip": "203.0.113.5"},
    ]
    with client(q) as web:  # the proxy connects from 127.0.0.1 with Host: 127.0.0.1:8080
        token = csrf(web.get("/failures").text)
        for headers in proxied:
            answer = web.get("/", headers=headers)
            assert answer.status_code == 403 and "a proxy needs a token" in answer.text.lower()
            assert "proxy_set_header Host $host" in answer.text
            refused = web.post(
                "/entrypoints/pause", data={"csrf": token, "entrypoint": "add"}, headers=headers
            )
            assert refused.status_code == 403
        assert q.flow() == []
    with client(q, host="0.0.0.0", token=TOKEN) as web:  # with a token a proxy is fine
        bearer = {"authorization": f"Bearer {TOKEN}"}
        assert web.get("/", headers={**proxied[0], **bearer}).status_code == 200


def test_the_login_throttle_waits_doubling_and_logs_once_a_minute() -> None:
    brake = LoginThrottle()
    logged = [brake.failed("10.0.0.1", now=float(t)) for t in range(5)]
    assert logged == [1, None, None, None, None]  # one warning a minute
    assert brake.wait_s("10.0.0.1", now=4.0) == 1.0 and brake.wait_s("10.0.0.2", 4.0) == 0
    waits, logs = [], []
    now = 4.0
    for _ in range(8):
        now += brake.wait_s("10.0.0.1", now)
        logs.append(brake.failed("10.0.0.1", now))
        waits.append(brake.wait_s("10.0.0.1", now))
    assert waits == [2, 4, 8, 16, 30, 30, 30, 30]
    # at t=65, the first failure a minute after the warning: the 10 since; at t=125 the 2 since
    assert logs == [None, None, None, None, None, 10, None, 2]
    brake.succeeded("10.0.0.1")
    assert brake.wait_s("10.0.0.1", now=now) == 0


def test_wrong_logins_are_braked_per_client(
    q: pgq_nb.Queue, caplog: pytest.LogCaptureFixture
) -> None:
    with client(q, host="0.0.0.0", token=TOKEN) as web:
        for _ in range(5):
            assert web.post("/login", data={"token": "guess-guess-guess-1"}).status_code == 401
        braked = web.post("/login", data={"token": TOKEN}, follow_redirects=False)
        assert braked.status_code == 429 and braked.headers["retry-after"] == "1"
        assert "too many wrong tokens" in braked.text and "try again in 1 s" in braked.text
        assert web.get("/", follow_redirects=False).status_code == 303  # not logged in
    warnings = [r for r in caplog.records if "wrong token" in r.getMessage()]
    assert len(warnings) == 1
