"""The records handlers and callers see: Job, JobInfo, JobStatus; and input checks.

Payload and result encoding is in :mod:`pgq_nb.encoding`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import html
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pgq_nb.encoding import decode_payload
from pgq_nb.errors import InvalidInputError, PayloadError


class JobStatus(enum.StrEnum):
    """Where a job is. The first three are live (table ``jobs``), the rest final (``history``)."""

    QUEUED = "queued"
    BLOCKED = "blocked"
    PICKED = "picked"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UPSTREAM_FAILED = "upstream_failed"

    @property
    def is_final(self) -> bool:
        return self not in (JobStatus.QUEUED, JobStatus.BLOCKED, JobStatus.PICKED)


#: Every job status as text, in JobStatus's order: the live ones, then the final ones. Every
#: other list of statuses (views, frames, the dashboard, the CLI, workflow steps) is one of these.
STATUSES: tuple[str, ...] = tuple(status.value for status in JobStatus)
LIVE_STATUSES: tuple[str, ...] = tuple(s.value for s in JobStatus if not s.is_final)
FINAL_STATUSES: tuple[str, ...] = tuple(s.value for s in JobStatus if s.is_final)
#: Every status of a workflow run (the CHECK of table ``workflows``), running first.
WORKFLOW_STATUSES: tuple[str, ...] = ("running", "succeeded", "failed", "cancelled")


_UNSET: Any = object()

#: The columns a claim returns, in order (pgq_nb/sql/queries/core.sql, ``_claimed_columns``;
#: tests/test_claim_statement.py checks the two agree).
CLAIMED_FIELDS: tuple[str, ...] = (
    "id",
    "entrypoint",
    "payload",
    "priority",
    "attempts",
    "created",
    "execute_after",
    "dedupe_key",
    "workflow_id",
    "step_name",
    "step_index",
    "schedule_name",
    "fire_time",
    "tags",
    "meta",
    "trace_context",
    "snoozes",
    "concurrency_key",
    "use_cache",
    "map_source",
    "step_path",
)


@dataclasses.dataclass(kw_only=True, slots=True, eq=False)
class Job:
    """One claimed job, as a handler receives it (the same shape as PgQueuer's ``Job``).

    ``payload`` is the stored bytes; ``data`` is the payload decoded from JSON.
    """

    id: int
    entrypoint: str
    payload: bytes | None
    priority: int
    attempts: int
    created: dt.datetime
    execute_after: dt.datetime
    dedupe_key: str | None
    workflow_id: int | None = None
    step_name: str | None = None
    step_index: int | None = None
    schedule_name: str | None = None
    fire_time: dt.datetime | None = None
    #: the labels given at enqueue (``tags=``, ``meta=``): a list of str and a dict (None: none)
    tags: list[str] | None = None
    meta: dict[str, Any] | None = None
    #: the W3C traceparent recorded at enqueue (pgq_nb.tracing), None without tracing
    trace_context: str | None = None
    #: times this job snoozed (``raise pgq_nb.Snooze(...)``); an attempt is not used up by one
    snoozes: int = 0
    #: its entrypoint's ``concurrency_key`` value (at most ``max_per_key`` run at once)
    concurrency_key: str | None = None
    #: ``cache=False`` at enqueue: run even if a cached result exists (None: the entrypoint's)
    use_cache: bool | None = None
    #: a workflow step a ``map_over`` made at run time: the step whose result it came from,
    #: and its place (the source's place, then its row)
    map_source: int | None = None
    step_path: list[int] | None = None
    _data: Any = dataclasses.field(default=_UNSET, repr=False)
    _parents: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    #: a source of a wf.map_over: its result must be a list (pgq_nb.workflow_maps)
    _expands: bool = dataclasses.field(default=False, repr=False)
    #: shared objects of the queue (``q.resources``), for handlers
    resources: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    #: for ``transactional=True`` handlers: the transaction that records the completion
    tx: Any = dataclasses.field(default=None, repr=False)

    @classmethod
    def claimed(cls, row: Sequence[Any]) -> Job:
        """The job of a row of ``claim_jobs`` or ``finish_and_claim``, its columns in
        :data:`CLAIMED_FIELDS` order (by position: a third of the time of ``Job(**row)``,
        which reads an asyncpg record as a mapping, key by key)."""
        return cls(**dict(zip(CLAIMED_FIELDS, row, strict=True)))

    @property
    def data(self) -> Any:
        """The payload decoded from JSON (None for an empty payload)."""
        if self._data is _UNSET:
            self._data = decode_payload(self.payload, job_id=self.id)
        return self._data

    def _repr_html_(self) -> str:
        preview = self.payload[:200] if self.payload is not None else b""
        rows = [
            ("job", self.id),
            ("entrypoint", self.entrypoint),
            ("attempt", self.attempts),
            ("priority", self.priority),
            ("created", f"{self.created:%Y-%m-%d %H:%M:%S}"),
            ("payload", preview.decode("utf-8", "replace")),
            ("workflow step", self.step_name),
            ("schedule tick", self.fire_time),
        ]
        return _html_table(rows)

    def parent_results(self) -> dict[str, Any]:
        """For a workflow step: the results of the steps it depends on, by step name (a map
        step's results as a list in row order). Empty for a job with no parents."""
        return self._parents


@dataclasses.dataclass(kw_only=True, frozen=True)
class JobInfo:
    """A job looked up by id, live or finished."""

    id: int
    entrypoint: str
    status: JobStatus
    priority: int
    attempts: int
    payload: bytes | None
    dedupe_key: str | None
    result: Any
    error: str | None
    traceback: str | None
    errors: list[dict[str, Any]] | None
    worker_id: int | None
    created: dt.datetime
    execute_after: dt.datetime | None
    started: dt.datetime | None
    finished: dt.datetime | None
    workflow_id: int | None
    step_name: str | None
    schedule_name: str | None
    fire_time: dt.datetime | None

    @property
    def data(self) -> Any:
        """The payload decoded from JSON."""
        return decode_payload(self.payload, job_id=self.id)

    def _repr_html_(self) -> str:
        def when(value: dt.datetime | None) -> str | None:
            return None if value is None else f"{value:%Y-%m-%d %H:%M:%S}"

        error = (
            self.error
            if self.error is None or len(self.error) <= 300
            else (self.error[:300] + " ...")
        )
        rows = [
            ("job", self.id),
            ("entrypoint", self.entrypoint),
            ("status", self.status.value),
            ("attempts", self.attempts),
            ("created", when(self.created)),
            ("started", when(self.started)),
            ("finished", when(self.finished)),
            ("error", error),
        ]
        return _html_table(rows)


def _html_table(rows: list[tuple[str, object]]) -> str:
    """A two-column table of the rows whose value is not None, for static renders."""
    cells = "".join(
        f"<tr><th style='text-align:left'>{k}</th>"
        f"<td style='text-align:left;white-space:pre-wrap'>{html.escape(str(v))}</td></tr>"
        for k, v in rows
        if v is not None
    )
    return f"<table>{cells}</table>"


#: Default cut for an attempt's error message (``history.error``, ``errors[].error``).
ERROR_LIMIT = 10_000
#: Default cut for a traceback (``history.traceback``): deep recursion tracebacks are huge.
TRACEBACK_LIMIT = 100_000
#: Longest entrypoint (and schedule) name, in characters: it is a primary key and travels in
#: NOTIFY payloads (at most 8,000 bytes).
NAME_LIMIT = 200
#: Longest dedupe key, in bytes of UTF-8: it is a unique B-tree key (at most 2,704 bytes).
DEDUPE_KEY_LIMIT = 1_000

# NUL (Postgres text and jsonb cannot hold it) and lone UTF-16 surrogates (not UTF-8 encodable).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    return "\\x00" if char == "\x00" else "\ufffd"


def storable_text(text: str | None, limit: int = ERROR_LIMIT) -> str | None:
    """``text`` made storable in a Postgres ``text`` column, for errors and tracebacks.

    A NUL becomes the four visible characters ``\\x00``; a lone surrogate becomes U+FFFD;
    text longer than ``limit`` characters keeps its first ``limit`` characters and ends with
    a marker saying how many were cut. None stays None.
    """
    if text is None:
        return None
    if not isinstance(text, str):
        text = str(text)
    if _UNSTORABLE.search(text):
        text = _UNSTORABLE.sub(_visible, text)
    if len(text) > limit:
        cut = len(text) - limit
        text = f"{text[:limit]}\n... [{cut:,} more characters cut by pgq_nb]"
    return text


def check_text(name: str, value: object, *, limit: int = NAME_LIMIT, in_bytes: bool = False) -> str:
    """``value`` if it is a str Postgres can store and index: no NUL, no lone surrogate, at most
    ``limit`` characters (UTF-8 bytes with ``in_bytes``); else InvalidInputError."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{name} must be a str, not {type(value).__name__}")
    found = _UNSTORABLE.search(value)
    if found is not None:
        what = (
            "a NUL character (\\x00)"
            if found.group() == "\x00"
            else "a lone surrogate (not valid Unicode)"
        )
        raise InvalidInputError(
            f"{name} {_shown(value)} contains {what} at position {found.start()}, which "
            "Postgres text cannot hold; remove or replace it"
        )
    size = len(value.encode()) if in_bytes and len(value) * 4 > limit else len(value)
    if size > limit:
        unit = "bytes long in UTF-8" if in_bytes else "characters long"
        advice = (
            "use a hash of it, e.g. hashlib.sha256(key.encode()).hexdigest()"
            if in_bytes
            else "use a shorter name"
        )
        raise InvalidInputError(
            f"{name} {_shown(value)} is {size:,} {unit}; at most {limit:,} are allowed: {advice}"
        )
    return value


def _shown(value: str) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else f"{shown[:50]}...{shown[-6:]}"


def check_int(name: str, value: object, bits: int = 32) -> int:
    """``value`` if it is an int that fits a Postgres integer (or bigint), else
    InvalidInputError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{name} must be an int, not {type(value).__name__}")
    if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        raise InvalidInputError(f"{name}={value} is out of range (a {bits}-bit integer)")
    return value


def refuse_frame(payload: object, per_row: str) -> None:
    """PayloadError if ``payload`` is a pandas DataFrame or Series (told by its classes' names:
    the core never imports pandas), naming ``per_row``, the call that makes a job per row, with
    ``{rows}`` where the rows go."""
    for cls in type(payload).__mro__:
        if cls.__module__.split(".")[0] == "pandas" and cls.__name__ in ("DataFrame", "Series"):
            call = per_row.replace(
                "{rows}", "df" if cls.__name__ == "DataFrame" else "s.to_frame()"
            )
            raise PayloadError(
                f"the payload is a pandas {cls.__name__}; to make one job per row, use {call}; "
                "for one job, pass one row as a dict "
                "(row.to_dict())"
            )
