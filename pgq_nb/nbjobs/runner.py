"""The handler of :data:`~pgq_nb.nbjobs.content.ENTRYPOINT`: run a stored notebook in a Jupyter
kernel with nbclient, keep what it did, fail the attempt on a failing cell.

One attempt: the notebook's stored content (by the sha256 in the payload) gets its parameters
injected (:mod:`pgq_nb.nbjobs.parameters`) and runs cell by cell in a new kernel of the named
kernel spec, started in a private temporary directory (``mkdtemp``: mode 0700, removed after
the run) unless the job names a ``cwd``. The executed notebook (partial when a cell failed or
the run timed out), its HTML (nbconvert) and the values recorded with ``pgq_nb.record`` are
saved in ``notebook_outputs`` by job id; the job's result is a small summary. A failing cell
raises :class:`~pgq_nb.errors.NotebookCellError` ("cell 7 of x.ipynb raised KeyError: 'x'"),
retried per the runner's RetryPolicy. At the job's timeout (the enqueue's ``timeout=``, else
the one given to ``serve_notebooks``) the kernel is killed with every process it started (see
:mod:`~pgq_nb.nbjobs.kernel_tree`) and the attempt fails with JobTimeoutError. However the
attempt ends (success, a failed cell, a cancel, a worker stopping), the kernel and what it
started are killed before it returns; if the worker itself is killed, its kernels' launchers
kill them.

nbclient, nbformat, nbconvert and ipykernel (the ``pgq_nb[notebooks]`` extra) are imported when
a worker opts in (:func:`check_installed`), never by ``import pgq_nb``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from importlib.util import find_spec
from typing import Any

from pgq_nb.errors import ConfigurationError, JobTimeoutError, NotebookCellError
from pgq_nb.models import Job, storable_text
from pgq_nb.nbjobs import kernel_tree, limits, records, render
from pgq_nb.nbjobs import parameters as params
from pgq_nb.retry import GiveUp

logger = logging.getLogger("pgq_nb.worker")

#: What running notebooks needs on a worker (the ``pgq_nb[notebooks]`` extra).
REQUIRED = ("nbclient", "nbformat", "nbconvert", "ipykernel")
#: Seconds past a notebook's timeout before the run is cancelled from outside (only a kernel
#: that hangs outside a cell gets there; cells end at the timeout itself).
STARTUP_GRACE = 30.0
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def check_installed() -> None:
    """ConfigurationError naming what is missing to run notebooks here."""
    missing = [name for name in REQUIRED if find_spec(name) is None]
    if missing:
        raise ConfigurationError(
            f"running notebooks needs {', '.join(missing)} on this worker: install them with "
            "pip install 'pgq_nb[notebooks]'"
        )


def handler(
    queries: dict[str, str], pool: Any, default_timeout: float | None
) -> Callable[[Job], Awaitable[dict[str, Any]]]:
    """The runner's handler, over the queue's pool and queries."""

    async def run_notebook(job: Job) -> dict[str, Any]:
        return await run(queries, pool, job, default_timeout)

    return run_notebook


def _spec(job: Job) -> dict[str, Any]:
    data = job.data
    keys = ("notebook", "path", "name", "parameters", "kernel")
    if not isinstance(data, dict) or not all(k in data for k in keys):
        raise GiveUp(
            f"job {job.id} is not a notebook job (its payload has no {keys}); enqueue "
            "notebooks with q.enqueue_notebook(path)"
        )
    return data


def cell_label(index: int, injected_at: int, replaced: bool, path: str) -> tuple[int, str]:
    """The cell's number in the notebook as enqueued, and how an error names it."""
    number = params.user_cell_number(index, injected_at, replaced)
    if index == injected_at:
        return number, f"the injected parameters cell of {path}"
    return number, f"cell {number} of {path}"


def _storable(value: Any) -> Any:
    """``value`` with every string made storable in text and jsonb (a NUL shown as ``\\x00``,
    a lone surrogate as U+FFFD): what a notebook prints or records is not ours to refuse."""
    if isinstance(value, str):
        return storable_text(value, sys.maxsize)
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


def _cancel_leftovers(client: Any) -> None:
    """Cancel the tasks nbclient started for ``client`` and left running: a cancelled cell
    leaves its kernel-alive poll behind, which would fail later with an AssertionError that
    asyncio logs as "Task exception was never retrieved"."""
    current = asyncio.current_task()
    for task in asyncio.all_tasks():
        frame = getattr(task.get_coro(), "cr_frame", None)
        if task is not current and frame is not None and frame.f_locals.get("self") is client:
            task.cancel()


def _launch_in_tree(km: Any) -> None:
    """Start ``km``'s kernel under :mod:`~pgq_nb.nbjobs.kernel_tree`'s launcher (on Linux),
    which keeps every process the kernel starts in its tree (and kills them when the worker
    ends); shutting the kernel down (nbclient's, ours) kills that tree first."""
    if not sys.platform.startswith("linux"):
        return
    command, shutdown = km.format_kernel_cmd, km.shutdown_kernel
    launcher = [sys.executable, kernel_tree.__file__, str(os.getpid()), "--"]

    def in_tree(extra_arguments: list[str] | None = None) -> list[str]:
        return [*launcher, *command(extra_arguments=extra_arguments)]

    async def shutdown_tree(now: bool = False, restart: bool = False) -> None:
        await _kill_tree(km)
        await shutdown(now=now, restart=restart)

    km.format_kernel_cmd = in_tree
    km.shutdown_kernel = shutdown_tree


async def _kill_tree(km: Any) -> None:
    """SIGKILL every process the kernel started (the launcher's descendants, the kernel
    included), if the launcher still runs."""
    process = getattr(getattr(km, "provisioner", None), "process", None)
    if process is not None and process.poll() is None:
        await asyncio.to_thread(kernel_tree.kill_tree, process.pid)


async def _kill(km: Any) -> None:
    """Kill the kernel, what it started and its process group, if it still runs; reap it."""
    try:
        await _kill_tree(km)
        if km.has_kernel:
            await km.shutdown_kernel(now=True)
    except Exception:  # already gone, or never started
        logger.debug("kernel shutdown", exc_info=True)


async def run(
    queries: dict[str, str], pool: Any, job: Job, default_timeout: float | None
) -> dict[str, Any]:
    """One attempt of a notebook job (see the module's docstring)."""
    spec = _spec(job)
    path, sha = str(spec["path"]), str(spec["notebook"])
    content = await pool.fetchval(queries["notebook_content"], sha)
    if content is None:
        raise GiveUp(
            f"the content of notebook {path!r} (sha256 {sha[:12]}...) is not stored in this "
            "queue; enqueue it again with q.enqueue_notebook()"
        )
    import nbformat
    from jupyter_client.kernelspec import NoSuchKernel
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
    from nbclient.util import ensure_async

    nb = nbformat.reads(content, as_version=4)  # type: ignore[no-untyped-call]
    total = len(nb.cells)
    replaced = params.first_tagged(nb.cells, params.INJECTED_TAG) is not None
    values = dict(spec["parameters"])
    if job.fire_time is not None:  # a schedule's tick: the notebook covers its own time
        values["fire_time"] = job.fire_time.isoformat()
    cells, injected_at = params.inject(list(nb.cells), values)
    nb.cells = [nbformat.from_dict(cell) for cell in cells]  # type: ignore[no-untyped-call]
    nb.metadata["pgq_nb"] = {"job_id": job.id, "path": path, "parameters": values}
    seconds = spec.get("timeout") or default_timeout
    private = spec.get("cwd") is None
    workdir = tempfile.mkdtemp(prefix="pgq_nb-notebook-") if private else str(spec["cwd"])
    if not await asyncio.to_thread(os.path.isdir, workdir):
        raise NotADirectoryError(
            f"cwd {workdir!r} of notebook {path!r} is not a directory on this worker; create "
            "it, or enqueue without cwd= to run in a private temporary directory"
        )
    client = NotebookClient(
        nb,
        kernel_name=spec["kernel"],
        timeout=None,
        allow_errors=False,
        shutdown_kernel="immediate",
        # the kernel's own warnings ("running over TCP without encryption", on loopback with
        # signed messages) would land in the worker's log, or the cell that runs the worker
        extra_arguments=["--IPKernelApp.log_level=ERROR"],
        resources={"metadata": {"path": workdir}},
    )
    budget = limits.OutputBudget()
    limits.cap_outputs(client, budget)
    km = client.create_kernel_manager()
    _launch_in_tree(km)
    started = dt.datetime.now(dt.UTC)
    began = time.monotonic()
    progress = Progress()
    # nbclient's own cell timeout (the time left) ends a cell cleanly; this outer deadline
    # only catches a kernel that hangs on the way (its start is nbclient's startup_timeout)
    deadline = asyncio.timeout(None if seconds is None else seconds + STARTUP_GRACE)
    failure: Exception | None = None
    try:
        async with deadline, client.async_setup_kernel():
            await _execute(client, nb, seconds, began, progress, ensure_async)
    except (CellExecutionError, DeadKernelError, TimeoutError, NoSuchKernel) as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling() and not deadline.expired():
            # cancelled from outside (a cancel request, a worker stopping), which nbclient
            # may turn into DeadKernelError: the attempt is cancelled, not failed
            raise asyncio.CancelledError from exc
        if isinstance(exc, TimeoutError) and not (
            deadline.expired() or isinstance(exc, CellTimeoutError | TimeUp)
        ):
            raise
        failure = _failure(
            exc, progress.cell, seconds, (injected_at, replaced, path), spec["kernel"]
        )
        if private and isinstance(failure, NotebookCellError):
            _hint_private_dir(failure, workdir)
    finally:
        _cancel_leftovers(client)
        await asyncio.shield(_kill(km))
        if private:
            shutil.rmtree(workdir, ignore_errors=True)
    duration = time.monotonic() - began
    at = (injected_at, replaced, path)
    found = _storable({**records.collect(nb.cells), **budget.records})
    # the cells that ran to the end: all, or those before the one that failed
    done = total if failure is None else max(0, cell_label(max(progress.cell, 0), *at)[0] - 1)
    executed = _storable(nbformat.writes(nb))  # type: ignore[no-untyped-call]
    html = limits.capped_html(await asyncio.to_thread(render.render_html, nb))
    await pool.execute(
        queries["save_notebook_output"],
        job.id,
        sha,
        path,
        str(spec["name"]),
        job.attempts,
        failure is None,
        None if failure is None else storable_text(str(failure)),
        json.dumps(_storable(values)),
        json.dumps(found),
        total,
        done,
        started,
        duration,
        executed,
        html,
    )
    if failure is not None:
        raise failure
    return {
        "notebook": path,
        "sha256": sha,
        "cells": total,
        "duration_s": round(duration, 3),
        "recorded": {name: records.summary_value(value) for name, value in found.items()},
    }


class TimeUp(TimeoutError):
    """The notebook's time ran out between two cells."""


class Progress:
    """Where a run is: the index of the cell running (-1: none yet, or all done)."""

    cell = -1


async def _execute(
    client: Any, nb: Any, seconds: float | None, began: float, run: Progress, ensure_async: Any
) -> None:
    """Run every cell in order, each within what is left of ``seconds``."""
    assert client.kc is not None
    reply = await client.async_wait_for_reply(await ensure_async(client.kc.kernel_info()))
    if reply is not None and "language_info" in reply["content"]:
        nb.metadata["language_info"] = reply["content"]["language_info"]
    for index, cell in enumerate(nb.cells):
        run.cell = index
        if seconds is not None:
            left = seconds - (time.monotonic() - began)
            if left <= 0:
                raise TimeUp("the notebook's time is up")
            client.timeout = max(1, math.ceil(left))
        await client.async_execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
    run.cell = -1


#: Errors of a relative path that may not be where the notebook's author thought.
_PATH_ERRORS = ("FileNotFoundError", "NotADirectoryError", "OSError", "IsADirectoryError")


def _hint_private_dir(failure: NotebookCellError, workdir: str) -> None:
    """Add to a file-not-found failure where the notebook ran: a relative path there finds
    nothing the notebook's author put next to it."""
    if failure.ename not in _PATH_ERRORS:
        return
    hint = (
        f"the notebook ran in a private temporary directory ({workdir}, removed after the "
        "run), not next to its file: give absolute paths, or enqueue with cwd= the absolute "
        "path of a directory on the workers to run it there"
    )
    failure.args = (f"{failure.args[0]} ({hint})", *failure.args[1:])


def _failure(
    exc: Exception, running: int, seconds: float | None, at: tuple[int, bool, str], kernel: str
) -> Exception:
    """The error that fails the attempt, for what nbclient raised."""
    path = at[2]
    if isinstance(exc, TimeoutError):
        if running < 0:
            where = "at its start"
        elif isinstance(exc, TimeUp):
            where = f"before {cell_label(running, *at)[1]} started"
        else:
            where = f"while {cell_label(running, *at)[1]} ran"
        return JobTimeoutError(
            f"notebook {path!r} ran longer than its timeout of {seconds:g} s ({where}); its "
            "kernel was killed"
        )
    if exc.__class__.__name__ == "NoSuchKernel":  # another attempt here would fail the same way
        return GiveUp(
            f"no Jupyter kernel named {kernel!r} is installed on this worker; install it here, "
            "or enqueue with kernel_name= a kernel the workers have"
        )
    number, label = cell_label(max(running, 0), *at)
    if exc.__class__.__name__ == "DeadKernelError":
        return NotebookCellError(
            f"the kernel died while {label} ran ({exc}); the cell may use too much memory or "
            "end the process",
            cell=number,
            ename="DeadKernelError",
            evalue=str(exc),
        )
    ename, evalue = str(getattr(exc, "ename", "")), str(getattr(exc, "evalue", ""))
    failure = NotebookCellError(
        f"{label} raised {ename}: {evalue}", cell=number, ename=ename, evalue=evalue
    )
    failure.add_note(_ANSI.sub("", str(getattr(exc, "traceback", "")))[-20_000:])
    return failure
