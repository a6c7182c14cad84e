"""Connection failures at query time: translated, and survived where that is safe.

A call that meets a server gone since ``connect()`` (``pgq-nb db stop``, a restart, a crash)
used to raise the driver's error: FileNotFoundError (the unix socket is gone),
ConnectionRefusedError, asyncpg's ConnectionDoesNotExistError or InterfaceError. Every public
coroutine of AsyncQueue and AsyncWorkflowRun now runs under :func:`guard_public_calls` (and
``wf.submit()`` under :func:`guarded`), which on such a failure (the exception path only):

- with the embedded server (a queue opened without a DSN), starts it again as ``connect()``
  does and runs the call once more, when that is safe: no connection could be opened and the
  call had taken none before (nothing of it reached the server), or the call is in
  :data:`RETRY_SAFE` (it reads, or running it twice changes nothing more);
- with a DSN, runs a call of :data:`RETRY_SAFE` once more on fresh connections when a
  connection broke (a server restarted under the pool), and otherwise raises
  DatabaseUnavailableError: the pool reconnects by itself once the server is back;
- never runs again a write that may have reached the server: its COMMIT may have been done,
  and running it again could enqueue a job twice. The error says so, and what to check.

Whatever is not retried, or fails again, becomes DatabaseUnavailableError saying what happened,
where (the DSN without its password) and what to do. A call given the caller's own connection
(``connection=``) keeps the caller's driver errors; workers keep their own handling
(``db.TRANSIENT_ERRORS``, retried with backoff). Whether a call has taken a connection yet is
recorded by the pools' ``setup`` (:func:`pgq_nb.db._note_acquire`).
"""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
import logging
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar, cast

import asyncpg

from pgq_nb import db, runtime
from pgq_nb.errors import DatabaseUnavailableError

logger = logging.getLogger("pgq_nb")

C = TypeVar("C", bound=type)
P = ParamSpec("P")
T = TypeVar("T")

#: Public coroutines that may run twice: they only read, or a second run changes nothing more
#: (pause, install, ...). Any other is a write, run again only if none of it reached the server.
RETRY_SAFE = frozenset(
    {
        # AsyncQueue: reads
        "counts", "failed", "failed_jobs", "flow", "get_job", "history", "jobs", "limits",
        "results", "schedule_list", "schedule_preview", "schedules", "stats", "statuses",
        "wait", "worker_list", "workers", "workflow_run", "workflows", "notebook_output",
        "notebook_runs",
        # AsyncQueue: writes that end in the same state however often they run
        "analyze", "install", "pause", "pause_schedule", "resume", "resume_schedule", "upgrade",
        # (a backfill fires only ticks not fired yet; an update sets the same values again)
        "backfill", "update_schedule",
        # (a retention policy is set to the same values again; retention_list, storage: reads)
        "retention", "retention_list", "storage",
        # AsyncWorkflowRun: reads (its retry() and cancel() are writes)
        "state", "steps", "status", "timeline",
    }
)  # fmt: skip

#: Public coroutines that write and may not be run twice: a lost reply leaves them undecided
#: (an enqueue may have committed). Every public coroutine is in RETRY_SAFE, WRITES or
#: UNGUARDED (tests/test_query_errors.py), so a new one gets a decision, not a default.
WRITES = frozenset(
    {
        # AsyncQueue
        "add_schedule", "cancel", "enqueue", "enqueue_df", "enqueue_notebook", "purge_history",
        "remove_schedule", "requeue_failed", "run_schedule_now", "uninstall",
        # AsyncWorkflowRun
        "retry",
    }
)  # fmt: skip

#: Public coroutines left alone: a worker has its own reconnect path and runs for long.
UNGUARDED = frozenset({"run_until_idle", "run_worker"})


class Failure(enum.Enum):
    """What a driver or OS error at query time says about the server."""

    DOWN = "down"
    """No connection could be opened: nothing of this attempt reached the server."""
    LOST = "lost"
    """A connection broke: what was sent on it may or may not have been done."""
    FULL = "full"
    """The server has no free connection slot."""
    LOGIN = "login"
    """The server refused the login (role, password, database)."""


_DOWN_ERRORS = (
    asyncpg.exceptions.CannotConnectNowError,  # 57P03: starting up or shutting down
    asyncpg.exceptions.ClientCannotConnectError,
    asyncpg.exceptions.ConnectionRejectionError,
)
_LOST_ERRORS = (
    ConnectionResetError,
    BrokenPipeError,
    ConnectionAbortedError,
    asyncpg.PostgresConnectionError,  # class 08: ConnectionDoesNotExistError ("closed in the
    # middle of operation"), ConnectionFailureError
    asyncpg.exceptions.AdminShutdownError,  # 57P01: a fast shutdown ended the session
    asyncpg.exceptions.CrashShutdownError,  # 57P02: another backend crashed
    # asyncpg 0.32 raises it when the server ends a connection mid-operation (db.TRANSIENT_ERRORS)
    asyncpg.exceptions.InternalClientError,
)
_LOGIN_ERRORS = (
    asyncpg.InvalidAuthorizationSpecificationError,  # 28000, and 28P01 (password)
    asyncpg.InvalidCatalogNameError,  # 3D000: no such database
)


def classify(exc: BaseException) -> Failure | None:
    """What ``exc`` says about the server, or None if it is no connection failure (a
    TimeoutError is q.wait's deadline, or a connect timeout: neither is translated)."""
    if isinstance(exc, TimeoutError):
        return None
    if isinstance(exc, _LOST_ERRORS):
        return Failure.LOST
    if isinstance(exc, (OSError, *_DOWN_ERRORS)):  # FileNotFoundError: the unix socket is gone
        return Failure.DOWN
    if isinstance(exc, asyncpg.exceptions.TooManyConnectionsError):
        return Failure.FULL
    if isinstance(exc, _LOGIN_ERRORS):
        return Failure.LOGIN
    # "connection is closed", "the underlying connection is closed": a connection known dead
    # (not its subclasses, such as DataError, which are the caller's mistakes)
    if type(exc) is asyncpg.InterfaceError and "closed" in str(exc):
        return Failure.LOST
    return None


def worth_retrying(failure: Failure, *, embedded: bool, retry_safe: bool, acquired: bool) -> bool:
    """Whether a call that failed so runs once more (after starting the embedded server):
    never a write that may have reached the server; a DOWN server only if it is the embedded
    one, which can be started; a LOST connection for a call that may run twice."""
    if failure is Failure.DOWN:
        return embedded and (retry_safe or not acquired)
    if failure is Failure.LOST:
        return retry_safe
    return False


def message(
    failure: Failure,
    exc: BaseException,
    *,
    dsn: str,
    what: str,
    embedded: bool,
    sent: bool = False,
    twice: bool = False,
) -> str:
    """The DatabaseUnavailableError of a call ``what`` that failed with ``exc``: ``sent``, part
    of it may have been done; ``twice``, it failed again when tried once more."""
    where = db.describe_dsn(dsn)
    error = f"{exc.__class__.__name__}: {exc}" + (
        "; and again when tried once more" if twice else ""
    )
    if failure is Failure.FULL:
        return f"Postgres at {where} has no free connection slot ({error}). " + (
            db.NO_FREE_SLOT_ADVICE
        )
    if failure is Failure.LOGIN:
        return (
            f"Postgres at {where} refused the connection during {what}: {error}. Check the "
            "user, password and database name in the DSN"
        )
    if failure is Failure.DOWN:
        happened = f"cannot reach Postgres at {where} during {what} ({error})"
    else:
        happened = f"the connection to Postgres at {where} broke during {what} ({error})"
    if embedded:
        todo = (
            "The embedded server is started again by the next call (or start it with "
            "`pgq-nb db start`; `pgq-nb db status` shows it, and its log is postgres.log in "
            "its home)"
        )
    else:
        todo = (
            "Check that the server is running and the DSN (PGQ_NB_DSN or connect(dsn=...)) is "
            "right (the embedded one: start it with `pgq-nb db start`); the queue reconnects "
            "by itself once the server is back"
        )
    if sent:
        todo = (
            "It may or may not have been done: look (q.get_job, q.jobs(), q.history()) before "
            "running it again. " + todo
        )
    return f"{happened}. {todo}"


async def _start_embedded(dsn: str, exc: BaseException, what: str) -> None:
    """Start the embedded server again (as ``connect()`` does); it must come back at ``dsn``,
    the address the queue's pool connects to."""
    from pgq_nb.embedded import EmbeddedServer

    logger.warning(
        f"{what}: the embedded Postgres at {db.describe_dsn(dsn)} is not reachable "
        f"({exc.__class__.__name__}: {exc}); starting it if needed and trying once more",
        extra={"error": exc.__class__.__name__},
    )
    now = await asyncio.to_thread(EmbeddedServer().ensure_running)
    if now != dsn:
        raise DatabaseUnavailableError(
            f"the embedded Postgres was started again at {db.describe_dsn(now)}, not at "
            f"{db.describe_dsn(dsn)} where this queue connects (its port, home or password "
            "changed): open the queue again with pgq_nb.connect()"
        )


Method = Callable[..., Coroutine[Any, Any, Any]]


def guarded(
    name: str,
) -> Callable[[Callable[P, Coroutine[Any, Any, T]]], Callable[P, Coroutine[Any, Any, T]]]:
    """The guard of :func:`guard_public_calls` for one coroutine method (named ``name`` in
    messages and in :data:`RETRY_SAFE`), such as the ``_submit`` behind both ``wf.submit()``s."""

    def decorate(
        method: Callable[P, Coroutine[Any, Any, T]],
    ) -> Callable[P, Coroutine[Any, Any, T]]:
        return cast("Callable[P, Coroutine[Any, Any, T]]", _guarded(name, method))

    return decorate


def _guarded(name: str, method: Method) -> Method:
    retry_safe = name in RETRY_SAFE
    signature = inspect.signature(method)

    @functools.wraps(method)
    async def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        if db.CALL.get() is not None:  # inside another public call: that one decides
            return await method(self, *args, **kwargs)
        call = db.Call()
        token = db.CALL.set(call)
        try:
            try:
                return await method(self, *args, **kwargs)
            except Exception as exc:
                failure = classify(exc)
                if failure is None:
                    raise
                if signature.bind(self, *args, **kwargs).arguments.get("connection") is not None:
                    raise  # the caller's own connection: the caller's errors
                first = exc
            store = self.store
            embedded = store.settings.dsn is None
            what = f"{name}()"
            if not worth_retrying(
                failure, embedded=embedded, retry_safe=retry_safe, acquired=call.acquired
            ):
                sent = not retry_safe and (call.acquired or failure is Failure.LOST)
                text = message(
                    failure, first, dsn=store.dsn, what=what, embedded=embedded, sent=sent
                )
                raise DatabaseUnavailableError(text) from None
            if embedded:
                await _start_embedded(store.dsn, first, what)
            if failure is Failure.LOST:  # the pool's other connections may be as dead
                await runtime.run_here(store.pool.expire_connections())
            call.acquired = False
            try:
                return await method(self, *args, **kwargs)
            except Exception as exc:
                again = classify(exc)
                if again is None:
                    raise
                sent = not retry_safe and (call.acquired or again is Failure.LOST)
                text = message(
                    again, exc, dsn=store.dsn, what=what, embedded=embedded, sent=sent, twice=True
                )
                raise DatabaseUnavailableError(text) from None
        finally:
            db.CALL.reset(token)

    return guarded


def guard_public_calls(cls: C) -> C:
    """Run every public coroutine of ``cls`` (a class with a ``store``; its mixins' included)
    under the translation and the one retry described above; :data:`UNGUARDED` excepted."""
    for name, member in inspect.getmembers(cls, inspect.iscoroutinefunction):
        if not name.startswith("_") and name not in UNGUARDED:
            setattr(cls, name, _guarded(name, member))
    return cls
