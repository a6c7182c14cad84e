"""What runs in a worker's process for one attempt (see :mod:`pgq_nb.process_pool`).

:func:`run_job` rebuilds the :class:`~pgq_nb.models.Job`, applies the entrypoint's memory
limit, calls the handler (an ``async def`` one under ``asyncio.run``), and encodes its result
to JSON here, so only text crosses back to the worker: a result that cannot be stored fails
with the same UnstorableResultError as in a thread. An error the handler raises crosses back
as it is when it can be pickled, as a RuntimeError with its type and message when not.

The memory limit is the process's address space (``RLIMIT_AS``), lowered for the attempt and
restored after it: an allocation beyond it fails with MemoryError, which becomes
:class:`~pgq_nb.errors.MemoryLimitExceeded` with the attempt's peak resident memory (the peak
is reset before the attempt through ``/proc/self/clear_refs``; where that cannot be written,
the process's lifetime peak, ``ru_maxrss``). Address space counts more than what is resident
(libraries mapped, thread stacks reserved): leave a few hundred MB above what the data needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import pickle
import resource
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pgq_nb.errors import HandlerExitError, InvalidInputError, MemoryLimitExceeded
from pgq_nb.handler_runs import Encoded, encode
from pgq_nb.models import Job

#: The Job fields sent to the process (the rest stay in the worker).
JOB_FIELDS = tuple(
    f.name for f in dataclasses.fields(Job) if f.name not in ("_data", "resources", "tx")
)


class NoResources(Mapping[str, Any]):
    """``job.resources`` in a process: the queue's resources live in the worker's process."""

    def __getitem__(self, name: str) -> Any:
        raise InvalidInputError(
            f"job.resources[{name!r}] is not available to a handler running in a process (the "
            "queue's resources live in the worker's process): create the object in the "
            "handler (cache it in a module-level global to create it once per process), or "
            "run this entrypoint with executor='thread'"
        )

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


NO_RESOURCES = NoResources()


def watch_parent() -> None:
    """The pool's initializer. Ignore SIGINT and SIGTERM: the notebook's Stop button signals
    the kernel's whole process group, Ctrl-C a terminal's, and systemd every process of a
    unit; the worker decides what becomes of the attempt (a graceful stop lets it finish; a
    hard one ends this process with SIGKILL and returns the job uncounted). And end this
    process soon after the worker's process is gone (a killed kernel), instead of waiting
    idle forever as an orphan."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="pgq_nb-parent-watch", daemon=True).start()


def job_fields(job: Job) -> dict[str, Any]:
    """What :func:`run_job` needs to rebuild ``job`` in the process."""
    return {name: getattr(job, name) for name in JOB_FIELDS}


def run_job(handler: Callable[[Job], Any], fields: dict[str, Any], memory_limit: int | None) -> Any:
    """Run one attempt in this process; returns an Encoded result (see the module's docs)."""
    job = Job(**fields)
    job.resources = NO_RESOURCES
    try:
        with _limited(memory_limit):
            value = handler(job)
            if asyncio.iscoroutine(value):
                value = asyncio.run(value)
            return encode(value)
    except MemoryError as exc:
        if memory_limit is None or isinstance(exc, MemoryLimitExceeded):
            raise
        raise _over_limit(memory_limit) from None
    except (SystemExit, KeyboardInterrupt) as exc:
        raise HandlerExitError(
            f"the handler raised {type(exc).__name__} ({exc!r}); job code must not end the "
            "worker: raise an exception (or pgq_nb.GiveUp) to fail the job"
        ) from None
    except Exception as exc:
        sendable = _sendable(exc)
        if sendable is exc:
            raise
        raise sendable from None


@contextlib.contextmanager
def _limited(limit: int | None) -> Iterator[None]:
    if limit is None:
        yield
        return
    before = resource.getrlimit(resource.RLIMIT_AS)
    _reset_peak()
    hard = before[1]
    resource.setrlimit(
        resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard)
    )
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, before)


def _reset_peak() -> None:
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM, the peak resident size (Linux 4.0+)


def peak_resident() -> int:
    """This process's peak resident memory in bytes (since :func:`_reset_peak` on Linux)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _over_limit(limit: int) -> MemoryLimitExceeded:
    peak = peak_resident()
    return MemoryLimitExceeded(
        f"the handler needed more memory than its memory_limit of {format_bytes(limit)}: an "
        f"allocation failed (peak resident memory of the attempt: {format_bytes(peak)}); raise "
        "memory_limit= or work on smaller parts of the data. The worker and its other jobs "
        "go on",
        limit=limit,
        peak=peak,
    )


def format_bytes(size: float) -> str:
    """``2.0 GB``, ``512 MB``: sizes in messages, in the units memory_limit is written in."""
    for unit, base in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= base:
            return f"{size / base:.3g} {unit}"
    return f"{int(size)} B"


def _sendable(exc: BaseException) -> BaseException:
    """``exc`` if it can be pickled back to the worker; else a RuntimeError that says what it
    was (the traceback still reaches the worker, as text)."""
    try:
        import cloudpickle

        pickle.loads(cloudpickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc} (the exception could not be pickled)")
    return exc


__all__ = ["NO_RESOURCES", "Encoded", "job_fields", "peak_resident", "run_job"]
