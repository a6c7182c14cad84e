"""OpenTelemetry tracing, when ``opentelemetry-api`` is installed (``pgq_nb[otel]``).

Enqueue (``q.enqueue``, ``q.enqueue_df``, a workflow's ``submit``) runs in a span of kind
PRODUCER, ``pgq_nb enqueue``, a child of the caller's current span, and records that span's
W3C ``traceparent`` in each job it writes (the column ``jobs.trace_context``, kept in history).
The worker runs each attempt in a span of kind CONSUMER, ``pgq_nb run ENTRYPOINT``, a child
of the recorded context, with the attributes ``pgq_nb.job_id``, ``pgq_nb.entrypoint``,
``pgq_nb.attempt`` and, for a workflow step, ``pgq_nb.workflow_id`` and ``pgq_nb.step``: so
every attempt of a job (its retries) and every step of a workflow are in the trace of the
request that enqueued them. A failed attempt's span records the exception and an ERROR status.

How the context reaches the row without a parameter in every INSERT statement: the column's
default reads the transaction-local setting ``pgq_nb.traceparent``, set (``set_config(...,
true)``) just before the enqueue's statements and cleared just after, in one transaction.

Without OpenTelemetry this module imports nothing: :func:`api` looks for the package once
(``importlib.util.find_spec``, no import) and is then a ``None`` check.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pgq_nb.models import Job
    from pgq_nb.store import Store

#: The opentelemetry modules, once looked up: None not yet, False not installed.
_api: Any = None
_SCOPE = "pgq_nb"
_UNKNOWN = object()


class _Otel:
    def __init__(self) -> None:
        from opentelemetry import propagate, trace

        self.trace = trace
        self.propagate = propagate
        self._silent = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
        self._recording = False
        # a provider named by this variable is made on the first get_tracer_provider()
        self._from_env = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ

    def recording(self) -> bool:
        """A tracer provider is set (an SDK's): spans are made and exported. Without one (the
        API installed, nothing configured) a span is a no-op that still costs microseconds:
        a fifth of a no-op job's time in the worker, measured (cProfile of a 20,000-job
        drain: 21 of 118 us per job). Asking ``get_tracer_provider()`` costs microseconds too
        while none is set (it reads the environment each time), so the API's global is looked
        at first (when this version of it has one); once set, a provider stays set."""
        if self._recording:
            return True
        if getattr(self.trace, "_TRACER_PROVIDER", _UNKNOWN) is None and not self._from_env:
            return False
        self._recording = not isinstance(self.trace.get_tracer_provider(), self._silent)
        return self._recording


def api() -> _Otel | None:
    """The OpenTelemetry API if it is installed (imported on the first call), else None."""
    global _api
    if _api is None:
        found = False
        try:
            found = importlib.util.find_spec("opentelemetry.trace") is not None
        except (ImportError, ValueError):  # a blocked or broken package counts as absent
            found = False
        try:
            _api = _Otel() if found else False
        except ImportError:
            _api = False
    return _api or None


@contextlib.asynccontextmanager
async def enqueue_context(store: Store, conn: Any, what: str) -> AsyncIterator[None]:
    """Around an enqueue's statements on ``conn``: a PRODUCER span, whose traceparent the jobs
    written meanwhile record. Without OpenTelemetry, nothing."""
    otel = api()
    if otel is None or not (
        otel.recording() or otel.trace.get_current_span().get_span_context().is_valid
    ):
        yield  # nothing would be recorded, and no trace to continue: no span
        return
    tracer = otel.trace.get_tracer(_SCOPE)
    kind = otel.trace.SpanKind.PRODUCER
    with tracer.start_as_current_span(f"pgq_nb enqueue {what}", kind=kind) as span:
        carrier: dict[str, str] = {}
        otel.propagate.inject(carrier)
        traceparent = carrier.get("traceparent") if span.get_span_context().is_valid else None
        if traceparent is None:
            yield
            return
        q = store.queries
        tx = conn.transaction() if not conn.is_in_transaction() else contextlib.nullcontext()
        async with tx:
            await conn.execute(q["set_traceparent"], traceparent)
            try:
                yield
            finally:
                if conn.is_in_transaction():  # not left aborted by the enqueue's error
                    with contextlib.suppress(Exception):
                        await conn.execute(q["set_traceparent"], "")


def traced(job: Job, call: Awaitable[Any]) -> Awaitable[Any]:
    """``call`` (an attempt of ``job``), run in a CONSUMER span that continues the trace the
    job recorded at its enqueue; ``call`` itself without OpenTelemetry, and when no tracer
    provider is set and the job recorded no trace (a job that did still gets its context, so
    that the jobs its handler enqueues carry the trace on)."""
    otel = api()
    if otel is None or (not job.trace_context and not otel.recording()):
        return call
    return _run_in_span(otel, job, call)


async def _run_in_span(otel: _Otel, job: Job, call: Awaitable[Any]) -> Any:
    parent = None
    if job.trace_context:
        parent = otel.propagate.extract({"traceparent": job.trace_context})
    attributes: dict[str, Any] = {
        "pgq_nb.job_id": job.id,
        "pgq_nb.entrypoint": job.entrypoint,
        "pgq_nb.attempt": job.attempts,
    }
    if job.workflow_id is not None:
        attributes["pgq_nb.workflow_id"] = job.workflow_id
        attributes["pgq_nb.step"] = job.step_name or ""
    tracer = otel.trace.get_tracer(_SCOPE)
    with tracer.start_as_current_span(
        f"pgq_nb run {job.entrypoint}",
        context=parent,
        kind=otel.trace.SpanKind.CONSUMER,
        attributes=attributes,
    ):
        return await call
