"""Prometheus metrics (issue #19, item 3) and the worker's /healthz (item 4): a real worker
process serving /metrics while it runs jobs, the counts it shows against q.stats(), health and
scrapes with the database cut off or hanging, the plans of the scrape's queries, the CLI's
errors, and the example alert rules."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import http.client
import json
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import pgq_nb
from pgq_nb import metrics, runtime
from pgq_nb.models import FINAL_STATUSES, LIVE_STATUSES
from pgq_nb.worker_notices import JobsFailed
from tests.conftest import (
    REPO,
    SCHEMA,
    execute_sql,
    start_worker_process,
    wait_until,
    worker_env,
)
from tests.db_proxy import DbProxy

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

ALERTS = REPO / "docs" / "prometheus-alerts.yml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get(port: int, path: str, method: str = "GET") -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        conn.close()


def _health(port: int) -> int | None:
    try:
        return _get(port, "/healthz")[0]
    except OSError:
        return None  # not listening yet


def _samples(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def _scrape(port: int) -> Samples:
    status, content_type, body = _get(port, "/metrics")
    assert status == 200, body
    assert content_type.startswith("text/plain"), content_type
    return _samples(body.decode())


def _render(q: pgq_nb.Queue, timeout: float = metrics.SCRAPE_TIMEOUT_S) -> tuple[str, str]:
    body, content_type = runtime.run_sync(metrics.render(q.aio.store, timeout=timeout))
    return body.decode(), content_type


def _assert_matches_stats(samples: Samples, q: pgq_nb.Queue, names: list[str]) -> None:
    stats = q.stats()
    for name in names:
        for status in LIVE_STATUSES:
            seen = _value(samples, "pgq_nb_jobs", entrypoint=name, status=status)
            assert seen == stats.loc[name, status], (name, status)
        for status in FINAL_STATUSES:
            seen = _value(samples, "pgq_nb_finished_jobs", entrypoint=name, outcome=status)
            assert seen == stats.loc[name, status], (name, status)


# -- a real worker process --------------------------------------------------------------------


def test_a_worker_serves_metrics_while_it_runs_jobs_with_the_counts_of_q_stats(
    q: pgq_nb.Queue, installed: str
) -> None:
    port = _free_port()
    worker = start_worker_process(
        installed, "metrics_app:q", "--concurrency", "4", "--metrics-port", str(port)
    )
    try:
        wait_until(lambda: _health(port) == 200, 60, "the worker's /healthz to answer 200")
        slow = q.enqueue(["slow"] * 24, [0.1] * 24)
        boom = q.enqueue(["boom"] * 3)
        running: list[Samples] = []

        def scraped_while_running() -> bool:
            samples = _scrape(port)
            # one snapshot: every job is live or finished, whatever the worker is doing
            total = sum(
                _value(samples, "pgq_nb_jobs", entrypoint="slow", status=s) for s in LIVE_STATUSES
            ) + sum(
                _value(samples, "pgq_nb_finished_jobs", entrypoint="slow", outcome=s)
                for s in FINAL_STATUSES
            )
            assert total == len(slow)
            if _value(samples, "pgq_nb_jobs", entrypoint="slow", status="picked") > 0:
                running.append(samples)
            return bool(running)

        wait_until(scraped_while_running, 60, "a scrape that sees slow jobs running")
        assert _value(running[0], "pgq_nb_up") == 1
        assert _value(running[0], "pgq_nb_workers_alive") == 1
        assert _value(running[0], "pgq_nb_worker_slots") == 4
        assert q.wait([*slow, *boom], timeout=120) == {
            **dict.fromkeys(slow, "succeeded"),
            **dict.fromkeys(boom, "failed"),
        }
        samples = _scrape(port)
        _assert_matches_stats(samples, q, ["slow", "boom"])
        assert _value(samples, "pgq_nb_finished_jobs", entrypoint="slow", outcome="succeeded") == 24
        # the worker's own observations of the attempts it ran
        attempts = "pgq_nb_worker_attempts_total"
        assert _value(samples, attempts, entrypoint="slow", outcome="succeeded") == 24
        assert _value(samples, attempts, entrypoint="boom", outcome="retried") == 3
        assert _value(samples, attempts, entrypoint="boom", outcome="failed") == 3
        duration = "pgq_nb_worker_attempt_duration_seconds"
        assert _value(samples, f"{duration}_count", entrypoint="slow") == 24
        assert _value(samples, f"{duration}_sum", entrypoint="slow") >= 24 * 0.1
        assert _value(samples, f"{duration}_bucket", entrypoint="slow", le="+Inf") == 24
        assert _value(samples, "pgq_nb_worker_queue_wait_seconds_count", entrypoint="boom") == 6
        assert _value(samples, "pgq_nb_worker_running_jobs") == 0
        assert 0 <= _value(samples, "pgq_nb_worker_heartbeat_age_seconds") < 3
        assert ("process_cpu_seconds_total", frozenset()) in samples
        # HEAD, other paths, other methods
        assert _get(port, "/metrics", "HEAD")[2] == b""
        assert _get(port, "/nothing")[0] == 404
        status, _, body = _get(port, "/metrics", "POST")
        assert status == 405 and b"GET" in body
        assert _raw(port, b"hello\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        too_long = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n"
        assert _raw(port, too_long).startswith(b"HTTP/1.1 431 ")
        # stopping: unhealthy while running jobs get their grace period
        q.enqueue("slow", 30)
        wait_until(
            lambda: _value(_scrape(port), "pgq_nb_worker_running_jobs") == 1,
            60,
            "the worker to run the long job",
        )
        worker.send_signal(signal.SIGTERM)
        wait_until(lambda: _health(port) == 503, 60, "/healthz to answer 503 while stopping")
        assert _get(port, "/healthz")[2] == b"stopping\n"
    finally:
        worker.kill()
        worker.wait()


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        return s.recv(65536)


class _SlowClients(threading.Thread):
    """An attacker at ``source``: keeps ``n`` connections open that send one request line and
    stall, and opens a new one whenever the server closes one (#19, item 2)."""

    def __init__(self, port: int, source: str, n: int = 20) -> None:
        super().__init__(daemon=True)
        self.port, self.source, self.n = port, source, n
        self.stop = threading.Event()
        self.closed_by_server = 0

    def _open(self) -> socket.socket | None:
        try:
            s = socket.create_connection(
                ("127.0.0.1", self.port), timeout=5, source_address=(self.source, 0)
            )
            s.sendall(b"GET /metrics HTTP/1.1\r\n")
        except OSError:
            return None
        return s

    def run(self) -> None:
        socks: list[socket.socket] = []
        try:
            while not self.stop.is_set():
                while len(socks) < self.n and (s := self._open()) is not None:
                    socks.append(s)
                for s in select.select(socks, [], [], 0.05)[0]:  # answered or closed
                    self.closed_by_server += 1
                    socks.remove(s)
                    s.close()
        finally:
            for s in socks:
                s.close()


def test_slow_clients_do_not_starve_healthz_and_metrics(installed: str) -> None:
    port = _free_port()
    worker = start_worker_process(installed, "metrics_app:q", "--metrics-port", str(port))
    attacker = _SlowClients(port, "127.0.0.2")
    try:
        wait_until(lambda: _health(port) == 200, 60, "the worker's /healthz to answer 200")
        attacker.start()
        # the server is at its limit for that client: it closes the new ones at once
        wait_until(lambda: attacker.closed_by_server >= 10, 60, "the server to refuse some")
        # while 20 stall (and come back as fast as they are closed), another client is served
        assert _get(port, "/healthz")[0] == 200
        assert _value(_scrape(port), "pgq_nb_up") == 1
        assert _get(port, "/healthz")[0] == 200
        # one that stalls is answered 408 and closed after the 2 s the request head may take
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            began = time.monotonic()
            s.sendall(b"GET /healthz HTTP/1.1\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 408 ")
            assert time.monotonic() - began < 8  # 2 s, with a wide margin (it was 10 s)
    finally:
        attacker.stop.set()
        attacker.join(30)
        worker.kill()
        worker.wait()


def test_thousands_of_entrypoints_are_capped_and_the_rest_summed_as_other(
    q: pgq_nb.Queue, installed: str
) -> None:
    # 3,000 entrypoints (user data) made 30,000 series; beyond 1,000 they are summed (#19, 3)
    ep = "'many_' || lpad(g::text, 4, '0')"
    execute_sql(
        installed,
        f"INSERT INTO {SCHEMA}.entrypoints (name, paused) "
        f"SELECT {ep}, g % 100 = 0 FROM generate_series(1, 3000) AS g",
        f"INSERT INTO {SCHEMA}.jobs (entrypoint, execute_after) "
        f"SELECT {ep}, now() - interval '1 hour' FROM generate_series(1, 3000) AS g",
        f"INSERT INTO {SCHEMA}.jobs (entrypoint) SELECT 'many_2999' FROM generate_series(1, 50)",
    )
    port = _free_port()
    worker = start_worker_process(installed, "metrics_app:q", "--metrics-port", str(port))
    try:
        wait_until(lambda: _health(port) == 200, 60, "the worker's /healthz to answer 200")
        samples = _scrape(port)
    finally:
        worker.kill()
        worker.wait()
    labels = {dict(k[1])["entrypoint"] for k in samples if k[0] == "pgq_nb_jobs"}
    assert len(labels) == 1001 and "_other" in labels
    assert len(samples) < 15_000, len(samples)  # 10 series an entrypoint, and a few more
    # the most active one keeps its series, then the others by name; the rest are summed
    assert _value(samples, "pgq_nb_jobs", entrypoint="many_2999", status="queued") == 51
    assert {"many_0001", "many_0999"} <= labels and "many_1000" not in labels
    queued = [
        v
        for (name, lb), v in samples.items()
        if name == "pgq_nb_jobs" and ("status", "queued") in lb
    ]
    assert sum(queued) == 3050
    assert _value(samples, "pgq_nb_jobs", entrypoint="_other", status="queued") == 2000
    assert _value(samples, "pgq_nb_oldest_queued_job_age_seconds", entrypoint="_other") > 3000
    assert _value(samples, "pgq_nb_entrypoint_paused", entrypoint="_other") == 21  # 1000..3000
    assert _value(samples, "pgq_nb_entrypoint_paused", entrypoint="many_0100") == 1


def test_a_workers_own_series_beyond_the_limit_are_other(q: pgq_nb.Queue, installed: str) -> None:
    port = _free_port()
    worker = start_worker_process(
        installed,
        "metrics_app:q",
        "--metrics-port",
        str(port),
        PGQ_NB_METRICS_MAX_ENTRYPOINTS="1",
    )
    try:
        wait_until(lambda: _health(port) == 200, 60, "the worker's /healthz to answer 200")
        assert q.wait(q.enqueue(["slow"]), timeout=60) == {1: "succeeded"}
        [boom] = q.enqueue(["boom"])
        assert q.wait([boom], timeout=60) == {boom: "failed"}
        samples = _scrape(port)
    finally:
        worker.kill()
        worker.wait()
    attempts = "pgq_nb_worker_attempts_total"
    assert _value(samples, attempts, entrypoint="slow", outcome="succeeded") == 1
    assert _value(samples, attempts, entrypoint="_other", outcome="failed") == 1
    assert _value(samples, "pgq_nb_worker_queue_wait_seconds_count", entrypoint="_other") == 2
    own = {
        v
        for (n, lb) in samples
        if n.startswith("pgq_nb_worker_")
        for k, v in lb
        if k == "entrypoint"
    }
    assert "boom" not in own and {"slow", "_other"} <= own
    # the queue-wide ones too: one entrypoint of its own and _other
    labels = {dict(k[1])["entrypoint"] for k in samples if k[0] == "pgq_nb_jobs"}
    assert len(labels) == 2 and "_other" in labels, labels


def test_healthz_turns_503_and_metrics_say_down_when_the_database_is_cut_off(
    q: pgq_nb.Queue, installed: str
) -> None:
    proxy = DbProxy(installed)
    port = _free_port()
    worker = start_worker_process(proxy.dsn, "metrics_app:q", "--metrics-port", str(port))
    try:
        wait_until(lambda: _health(port) == 200, 60, "the worker's /healthz to answer 200")
        status, _, body = _get(port, "/healthz")
        assert body.startswith(b"ok: worker ") and body.endswith(b"\n") and body.count(b"\n") == 1
        assert _value(_scrape(port), "pgq_nb_up") == 1
        proxy.cut()
        # heartbeats fail; after the heartbeat timeout (3 s here) the worker is unhealthy
        wait_until(lambda: _health(port) == 503, 60, "/healthz to answer 503")
        status, _, body = _get(port, "/healthz")
        assert status == 503 and b"no heartbeat went through" in body, body
        samples = _scrape(port)  # answers, within the client's 30 s
        assert _value(samples, "pgq_nb_up") == 0
        assert ("pgq_nb_jobs", frozenset({("entrypoint", "slow"), ("status", "queued")})) not in (
            samples
        )
        assert worker.poll() is None  # the worker waits for the database; it did not exit
    finally:
        worker.kill()
        worker.wait()
        proxy.close()


def test_a_scrape_of_a_hanging_database_answers_up_0_after_its_timeout(installed: str) -> None:
    proxy = DbProxy(installed)
    try:
        q = pgq_nb.connect(proxy.dsn, schema=SCHEMA)
        pool = q.aio.store.pool

        def connections_back() -> bool:
            return not metrics._pending and pool.get_size() == pool.get_idle_size()

        text, _ = _render(q, timeout=1.0)
        assert _value(_samples(text), "pgq_nb_up") == 1
        proxy.stall()  # the pool's connection stays open; nothing passes any more

        async def leave_early() -> None:  # a scraper that gives up before the timeout
            scrape = asyncio.ensure_future(metrics.render(q.aio.store, timeout=60))
            await asyncio.sleep(0.5)
            scrape.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scrape

        asyncio.run(leave_early())
        # its query, waiting on the server, closed its connection rather than hold it for ever
        wait_until(connections_back, 30, "the abandoned query to give its connection back")
        began = time.monotonic()
        text, content_type = _render(q, timeout=1.0)
        took = time.monotonic() - began
        assert _value(_samples(text), "pgq_nb_up") == 0
        assert content_type == metrics.CONTENT_TYPE
        # without the timeout it would wait for the database for ever; 1 s, with a wide margin
        assert took < 30, took
        wait_until(connections_back, 30, "the timed-out query to end")
    finally:
        proxy.close()


# -- what render() says -----------------------------------------------------------------------


def test_render_parses_with_help_on_every_family_and_matches_q_stats(q: pgq_nb.Queue) -> None:
    q.entrypoint("ok")(lambda job: None)

    @q.entrypoint("bad", retry=pgq_nb.RetryPolicy(max_attempts=1))
    def bad(job: pgq_nb.Job) -> None:
        raise ValueError("bad")

    q.entrypoint("idle")(lambda job: None)
    q.enqueue(["ok"] * 5)
    q.enqueue(["bad"] * 2)
    with pytest.warns(JobsFailed):
        q.run_until_idle()
    q.enqueue(["ok"] * 3)  # left queued
    q.enqueue("ok", execute_after=dt.timedelta(hours=1))  # not due: not a backlog
    execute_sql(
        q.aio.store.dsn,
        f"UPDATE {SCHEMA}.jobs SET execute_after = now() - interval '90 seconds', "
        "attempts = 1 WHERE id = (SELECT min(id) FROM "
        f"{SCHEMA}.jobs WHERE execute_after <= now())",
        f"INSERT INTO {SCHEMA}.schedules "
        "(name, entrypoint, expression, tz, catch_up, next_run, enabled) VALUES "
        "('late_report', 'late_report', '0 * * * *', 'UTC', 'latest', "
        "now() - interval '1 hour', true), "
        "('paused_report', 'paused_report', '0 * * * *', 'UTC', 'latest', "
        "now() - interval '1 hour', false)",
    )
    q.pause("idle")
    text, content_type = _render(q)
    assert content_type == metrics.CONTENT_TYPE
    families = list(text_string_to_metric_families(text))
    assert {f.name for f in families} >= {
        "pgq_nb_up",
        "pgq_nb_jobs",
        "pgq_nb_finished_jobs",
        "pgq_nb_oldest_queued_job_age_seconds",
        "pgq_nb_jobs_awaiting_retry",
        "pgq_nb_workers_alive",
        "pgq_nb_schedule_lateness_seconds",
    }
    for family in families:
        assert family.name.startswith("pgq_nb_") and family.documentation, family.name
    samples = _samples(text)
    _assert_matches_stats(samples, q, ["ok", "bad", "idle"])
    assert _value(samples, "pgq_nb_up") == 1
    assert _value(samples, "pgq_nb_jobs", entrypoint="ok", status="queued") == 4
    assert _value(samples, "pgq_nb_finished_jobs", entrypoint="bad", outcome="failed") == 2
    assert _value(samples, "pgq_nb_jobs", entrypoint="idle", status="queued") == 0  # zeros too
    assert _value(samples, "pgq_nb_jobs_awaiting_retry", entrypoint="ok") == 1
    assert 90 <= _value(samples, "pgq_nb_oldest_queued_job_age_seconds", entrypoint="ok") < 3600
    assert _value(samples, "pgq_nb_oldest_queued_job_age_seconds", entrypoint="idle") == 0
    assert _value(samples, "pgq_nb_entrypoint_paused", entrypoint="idle") == 1
    assert _value(samples, "pgq_nb_entrypoint_paused", entrypoint="ok") == 0
    assert _value(samples, "pgq_nb_workers_alive") == 0
    late = _value(samples, "pgq_nb_schedule_lateness_seconds", schedule="late_report")
    assert 3600 <= late < 7200
    assert _value(samples, "pgq_nb_schedule_lateness_seconds", schedule="paused_report") == 0
    assert _value(samples, "pgq_nb_schedule_enabled", schedule="paused_report") == 0


def test_render_can_be_awaited_on_another_event_loop(q: pgq_nb.Queue) -> None:
    """As a web server's handler awaits it: on its own loop, not pgq_nb's (where the pool is)."""
    q.entrypoint("ok")(lambda job: None)
    q.enqueue(["ok"] * 2)
    body, _ = asyncio.run(metrics.render(q.aio.store))
    samples = _samples(body.decode())
    assert _value(samples, "pgq_nb_up") == 1
    assert _value(samples, "pgq_nb_jobs", entrypoint="ok", status="queued") == 2


# -- what a scrape reads ----------------------------------------------------------------------


def _relations(plan: dict[str, Any]) -> list[tuple[str, str]]:
    found = [(plan["Node Type"], plan["Relation Name"])] if "Relation Name" in plan else []
    for child in plan.get("Plans", []):
        found += _relations(child)
    return found


def test_a_scrape_never_reads_history_and_reads_jobs_once(q: pgq_nb.Queue) -> None:
    """The scrape's queries, on a history of 50,000 rows with fresh statistics: none reads
    history (finished jobs come from finished_counts), and only metrics_live_jobs reads the live
    set, once (as q.stats() does). The benchmark `python -m benchmarks --only metrics` times a
    scrape over 1,000,000 history rows."""
    execute_sql(
        q.aio.store.dsn,
        f"INSERT INTO {SCHEMA}.history (id, entrypoint, priority, status, attempts, created, "
        "finished) SELECT g, 'ep' || (g % 8), 0, 'succeeded', 1, now(), now() "
        "FROM generate_series(1, 50000) AS g",
        f"INSERT INTO {SCHEMA}.finished_counts SELECT entrypoint, status, 0, count(*) "
        f"FROM {SCHEMA}.history GROUP BY 1, 2",
        f"INSERT INTO {SCHEMA}.jobs (entrypoint) SELECT 'ep' || (g % 8) "
        "FROM generate_series(1, 1000) AS g",
        f"ANALYZE {SCHEMA}.history",
        f"ANALYZE {SCHEMA}.jobs",
    )
    queries = q.aio.store.queries
    scrape = {
        "metrics_live_jobs": (),
        "history_counts": (),
        "metrics_workers": (30.0,),
        "metrics_entrypoints": (),
        "metrics_schedules": (),
    }

    async def plans() -> dict[str, list[tuple[str, str]]]:
        found = {}
        async with q.aio.store.pool.acquire() as conn:
            for name, args in scrape.items():
                raw = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {queries[name]}", *args)
                found[name] = _relations(json.loads(raw)[0]["Plan"])
        return found

    read = runtime.run_sync(plans())
    for name, relations in read.items():
        assert "history" not in {r for _, r in relations}, (name, relations)
        jobs = [node for node, r in relations if r == "jobs"]
        assert jobs == (["Seq Scan"] if name == "metrics_live_jobs" else []), (name, relations)
    # and the code runs exactly these
    source = (REPO / "pgq_nb" / "metrics.py").read_text()
    assert set(re.findall(r'q\["(\w+)"\]', source)) == set(scrape)


def test_the_metrics_benchmark_fills_a_schema_the_scrape_reads(q: pgq_nb.Queue) -> None:
    # `python -m benchmarks --only metrics` failed on its schedules insert (#19, item 8)
    from benchmarks import scenario_metrics

    runtime.run_sync(scenario_metrics._extras(q.aio))
    samples = _samples(_render(q)[0])
    assert _value(samples, "pgq_nb_up") == 1
    assert _value(samples, "pgq_nb_schedule_enabled", schedule="bench_schedule_20") == 1
    assert _value(samples, "pgq_nb_workers_alive") == 50


# -- the command line -------------------------------------------------------------------------


def _cli(*args: str, prelude: str = "") -> subprocess.CompletedProcess[str]:
    code = f"{prelude}\nimport sys\nfrom pgq_nb.cli import main\nsys.exit(main({list(args)!r}))"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_metrics_port_without_prometheus_client_is_a_clear_error() -> None:
    done = _cli(
        "worker",
        "no_such_module:q",
        "--metrics-port",
        "9",
        prelude="import sys\nsys.modules['prometheus_client'] = None",
    )
    assert done.returncode == 2
    assert "pip install 'pgq_nb[metrics]'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metrics-port", "http"], "'http' is not a TCP port; give a number 1-65535"),
        (["--metrics-port", "70000"], "'70000' is not a TCP port"),
        (["--metrics-host", "0.0.0.0"], "--metrics-host needs --metrics-port"),
        (
            ["--metrics-port", "9", "PGQ_NB_METRICS_MAX_ENTRYPOINTS=lots"],
            "PGQ_NB_METRICS_MAX_ENTRYPOINTS='lots' is not a number of entrypoints; give a whole "
            "number of at least 1",
        ),
        (["--metrics-port", "9", "PGQ_NB_METRICS_MAX_ENTRYPOINTS=0"], "at least 1"),
    ],
)
def test_bad_metrics_options_are_clear_errors(args: list[str], message: str) -> None:
    env = [a for a in args if "=" in a]
    prelude = "".join(
        f"import os; os.environ[{k!r}] = {v!r}\n" for k, v in (a.split("=") for a in env)
    )
    done = _cli("worker", "metrics_app:q", *[a for a in args if a not in env], prelude=prelude)
    assert done.returncode == 2
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_port_in_use_is_a_clear_error(installed: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = ["worker", "metrics_app:q", "--metrics-port", str(port)]
        done = subprocess.run(
            [sys.executable, "-m", "pgq_nb.cli", *command],
            env=worker_env(installed),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}" in done.stderr, done.stderr
    assert "pick a free port with --metrics-port" in done.stderr


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("nosuch.invalid", "the host 'nosuch.invalid' cannot be resolved"),
        ("192.0.2.1", "'192.0.2.1' is not an address of this machine"),
    ],
)
def test_a_metrics_host_that_is_not_ours_is_a_clear_error(
    installed: str, host: str, message: str
) -> None:
    # it said "Name or service not known; pick a free port" (#19, item 15)
    command = ["worker", "metrics_app:q", "--metrics-port", str(_free_port())]
    done = subprocess.run(
        [sys.executable, "-m", "pgq_nb.cli", *command, "--metrics-host", host],
        env=worker_env(installed),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert message in done.stderr, done.stderr
    assert "give --metrics-host an address of this machine, e.g. 127.0.0.1" in done.stderr
    assert "pick a free port" not in done.stderr
    assert "Traceback" not in done.stderr


# -- the example alert rules ------------------------------------------------------------------


def test_the_example_alert_rules_parse_and_name_only_metrics_that_exist() -> None:
    text = ALERTS.read_text()
    rules = yaml.safe_load(text)
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert {"PgqNbBacklogOld", "PgqNbFailureRate", "PgqNbNoWorkers", "PgqNbScheduleLate"} <= {
        rule["alert"] for rule in alerts
    }
    for rule in alerts:
        assert rule["expr"] and rule["annotations"]["summary"], rule
    exported = set(re.findall(r"\b(pgq_nb_\w+)", (REPO / "pgq_nb" / "metrics.py").read_text()))
    exported |= {
        f"{name}{suffix}"
        for name in re.findall(
            r'"(pgq_nb_worker_\w+)"', (REPO / "pgq_nb" / "metrics_worker.py").read_text()
        )
        for suffix in ("", "_total", "_bucket", "_sum", "_count")
    }
    used = set(re.findall(r"\b(pgq_nb_\w+)", " ".join(rule["expr"] for rule in alerts)))
    assert used <= exported, used - exported
    # the README shows the same rules
    readme = (REPO / "README.md").read_text()
    assert text.strip() in readme


def test_a_snooze_is_counted_as_an_attempt_that_snoozed(q: pgq_nb.Queue) -> None:
    """A worker's own counter names the snoozes (outcome="snoozed"), not only the success
    after them, and times them (#21, item 2, from review)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from pgq_nb.metrics_worker import MeteredWorker, WorkerMetrics

    @q.entrypoint("later")
    async def later(job: pgq_nb.Job) -> str:
        if job.snoozes < 3:
            raise pgq_nb.Snooze(0.01)
        return "done"

    registry = CollectorRegistry()
    job_id = q.enqueue("later", {})

    async def run() -> None:
        worker = MeteredWorker(
            q.aio, metrics=WorkerMetrics(registry), stop_when_idle=True, wait_for_scheduled=5.0
        )
        await worker.run()

    runtime.run_sync(run())
    assert q.get_job(job_id).status == "succeeded"
    text = generate_latest(registry).decode()
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("pgq_nb_worker_attempts_total{")
        or line.startswith("pgq_nb_worker_attempt_duration_seconds_count{")
    }
    attempts = 'pgq_nb_worker_attempts_total{entrypoint="later",outcome="%s"}'
    assert samples[attempts % "snoozed"] == 3
    assert samples[attempts % "succeeded"] == 1
    durations = [v for k, v in samples.items() if k.startswith("pgq_nb_worker_attempt_duration")]
    assert durations == [4]
