"""What a worker in a notebook tells its user, in one line each, as warnings.

``q.run_until_idle()`` and ``q.start_worker()`` are the notebook's workers, and their user
reads the cell's output, not a log (``pgq_nb`` logs to a NullHandler unless the application
configures logging). So they say two things there, as :class:`WorkerWarning`\\ s (shown under
the cell, and on stderr in a terminal; ``warnings.simplefilter("ignore", WorkerWarning)``
silences them):

- :class:`JobsWithoutHandler`: queued jobs that nobody can run, because their entrypoint has
  no handler in this process (the kernel was restarted and the cell defining the handler was
  not run again), is not paused, and no live worker serves it. ``run_until_idle`` says it
  when it stops (counting jobs due within its ``wait_for_scheduled``), ``start_worker`` when
  it starts (counting every queued one);
- :class:`JobsFailed`: jobs this worker failed for good, with the first error of each
  entrypoint, and where to look (``q.failed()``). ``run_until_idle`` says it when it stops;
  a background worker a second after a failure (the failures of that second together), and
  its ``stop()`` what is left;
- :class:`WorkerAlreadyRunning`: ``start_worker`` was called while a background worker it
  started from the same queue still runs (a re-run cell): with the same arguments it returns
  that worker, otherwise it starts one more, and says how to stop the other.

Each is said once per call, every call: they bypass the warnings registry, which would
otherwise show the same text only once per place. ``pgq-nb worker`` processes say neither:
they log every failure.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from pgq_nb import db

if TYPE_CHECKING:
    from pgq_nb.registry import Registry
    from pgq_nb.store import Store

logger = logging.getLogger("pgq_nb.worker")

#: How many entrypoints a line names before "and N more".
NAMED = 3
#: The most characters of an error a line shows.
ERROR_CHARS = 100
#: A background worker gathers the failures of this many seconds into one line.
GATHER_S = 1.0


class WorkerWarning(UserWarning):
    """Something a notebook's worker (``run_until_idle``, ``start_worker``) tells its user."""


class JobsWithoutHandler(WorkerWarning):
    """Queued jobs that no handler here and no live worker can run."""

    def __init__(self, message: str, waiting: dict[str, int]) -> None:
        super().__init__(message)
        #: entrypoint -> queued jobs of it
        self.waiting = waiting


class JobsPaused(WorkerWarning):
    """Queued jobs of paused entrypoints that ``run_until_idle()`` left waiting."""

    def __init__(self, message: str, waiting: dict[str, int]) -> None:
        super().__init__(message)
        #: entrypoint -> queued jobs of it
        self.waiting = waiting


class JobsFailed(WorkerWarning):
    """Jobs this worker failed for good."""

    def __init__(self, message: str, failed: dict[str, tuple[int, str]]) -> None:
        super().__init__(message)
        #: entrypoint -> (jobs that failed for good, the first one's error)
        self.failed = failed


class WorkerAlreadyRunning(WorkerWarning):
    """start_worker() while a background worker started from the same queue still runs."""


def say(warning: WorkerWarning) -> None:
    """Warn ``warning`` once, even if the same text was said before (a fresh registry)."""
    warnings.warn_explicit(warning, type(warning), "pgq_nb", 0, module="pgq_nb", registry={})


def _jobs(n: int) -> str:
    return f"{n} job" if n == 1 else f"{n} jobs"


def _more(total: int) -> str:
    return f", and {total - NAMED} more" if total > NAMED else ""


# -- jobs without a handler --------------------------------------------------------------------


async def unserved(store: Store, registry: Registry, horizon: float | None) -> dict[str, int]:
    """Queued jobs (due within ``horizon`` seconds; None: whenever) of entrypoints without a
    handler here, not paused and served by no live worker: entrypoint -> jobs."""
    rows = await store.pool.fetch(
        store.queries["unserved_jobs"],
        sorted(registry.handlers),
        horizon,
        store.settings.heartbeat_timeout,
    )
    return {r["entrypoint"]: r["jobs"] for r in rows}


def unserved_message(waiting: Mapping[str, int], *, serves_new: bool | None) -> str:
    """The line of :class:`JobsWithoutHandler`. ``serves_new``: None from run_until_idle;
    from start_worker, whether that worker serves handlers defined after it started."""
    names = sorted(waiting)
    listed = ", ".join(f"{n!r} ({waiting[n]})" for n in names[:NAMED]) + _more(len(names))
    total = sum(waiting.values())
    one = len(names) == 1
    jobs = "1 queued job cannot run" if total == 1 else f"{total} queued jobs cannot run"
    whose = "its entrypoint" if total == 1 else "their entrypoint" if one else "their entrypoints"
    handler = "the handler" if one else "the handlers"
    if serves_new is None:
        start, then = "run_until_idle() stopped, but ", "then call run_until_idle() again"
    elif serves_new:
        start, then = (
            "",
            f"and this worker runs their jobs as soon as {'it is' if one else 'they are'} defined",
        )
    else:
        start, then = "", "then start a worker for them (this one serves only its entrypoints=)"
    return (
        f"{start}{jobs}: no handler in this process and no live worker serves {whose}: "
        f"{listed}; define {handler} with @q.entrypoint({names[0]!r}) here (in a notebook: run "
        f"the cell that defines it), {then}"
    )


async def tell_unserved(
    store: Store, registry: Registry, horizon: float | None, *, serves_new: bool | None
) -> None:
    """Say :class:`JobsWithoutHandler` if there are such jobs (a lost connection: nothing)."""
    try:
        waiting = await unserved(store, registry, horizon)
    except db.TRANSIENT_ERRORS as exc:
        logger.warning("could not count jobs without a handler", extra={"error": str(exc)})
        return
    if waiting:
        say(JobsWithoutHandler(unserved_message(waiting, serves_new=serves_new), waiting))


# -- jobs of paused entrypoints ----------------------------------------------------------------


def paused_message(waiting: Mapping[str, int]) -> str:
    """The line of :class:`JobsPaused`."""
    names = sorted(waiting)
    listed = ", ".join(f"{n!r} ({waiting[n]})" for n in names[:NAMED]) + _more(len(names))
    total = sum(waiting.values())
    jobs = "1 queued job" if total == 1 else f"{total} queued jobs"
    which = "a paused entrypoint" if len(names) == 1 else "paused entrypoints"
    return (
        f"run_until_idle() stopped, but {jobs} of {which} wait: {listed}; "
        f"q.resume({names[0]!r}) lets them run, then call run_until_idle() again"
    )


async def tell_paused(store: Store, names: list[str], horizon: float | None) -> None:
    """Say :class:`JobsPaused` if ``names`` have queued jobs waiting for a resume."""
    try:
        rows = await store.pool.fetch(store.queries["paused_jobs"], names, horizon)
    except db.TRANSIENT_ERRORS as exc:
        logger.warning("could not count jobs of paused entrypoints", extra={"error": str(exc)})
        return
    if rows:
        waiting = {r["entrypoint"]: r["jobs"] for r in rows}
        say(JobsPaused(paused_message(waiting), waiting))


# -- jobs that failed for good -------------------------------------------------------------


class Failures:
    """The jobs a worker failed for good and has not told of yet: by entrypoint, how many
    and the first error. ``listener`` (if set) is called after each :meth:`add`."""

    def __init__(self) -> None:
        self.untold: dict[str, tuple[int, str]] = {}
        self.listener: Callable[[], None] | None = None

    def add(self, entrypoint: str, error: str) -> None:
        count, first = self.untold.get(entrypoint, (0, error))
        self.untold[entrypoint] = (count + 1, first)
        if self.listener is not None:
            self.listener()

    def take(self) -> dict[str, tuple[int, str]]:
        taken, self.untold = self.untold, {}
        return taken


def _error(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "(no message)"
    return line if len(line) <= ERROR_CHARS else line[: ERROR_CHARS - 1] + "…"


def failed_message(failed: Mapping[str, tuple[int, str]], *, background: bool = False) -> str:
    """The line of :class:`JobsFailed`: how many, of which entrypoints, the first error of
    each, and where to look."""
    names = sorted(failed, key=lambda n: (-failed[n][0], n))
    total = sum(count for count, _ in failed.values())
    who = "the background worker: " if background else ""
    if len(names) == 1:
        name = names[0]
        return (
            f"{who}{_jobs(total)} of {name!r} failed for good ({_error(failed[name][1])}); "
            f"see q.failed({name!r})"
        )
    listed = ", ".join(
        f"{failed[n][0]} of {n!r} ({_error(failed[n][1])})" for n in names[:NAMED]
    ) + _more(len(names))
    return f"{who}{_jobs(total)} failed for good: {listed}; see q.failed()"


def tell_failed(failures: Failures, *, background: bool = False) -> None:
    """Say :class:`JobsFailed` for the failures not told yet, if any."""
    failed = failures.take()
    if failed:
        say(JobsFailed(failed_message(failed, background=background), failed))


def tell_failed_in_background(failures: Failures, gather: float = GATHER_S) -> None:
    """Have a background worker say its failures ``gather`` seconds after the first of them
    (one line for the failures of that while). ``add`` runs on the pgq_nb loop."""
    pending: list[asyncio.TimerHandle] = []

    def tell() -> None:
        pending.clear()
        tell_failed(failures, background=True)

    def added() -> None:
        if not pending:
            pending.append(asyncio.get_running_loop().call_later(gather, tell))

    failures.listener = added


async def tell_rest(failures: Failures) -> None:
    """At a background worker's stop: say the failures not told yet (on the loop, so never
    twice with the timer of :func:`tell_failed_in_background`)."""
    tell_failed(failures, background=True)


# -- a background worker already running -----------------------------------------------------


def worker_settings(concurrency: int, entrypoints: list[str] | None) -> str:
    """How a line names a background worker: its concurrency and what it serves."""
    serves = "every handler" if entrypoints is None else f"entrypoints={entrypoints!r}"
    return f"concurrency={concurrency}, {serves}"


def already_running_message(settings: str, started: str, *, returned: bool, others: int) -> str:
    """The line of :class:`WorkerAlreadyRunning` about a running worker (the oldest, if
    several). ``returned``: start_worker returned it (same arguments); else it started one
    more, next to ``others`` running."""
    if returned:
        return (
            f"a background worker of this queue is already running (started {started}, "
            f"{settings}); start_worker() returned it rather than start a second: it already "
            "runs handlers defined since, and their new bodies; to restart it, call its "
            ".stop() first"
        )
    running = "1 other background worker" if others == 1 else f"{others} other background workers"
    oldest = "" if others == 1 else "the oldest "
    return (
        f"{running} of this queue still running ({oldest}started {started}, {settings}), "
        "next to the one just started; if the new one replaces it, stop it: "
        "q.background_workers()[0].stop() (they are listed oldest first)"
    )


def replaced_message(started: str, settings: str, running: int) -> str:
    """The line of :class:`WorkerAlreadyRunning` when start_worker() stopped a background
    worker of an earlier queue of this schema (``pgq_nb.connect()`` run again)."""
    jobs = "" if not running else f"; it finishes its {_jobs(running)} running first"
    return (
        f"stopped the background worker started {started} ({settings}) from an earlier "
        "pgq_nb.connect() to this schema: it ran that queue's handlers, with the bodies they "
        f"had then, and this worker runs this queue's{jobs}"
    )


def no_handlers_message(waiting: Mapping[str, int]) -> str:
    """The UnknownEntrypointError of run_until_idle() without any handler here: the queued
    jobs that wait for one, if any."""
    base = "this queue has no handlers in this process"
    if not waiting:
        return f"{base}; register one with @q.entrypoint('name') before starting a worker"
    names = sorted(waiting)
    listed = ", ".join(f"{n!r} ({waiting[n]})" for n in names[:NAMED]) + _more(len(names))
    handler = "the handler" if len(names) == 1 else "the handlers"
    return (
        f"{base}, and {_jobs(sum(waiting.values()))} wait for one: {listed}; define {handler} "
        f"with @q.entrypoint({names[0]!r}) here (in a notebook: run the cell that defines it), "
        "then call run_until_idle() again"
    )
