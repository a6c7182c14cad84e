"""The sync API (``Queue``), generated from the async one, and ``connect()``.

Every public coroutine of :class:`AsyncQueue` gets a blocking twin on :class:`Queue` through
:func:`runtime.blocking`, its plain methods through :func:`runtime.forwarded`, and ``connect``
is :func:`runtime.blocking_function` of ``aconnect``: every signature and docstring is written
once, on the async side. tests/test_facade_parity.py fails when a twin is missing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
from typing import Any

from pgq_nb import db, runtime, schema_install
from pgq_nb import worker_notices as notices
from pgq_nb.config import Settings
from pgq_nb.errors import PgqError
from pgq_nb.queue import AsyncQueue
from pgq_nb.resources import Resources
from pgq_nb.retry import RetryPolicy
from pgq_nb.transaction import AsyncTransaction, Transaction
from pgq_nb.worker import Worker, WorkerStats
from pgq_nb.workflow_build import Workflow
from pgq_nb.workflow_run import WorkflowRun


class WorkerHandle:
    """A worker running in the background of this process (see ``Queue.start_worker``)."""

    def __init__(self, worker: Worker, future: Any, arguments: tuple[Any, ...] = ()) -> None:
        self.worker = worker
        self._future = future
        self.arguments = arguments  # what start_worker was given (see Queue.start_worker)
        self.started = dt.datetime.now(dt.UTC)

    @property
    def running(self) -> bool:
        return not self._future.done()

    @property
    def stats(self) -> WorkerStats:
        return self.worker.stats

    def stop(self, timeout: float | None = None) -> WorkerStats:
        """Stop claiming, let running jobs finish (within the grace period), and wait."""
        runtime.loop().call_soon_threadsafe(self.worker.request_stop)
        stats: WorkerStats = self._future.result(timeout=timeout)
        runtime.run_sync(notices.tell_rest(self.worker.failures), "stop()")
        return stats

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<WorkerHandle {state} {self.worker.stats}>"


#: Every background worker start_worker() started in this process (of any Queue), oldest first.
_BACKGROUND: list[WorkerHandle] = []


class Queue:
    """A pgq_nb queue, for notebooks and scripts: every method blocks until it is done.

    ``q.aio`` has the same methods as coroutines for async code.
    """

    def __init__(self, aio: AsyncQueue) -> None:
        self.aio = aio
        self._background: list[WorkerHandle] = []  # started by start_worker, oldest first

    @property
    def schema(self) -> str:
        return self.aio.schema

    entrypoint = runtime.forwarded(AsyncQueue.entrypoint)
    resource = runtime.forwarded(AsyncQueue.resource)
    schedule = runtime.forwarded(AsyncQueue.schedule)
    on = runtime.forwarded(AsyncQueue.on)
    enqueue = runtime.blocking(AsyncQueue.enqueue)
    get_job = runtime.blocking(AsyncQueue.get_job)
    statuses = runtime.blocking(AsyncQueue.statuses)
    counts = runtime.blocking(AsyncQueue.counts)
    worker_list = runtime.blocking(AsyncQueue.worker_list)
    wait = runtime.blocking(AsyncQueue.wait)
    cancel = runtime.blocking(AsyncQueue.cancel)
    failed_jobs = runtime.blocking(AsyncQueue.failed_jobs)
    enqueue_df = runtime.blocking(AsyncQueue.enqueue_df)
    jobs = runtime.blocking(AsyncQueue.jobs)
    stats = runtime.blocking(AsyncQueue.stats)
    history = runtime.blocking(AsyncQueue.history)
    results = runtime.blocking(AsyncQueue.results)
    failed = runtime.blocking(AsyncQueue.failed)
    purge_history = runtime.blocking(AsyncQueue.purge_history)
    retention = runtime.blocking(AsyncQueue.retention)
    retention_list = runtime.blocking(AsyncQueue.retention_list)
    storage = runtime.blocking(AsyncQueue.storage)
    workflows = runtime.blocking(AsyncQueue.workflows)
    workers = runtime.blocking(AsyncQueue.workers)
    limits = runtime.blocking(AsyncQueue.limits)
    schedules = runtime.blocking(AsyncQueue.schedules)
    schedule_list = runtime.blocking(AsyncQueue.schedule_list)
    pause_schedule = runtime.blocking(AsyncQueue.pause_schedule)
    resume_schedule = runtime.blocking(AsyncQueue.resume_schedule)
    run_schedule_now = runtime.blocking(AsyncQueue.run_schedule_now)
    add_schedule = runtime.blocking(AsyncQueue.add_schedule)
    update_schedule = runtime.blocking(AsyncQueue.update_schedule)
    remove_schedule = runtime.blocking(AsyncQueue.remove_schedule)
    backfill = runtime.blocking(AsyncQueue.backfill)
    schedule_preview = runtime.blocking(AsyncQueue.schedule_preview)
    requeue_failed = runtime.blocking(AsyncQueue.requeue_failed)
    pause = runtime.blocking(AsyncQueue.pause)
    resume = runtime.blocking(AsyncQueue.resume)
    flow = runtime.blocking(AsyncQueue.flow)
    install = runtime.blocking(AsyncQueue.install)
    upgrade = runtime.blocking(AsyncQueue.upgrade)
    uninstall = runtime.blocking(AsyncQueue.uninstall)
    analyze = runtime.blocking(AsyncQueue.analyze)
    run_until_idle = runtime.blocking(AsyncQueue.run_until_idle)
    run_worker = runtime.blocking(AsyncQueue.run_worker)
    workflow_run = runtime.blocking(AsyncQueue.workflow_run, WorkflowRun)
    enqueue_notebook = runtime.blocking(AsyncQueue.enqueue_notebook)
    serve_notebooks = runtime.forwarded(AsyncQueue.serve_notebooks)
    notebook_output = runtime.blocking(AsyncQueue.notebook_output)
    notebook_runs = runtime.blocking(AsyncQueue.notebook_runs)

    def start_worker(
        self,
        *,
        concurrency: int | None = None,
        entrypoints: list[str] | None = None,
        grace_period: float = 30.0,
        processes: int | bool | None = None,
        dask: Any = None,
    ) -> WorkerHandle:
        """Run a worker in the background of this process; returns a handle with ``.stop()``.

        Cells keep running while it works; it stops when the kernel does. Without
        ``entrypoints=`` it serves the registry as it grows, and may start before the first
        handler is defined: a handler or schedule defined in a later cell is registered and
        served within a second, and a re-defined handler's new body is used (with
        ``entrypoints=``: those only, which must be defined already).

        Called again while a background worker it started with the same arguments runs (a
        re-run cell), it returns that worker rather than start a second, which would never be
        needed: the running one already serves what was defined since. With other arguments
        it starts one more. Either way it says so in one line (``WorkerAlreadyRunning``);
        :meth:`background_workers` lists the running ones, to stop one whose handle is lost.

        It warns, in one line (see :mod:`pgq_nb.worker_notices`), of queued jobs no handler
        here and no live worker serves (``JobsWithoutHandler``, when it starts), and of jobs
        that failed for good (``JobsFailed``, a second after a failure).
        ``processes=N`` (``True``: one per core) runs plain ``def`` handlers in N processes,
        as for ``run_until_idle``; ``dask=client`` (a ``distributed.Client``) runs them on its
        Dask cluster's workers.
        """
        chosen = None if entrypoints is None else [*entrypoints]
        where = None if dask is None else id(dask)  # (the same client: the same worker)
        arguments = (concurrency, chosen, grace_period, processes, where)
        self._replace_earlier_queues_workers()
        running = self.background_workers()
        for handle in running:
            if handle.arguments == arguments:
                notices.say(notices.WorkerAlreadyRunning(_already(handle, returned=True)))
                return handle
        worker = Worker(
            self.aio,
            concurrency=concurrency,
            entrypoints=entrypoints,
            grace_period=grace_period,
            waits_for_handlers=True,
            processes=processes,
            dask=dask,
        )
        notices.tell_failed_in_background(worker.failures)
        self.aio.background_failures.append(worker.failures)  # told by q.wait() too
        if running:
            line = _already(running[0], returned=False, others=len(running))
            notices.say(notices.WorkerAlreadyRunning(line))
        if not runtime.in_loop_thread():  # (from the loop, waiting for the count would deadlock)
            runtime.run_sync(
                notices.tell_unserved(
                    self.aio.store, self.aio.registry, None, serves_new=entrypoints is None
                )
            )
        future = asyncio.run_coroutine_threadsafe(worker.run(), runtime.loop())
        handle = WorkerHandle(worker, future, arguments)
        self._background.append(handle)
        _BACKGROUND.append(handle)
        return handle

    def _replace_earlier_queues_workers(self) -> None:
        """Stop (without waiting) the background workers that an earlier Queue of this DSN and
        schema started in this process and that serve some of the same handlers, or any when
        this queue has none yet: ``pgq_nb.connect()`` was run again (a re-run notebook), and
        that worker would go on running the old bodies next to this one. A worker of another
        queue with other handlers is someone's deliberate second queue, and is left alone."""
        _BACKGROUND[:] = [h for h in _BACKGROUND if h.running]
        mine = set(self.aio.registry.handlers)
        for handle in list(_BACKGROUND):
            worker = handle.worker
            if (
                worker.registry is self.aio.registry
                or worker.store.dsn != self.aio.dsn
                or worker.store.settings.schema != self.schema
                or (mine and not mine & set(worker.registry.handlers))
            ):
                continue
            runtime.loop().call_soon_threadsafe(worker.request_stop)
            settings = notices.worker_settings(handle.worker.concurrency, handle.arguments[1])
            started = handle.started.strftime("%H:%M:%S UTC")
            running = len(worker._running)  # read from this thread: a count, a moment old
            notices.say(
                notices.WorkerAlreadyRunning(notices.replaced_message(started, settings, running))
            )

    def background_workers(self) -> list[WorkerHandle]:
        """The workers :meth:`start_worker` started from this queue that still run, oldest
        first: ``q.background_workers()[0].stop()`` stops one whose handle is lost."""
        self._background = [h for h in self._background if h.running]
        self.aio.background_failures[:] = [h.worker.failures for h in self._background]
        return list(self._background)

    @property
    def resources(self) -> Resources:
        """Shared objects for handlers (``job.resources``); see :mod:`pgq_nb.resources`."""
        return self.aio.resources

    def transaction(self) -> Transaction:
        """``with q.transaction() as tx:`` — your SQL, jobs, frames and workflows commit
        together, or not at all."""
        return Transaction(AsyncTransaction(self.aio.store, self.aio.registry))

    def workflow(self, name: str) -> Workflow:
        """Start building a workflow (a DAG of jobs): ``wf.step()``, ``wf.map()``,
        ``wf.submit()``."""
        return Workflow(self.aio.store, self.aio.registry, name)

    def dashboard(self, refresh: float | dt.timedelta = 2.0) -> Any:
        """A live ipywidgets dashboard: overview, failures (with requeue buttons), schedules
        and workflows. It refreshes itself from the pgq_nb loop thread every ``refresh``
        seconds while other cells run; ``dash.stop()`` (or closing it) ends that."""
        from pgq_nb.notebook.dashboard import dashboard

        return dashboard(self, refresh=refresh)

    def plot_throughput(self, since: str | dt.timedelta = "1h") -> Any:
        """A matplotlib figure of finished jobs per minute, by status, over ``since``."""
        from pgq_nb.notebook.charts import plot_throughput

        return plot_throughput(self, since=since)

    def _repr_html_(self) -> str:
        title = f"<b>pgq_nb queue</b> (schema {html.escape(self.schema)})"
        try:
            counts = self.counts()
        except (PgqError, OSError) as exc:  # a static render must not raise
            return f"{title}: unavailable ({html.escape(str(exc))})"
        pivot: dict[str, dict[str, int]] = {}
        for entrypoint, status, n in counts:
            pivot.setdefault(entrypoint, {})[status] = n
        from pgq_nb.notebook.dashboard_html import counts_table

        table: str = counts_table(pivot)
        return title + table

    def __repr__(self) -> str:
        return f"<pgq_nb.Queue {db.describe_dsn(self.aio.dsn)} schema={self.schema!r}>"


def _already(handle: WorkerHandle, *, returned: bool, others: int = 1) -> str:
    """The WorkerAlreadyRunning line about the running ``handle``."""
    settings = notices.worker_settings(handle.worker.concurrency, handle.arguments[1])
    started = handle.started.strftime("%H:%M:%S UTC")
    return notices.already_running_message(settings, started, returned=returned, others=others)


async def resolve_dsn(settings: Settings) -> str:
    """The configured DSN, or the embedded server's (started if needed)."""
    if settings.dsn is not None:
        return settings.dsn
    from pgq_nb.embedded import EmbeddedServer

    return await asyncio.to_thread(EmbeddedServer().ensure_running)


async def _open(settings: Settings, install: bool, retry: RetryPolicy | None) -> AsyncQueue:
    dsn = await resolve_dsn(settings)
    pool = await db.get_pool(dsn)
    if install:
        await schema_install.install(pool, settings.schema)
    else:
        await schema_install.require_installed(pool, settings.schema)
    return AsyncQueue(pool, dsn, settings, retry)


async def aconnect(
    dsn: str | None = None,
    *,
    schema: str | None = None,
    install: bool = True,
    retry: RetryPolicy | None = None,
    heartbeat_interval: float | None = None,
    heartbeat_timeout: float | None = None,
    poll_interval: float | None = None,
) -> AsyncQueue:
    """Open a queue: ``q = pgq_nb.connect()`` returns a :class:`Queue`, ``await
    pgq_nb.aconnect()`` its async form (an :class:`AsyncQueue`, ``q.aio``). With no ``dsn`` and
    no ``PGQ_NB_DSN``, starts (or reuses) the embedded Postgres. ``install`` creates or
    upgrades the schema if needed. ``retry`` is the default RetryPolicy of its entrypoints
    (3 attempts, 1 s then 2 s apart, unless given).

    Calling it again (re-running a cell) reuses the same pool and loop thread.
    """
    settings = Settings.from_env(
        dsn=dsn,
        schema=schema,
        heartbeat_interval=heartbeat_interval,
        heartbeat_timeout=heartbeat_timeout,
        poll_interval=poll_interval,
    )
    return await runtime.run_here(_open(settings, install, retry))


connect = runtime.blocking_function(aconnect, Queue, "connect")
