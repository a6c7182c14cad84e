"""OpenTelemetry tracing (pgq_nb.tracing): enqueue and run spans in one trace, across retries
and workflow steps, with the SDK's in-memory exporter; without OpenTelemetry nothing is
imported and nothing breaks."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

import pgq_nb
from tests.conftest import REPO, SCHEMA, worker_env

trace = pytest.importorskip("opentelemetry.trace")
sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
sdk_export = pytest.importorskip("opentelemetry.sdk.trace.export")
in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")

_EXPORTER = in_memory.InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[Any]:
    """The spans finished during the test (one provider for the process: OpenTelemetry lets
    the global one be set once)."""
    if not isinstance(trace.get_tracer_provider(), sdk_trace.TracerProvider):
        provider = sdk_trace.TracerProvider()
        provider.add_span_processor(sdk_export.SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def _history_trace_context(dsn: str, job_id: int) -> Any:
    async def read() -> Any:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(
                f"SELECT trace_context FROM {SCHEMA}.history WHERE id = $1", job_id
            )
        finally:
            await conn.close()

    return asyncio.run(read())


def test_enqueue_and_every_attempt_are_in_one_trace(
    q: pgq_nb.Queue, spans: Any, installed: str
) -> None:
    retry = pgq_nb.RetryPolicy(max_attempts=3, base_delay=0.0, jitter=0.0)

    @q.entrypoint("flaky", retry=retry)
    async def flaky(job: pgq_nb.Job) -> str:
        with trace.get_tracer("app").start_as_current_span("inside the handler"):
            if job.attempts == 1:
                raise ConnectionError("upstream down")
        return "ok"

    tracer = trace.get_tracer("app")
    with tracer.start_as_current_span("request") as request:
        job_id = q.enqueue("flaky", {"x": 1})
    q.run_until_idle()
    assert q.get_job(job_id).result == "ok"

    finished = spans.get_finished_spans()
    trace_id = request.get_span_context().trace_id
    assert {s.context.trace_id for s in finished} == {trace_id}
    by_name: dict[str, list[Any]] = {}
    for span in finished:
        by_name.setdefault(span.name, []).append(span)
    (enqueue,) = by_name["pgq_nb enqueue flaky"]
    assert enqueue.parent.span_id == request.get_span_context().span_id
    assert enqueue.kind is trace.SpanKind.PRODUCER
    runs = sorted(by_name["pgq_nb run flaky"], key=lambda s: s.attributes["pgq_nb.attempt"])
    assert [r.attributes["pgq_nb.attempt"] for r in runs] == [1, 2]
    for run in runs:
        assert run.parent.span_id == enqueue.context.span_id  # the retry keeps the context
        assert run.kind is trace.SpanKind.CONSUMER
        assert run.attributes["pgq_nb.job_id"] == job_id
        assert run.attributes["pgq_nb.entrypoint"] == "flaky"
    assert runs[0].status.status_code is trace.StatusCode.ERROR
    assert runs[1].status.status_code is not trace.StatusCode.ERROR
    inner = by_name["inside the handler"]  # the handler's own spans nest in the run span
    assert {s.parent.span_id for s in inner} == {r.context.span_id for r in runs}
    # history keeps the traceparent
    recorded = _history_trace_context(installed, job_id)
    assert recorded.startswith(f"00-{trace_id:032x}-{enqueue.context.span_id:016x}-")


def test_workflow_steps_carry_the_submitters_trace(q: pgq_nb.Queue, spans: Any) -> None:
    @q.entrypoint("extract")
    async def extract(job: pgq_nb.Job) -> int:
        return 1

    @q.entrypoint("load")
    def load(job: pgq_nb.Job) -> int:
        return 2

    wf = q.workflow("etl")
    first = wf.step("extract")
    wf.step("load", depends_on=first)
    with trace.get_tracer("app").start_as_current_span("submitter") as submitter:
        run = wf.submit()
    q.run_until_idle()
    assert run.state() == "succeeded"
    finished = spans.get_finished_spans()
    assert {s.context.trace_id for s in finished} == {submitter.get_span_context().trace_id}
    runs = {s.attributes["pgq_nb.step"]: s for s in finished if s.name.startswith("pgq_nb run")}
    assert set(runs) == {"extract", "load"}
    assert {r.attributes["pgq_nb.workflow_id"] for r in runs.values()} == {run.id}
    (enqueue,) = [s for s in finished if s.name == "pgq_nb enqueue workflow etl"]
    assert {r.parent.span_id for r in runs.values()} == {enqueue.context.span_id}


def test_without_opentelemetry_nothing_is_imported_and_jobs_run(installed: str) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["opentelemetry"] = None  # as if it were not installed
        import pgq_nb
        from pgq_nb import tracing

        q = pgq_nb.connect({installed!r}, schema={SCHEMA!r}, poll_interval=0.2)

        @q.entrypoint("plain")
        def plain(job):
            return job.data + 1

        job_id = q.enqueue("plain", 41)
        wf = q.workflow("plain_flow")
        wf.step("plain", 1)
        run = wf.submit()
        q.run_until_idle()
        assert q.get_job(job_id).result == 42, q.get_job(job_id)
        assert run.state() == "succeeded"
        assert tracing.api() is None
        loaded = [m for m, v in sys.modules.items() if m.startswith("opentelemetry") and v]
        assert not loaded, loaded
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=worker_env(installed),
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")


def test_with_the_api_but_no_provider_untraced_jobs_pay_for_no_span(installed: str) -> None:
    """The API installed and nothing configured: a job that recorded no trace runs without a
    span (a no-op span still costs microseconds per job), and no enqueue opens one; a job that
    did record a trace still runs in its context, so what its handler enqueues carries it on."""
    script = textwrap.dedent(
        f"""
        import asyncio
        import pgq_nb
        from opentelemetry import trace
        from pgq_nb import tracing

        q = pgq_nb.connect({installed!r}, schema={SCHEMA!r}, poll_interval=0.2)
        assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
        otel = tracing.api()
        assert otel is not None and not otel.recording()
        seen = {{}}

        @q.entrypoint("plain")
        def plain(job):
            seen[job.id] = trace.get_current_span().get_span_context()
            return 1

        untraced = q.enqueue("plain", 1)
        parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        traced_id = q.enqueue("plain", 2)
        with q.transaction() as tx:  # give the second job a recorded trace, as an SDK would
            tx.execute(f"UPDATE {SCHEMA}.jobs SET trace_context = $1 WHERE id = $2",
                       parent, traced_id)
        q.run_until_idle()
        assert not seen[untraced].is_valid, seen[untraced]
        assert format(seen[traced_id].trace_id, "032x") == parent.split("-")[1]
        job = pgq_nb.Job(id=1, entrypoint="plain", payload=None, priority=0, attempts=1,
                         created=None, execute_after=None, dedupe_key=None)

        async def call():
            return None

        coro = call()
        assert tracing.traced(job, coro) is coro  # no span around it at all
        coro.close()
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=worker_env(installed),
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")
