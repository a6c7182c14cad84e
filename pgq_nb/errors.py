"""Every error pgq_nb raises, under one root.

    PgqError
    ├── ConfigurationError        a setting, schema name or DSN that cannot be used
    ├── DatabaseUnavailableError  the server cannot be reached (names host and port)
    ├── EmbeddedServerError       the embedded Postgres cannot be set up, started or stopped
    ├── SchemaError               the pgq_nb schema is missing, or newer than this code
    ├── InvalidInputError         bad arguments; also a ValueError
    │   ├── UnknownEntrypointError    no handler is registered for an entrypoint
    │   ├── PayloadError              a payload that is neither bytes nor JSON-serialisable
    │   │   └── UncacheablePayloadError   a cached entrypoint's payload that is not plain JSON
    │   ├── DuplicateJobError         a dedupe_key that matches a queued or running job
    │   ├── UnstorableResultError     a handler's result that cannot be stored (fails its job)
    │   └── UnpicklableHandlerError   a handler that cannot be sent to a process
    ├── BlockingCallError         a blocking (sync) method called from the pgq_nb event-loop thread
    ├── HandlerExitError          a handler raised SystemExit or KeyboardInterrupt (fails its job)
    ├── JobTimeoutError           an attempt ran past its entrypoint's timeout; also a TimeoutError
    ├── NotebookCellError         a cell of a notebook job raised (fails its attempt)
    ├── MemoryLimitExceeded       an attempt in a process went over its memory_limit; a MemoryError
    ├── HandlerProcessDied        the process running an attempt ended (a segfault, os._exit)
    └── JobNotFoundError          no job with that id

Every message says what went wrong and what to do about it. Failures to connect are translated
in :mod:`pgq_nb.db` (``translate_errors``, and the retrying connect); connection failures of a
public call later, in :mod:`pgq_nb.query_errors`; errors a worker meets later are sorted in
:mod:`pgq_nb.db`, into transient ones (``db.TRANSIENT_ERRORS``, retried) and the rest.
Two helpers build parts of messages: :func:`article` ("an Interval") and :func:`did_you_mean`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

#: Words that start with a vowel letter but a consonant sound: "a UUID", "a uint8", "a Unicode".
_CONSONANT_SOUNDS = ("uu", "uni", "uint", "use", "usu", "uti", "eu", "one")
#: Words that start with a consonant letter but a vowel sound: "an ndarray", "an hour".
_VOWEL_SOUNDS = ("nd", "hour", "honest")


def article(word: str) -> str:
    """``word`` after "a" or "an", as it is said: "an Interval", "an int", "a str", "a UUID"."""
    lower = word.lower()
    vowel = lower[:1] in tuple("aeiou") and not lower.startswith(_CONSONANT_SOUNDS)
    return f"{'an' if vowel or lower.startswith(_VOWEL_SOUNDS) else 'a'} {word}"


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x' or 'y'?)`` with the known names closest to ``name`` (case does not
    count), or "" when none is close: for the end of an "unknown name" message."""
    by_lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=3)
    return f" (did you mean {' or '.join(repr(by_lower[c]) for c in close)}?)" if close else ""


class PgqError(Exception):
    """Root of every pgq_nb error."""


class ConfigurationError(PgqError):
    """A setting, schema name or DSN that cannot be used."""


class DatabaseUnavailableError(PgqError):
    """The Postgres server cannot be reached or refused the connection."""


class EmbeddedServerError(PgqError):
    """The embedded Postgres server cannot be initialised, started or stopped."""


class SchemaError(PgqError):
    """The pgq_nb schema is missing, incomplete, or newer than this version of pgq_nb."""


class InvalidInputError(PgqError, ValueError):
    """An argument pgq_nb cannot accept; nothing was written."""


class UnknownEntrypointError(InvalidInputError):
    """No handler is registered for the entrypoint, here or by any worker."""


class PayloadError(InvalidInputError):
    """A payload that is neither bytes nor JSON-serialisable."""


class UncacheablePayloadError(PayloadError):
    """A payload of an entrypoint with ``cache=True`` that is not deterministic JSON (raw bytes
    that are not JSON, a repeated key, NaN): refused at enqueue where the handler is known,
    else its job fails for good on its first attempt (see :mod:`pgq_nb.caching`)."""


class DuplicateJobError(InvalidInputError):
    """A job with the same dedupe_key is already queued or running."""

    def __init__(self, message: str, *, dedupe_key: str, existing_id: int | None) -> None:
        super().__init__(message)
        self.dedupe_key = dedupe_key
        self.existing_id = existing_id


class UnstorableResultError(InvalidInputError):
    """A handler returned a value that cannot be stored as its job's result; the job fails at
    once (running it again would return the same value)."""


class MapSourceError(PgqError, TypeError):
    """The parent step of a ``wf.map_over`` returned something other than a list or a
    DataFrame: the step fails at once (running it again would return the same kind of value)
    and the steps waiting on the map end upstream_failed."""


class HandlerExitError(PgqError, RuntimeError):
    """A handler raised SystemExit or KeyboardInterrupt (``sys.exit()`` in job code, say): the
    attempt fails like any other error; the worker goes on."""


class JobTimeoutError(PgqError, TimeoutError):
    """An attempt ran longer than its entrypoint's timeout (a failure like any other)."""


class NotebookCellError(PgqError, RuntimeError):
    """A cell of a notebook run as a job raised (or its kernel died): the attempt fails, and is
    retried per the runner's RetryPolicy. ``cell`` is its 1-based number in the notebook as
    enqueued; the kernel's traceback is attached as a note."""

    def __init__(self, message: str, *, cell: int, ename: str, evalue: str) -> None:
        super().__init__(message)
        self.cell = cell
        self.ename = ename
        self.evalue = evalue

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_cell_error, (str(self), self.cell, self.ename, self.evalue)


def _rebuild_cell_error(message: str, cell: int, ename: str, evalue: str) -> NotebookCellError:
    return NotebookCellError(message, cell=cell, ename=ename, evalue=evalue)


class UnpicklableHandlerError(InvalidInputError):
    """A handler to run in a process (``executor="process"``, ``processes=N``) that cannot be
    pickled to be sent there; nothing was claimed."""


class MemoryLimitExceeded(PgqError, MemoryError):
    """An attempt run in a process needed more memory than its entrypoint's ``memory_limit``;
    the attempt fails (retried per the policy), the worker and the other jobs go on.

    ``limit`` and ``peak`` are in bytes (``peak``: the attempt's peak resident memory)."""

    def __init__(self, message: str, *, limit: int | None = None, peak: int | None = None):
        super().__init__(message)
        self.limit = limit
        self.peak = peak

    def __reduce__(self) -> tuple[object, ...]:  # crosses from the process that ran the job
        return (type(self), self.args, self.__dict__)


class HandlerProcessDied(PgqError, RuntimeError):
    """The process running an attempt ended before the handler returned (a segfault, os._exit,
    killed from outside): that attempt is lost and retried per the policy; a new process takes
    its place."""


class DaskWorkerLost(HandlerProcessDied):
    """The Dask worker running an attempt was lost (``KilledWorker``: killed, or ended by its
    nanny) or the cluster dropped its task: the attempt is retried per the policy."""


class BlockingCallError(PgqError, RuntimeError):
    """A blocking method was called from inside the pgq_nb event loop, where it would deadlock."""


class JobNotFoundError(PgqError, LookupError):
    """No job with that id exists in the queue or in history."""
