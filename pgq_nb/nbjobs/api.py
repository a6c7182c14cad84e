"""The queue's notebook methods (a mixin of AsyncQueue): enqueue a notebook, serve notebooks
on a worker, read their runs and outputs."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from pgq_nb import enqueue, labels, runtime
from pgq_nb.enqueue import Dedupe
from pgq_nb.errors import InvalidInputError, UnknownEntrypointError
from pgq_nb.models import check_int
from pgq_nb.nbjobs.content import ENTRYPOINT, notebook_job_payload
from pgq_nb.nbjobs.output import NotebookOutput, from_row
from pgq_nb.retry import RetryPolicy
from pgq_nb.view_limits import DefaultLimit

if TYPE_CHECKING:
    import pandas as pd

    from pgq_nb.models import JobInfo
    from pgq_nb.registry import Registry
    from pgq_nb.store import Store

#: ``q.notebook_runs()`` returns at most this many runs unless ``limit=`` says otherwise (and
#: warns ViewTruncated when that leaves runs out).
RUNS_LIMIT = DefaultLimit(1_000)

NOT_SERVED = (
    "no worker serves notebooks: call q.serve_notebooks() in this process (then "
    "q.run_until_idle() or q.start_worker() runs them here), or start workers with "
    "`pgq-nb worker app:q --notebooks`; a worker that serves notebooks runs the code of every "
    "notebook enqueued, so only opt in where that is meant"
)


async def check_served(registry: Registry, conn: Any) -> None:
    """UnknownEntrypointError saying how to opt in, unless some worker (or this process) serves
    notebooks."""
    try:
        await registry.prepare({ENTRYPOINT}, conn)
    except UnknownEntrypointError:
        raise UnknownEntrypointError(NOT_SERVED) from None


class NotebookMethods:
    """Notebooks as jobs (a mixin of AsyncQueue; see :mod:`pgq_nb.nbjobs`)."""

    pool: Any
    queries: dict[str, str]
    store: Store
    registry: Registry

    get_job: Callable[[int], Awaitable[JobInfo]]  # Operations.get_job

    async def enqueue_notebook(
        self,
        path: str | os.PathLike[str],
        parameters: dict[str, Any] | None = None,
        *,
        kernel_name: str | None = None,
        timeout: float | dt.timedelta | None = None,
        cwd: str | os.PathLike[str] | None = None,
        check_kernel: bool = True,
        priority: int = 0,
        execute_after: dt.datetime | dt.timedelta | None = None,
        dedupe_key: str | None = None,
        dedupe: Dedupe = "active",
        tags: Sequence[str] | None = None,
        meta: dict[str, Any] | None = None,
        connection: Any = None,
    ) -> int:
        """Run the notebook at ``path`` as a job, in a Jupyter kernel on a worker that serves
        notebooks; returns the job id.

        Its content is stored now (once per content, by sha256), so the job runs exactly this
        version wherever and whenever it runs. ``parameters`` (JSON values under Python names)
        are injected in a cell after the cell tagged ``parameters``, as papermill does.
        ``kernel_name`` overrides the notebook's kernel; ``timeout`` kills the kernel and fails
        the attempt when the run takes longer; ``cwd`` is the directory on the worker the
        kernel runs in (default: a private temporary directory, removed after the run).
        ``check_kernel=False`` skips the check that this machine has the kernel (when only
        the workers have it).
        The other options are ``q.enqueue``'s (``tags`` and ``meta`` label the job, as
        there, for the views' filters: ``q.history(tag="nightly")``). Errors (a path that does
        not exist, a file that is not a notebook, parameters that are not JSON, a kernel not
        installed here, labels that are not a list of str and a JSON object) are raised before
        anything is written.
        """

        checked_tags = labels.check_tags(tags)
        checked_meta = labels.check_meta(meta)

        async def call() -> int:
            async with self.store.connection(connection) as conn, conn.transaction():
                await check_served(self.registry, conn)
                entrypoint, payload = await notebook_job_payload(
                    conn,
                    self.queries,
                    path,
                    parameters,
                    kernel_name=kernel_name,
                    timeout=timeout,
                    cwd=cwd,
                    check_kernel=check_kernel,
                )
                job_id = await enqueue.enqueue_one(
                    self.store,
                    self.registry,
                    conn,
                    entrypoint,
                    payload,
                    priority,
                    execute_after,
                    dedupe_key,
                    dedupe,
                )
                await labels.label(self.queries, conn, [job_id], [checked_tags], [checked_meta])
                return job_id

        job_id: int = await runtime.run_for(connection, call())
        return job_id

    def serve_notebooks(
        self,
        *,
        timeout: float | dt.timedelta | None = None,
        concurrency: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        """Opt in: this process's workers run notebook jobs (``q.enqueue_notebook``).

        Whoever can enqueue can then run code on this machine, as this process's user: a
        notebook is arbitrary code. ``timeout`` is the default of jobs enqueued without one
        (None: no limit); ``concurrency`` caps the kernels one worker runs at once; ``retry``
        is the runner's RetryPolicy (default: the queue's). Needs nbclient, nbformat, nbconvert
        and ipykernel (``pip install 'pgq_nb[notebooks]'``).
        """
        from pgq_nb.nbjobs import runner
        from pgq_nb.nbjobs.content import check_timeout

        runner.check_installed()
        seconds = check_timeout(timeout)
        run = runner.handler(self.queries, self.pool, seconds)
        self.registry.entrypoint(ENTRYPOINT, concurrency=concurrency, retry=retry)(run)

    @runtime.bridged
    async def notebook_output(self, job_id: int) -> NotebookOutput:
        """The executed notebook of a notebook job (its last attempt, partial if a cell failed):
        displayed in Jupyter, it shows inline (in a sandboxed frame); ``.ipynb``, ``.html``,
        ``.recorded``, ``.error`` and ``.save(path)`` give the parts."""
        info = await self.get_job(job_id)
        if info.entrypoint != ENTRYPOINT:
            raise InvalidInputError(
                f"job {job_id} is a job of {info.entrypoint!r}, not a notebook job; "
                "q.get_job(job_id) shows it"
            )
        data = info.data if isinstance(info.data, dict) else {}
        row = await self.pool.fetchrow(
            self.queries["notebook_output"], check_int("job_id", job_id, bits=64)
        )
        return from_row(job_id, info.status.value, str(data.get("path", "?")), row)

    @runtime.bridged
    async def notebook_runs(
        self,
        path_or_name: str | None = None,
        *,
        limit: int | None = RUNS_LIMIT,
        values: list[str] | None = None,
    ) -> pd.DataFrame:
        """The runs of notebook jobs, newest first, one row per job (its last attempt): job_id,
        notebook, path, status, attempt, ok, error, started, duration_s, schedule_name,
        fire_time, parameters, then one column per value recorded with ``pgq_nb.record``
        (DataFrames come back as DataFrames). ``path_or_name``: only the notebook enqueued
        with that path, or of that name (file name without ``.ipynb``). At most ``limit``
        runs (the default warns ViewTruncated when it leaves runs out; None: all).

        ``values``: only these recorded values (a column each, in that order; ``[]``: none).
        By default every recorded value of every run is read and decoded, which costs what
        they weigh (a recorded DataFrame of a million rows, times the runs): name the ones
        you need, or narrow ``path_or_name`` and ``limit``."""
        from pgq_nb.notebook.notebook_runs import notebook_runs

        return await notebook_runs(self, path_or_name, limit, values)
