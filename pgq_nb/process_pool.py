"""A worker's pool of processes (``processes=N``, ``executor="process"``), built on loky.

loky (the process pool joblib uses) starts fresh interpreters, never a fork of the kernel
with its threads, and ships handlers with cloudpickle, so functions, closures and lambdas
defined in notebook cells run there (a function of an importable module is sent by name and
imported in the process). loky's executor fails every running task when one of its
processes dies, so the pool is N slots of one process each: a handler that segfaults, calls
``os._exit`` or is ended for its timeout or a cancel loses only its own attempt, and its slot
starts a new process (about 50 ms, plus the handler's imports at its first job).

An attempt waits for a free slot; its timeout counts from when it gets one. Past the timeout,
or cancelled (a cancel request, the worker's stop), its process is killed and waited for
before the attempt ends, so the job cannot run twice at once and nothing the handler would
have done later happens. Results are encoded in the process (:mod:`pgq_nb.process_child`).
This module is imported only when a worker needs processes (:mod:`pgq_nb.executors`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import pickle
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cloudpickle
from loky import ProcessPoolExecutor
from loky.process_executor import BrokenProcessPool

from pgq_nb.errors import HandlerProcessDied, JobTimeoutError, UnpicklableHandlerError, article
from pgq_nb.process_child import format_bytes, job_fields, run_job, watch_parent

if TYPE_CHECKING:
    from pgq_nb.models import Job
    from pgq_nb.registry import EntrypointSpec

logger = logging.getLogger("pgq_nb.worker")


class _Slot:
    """One process of the pool (a loky executor of one worker), started on first use."""

    def __init__(self) -> None:
        self.executor: ProcessPoolExecutor | None = None

    def start(self) -> None:
        if self.executor is None:
            self.executor = ProcessPoolExecutor(max_workers=1, initializer=watch_parent)

    def pid(self) -> int | None:
        processes = getattr(self.executor, "_processes", None) or {}
        return next(iter(processes), None)

    def kill(self) -> None:
        """End the process (SIGKILL) and wait for it; the next attempt starts a new one."""
        executor, self.executor = self.executor, None
        if executor is not None:
            executor.shutdown(wait=True, kill_workers=True)


class ProcessPool:
    """A :class:`pgq_nb.executors.JobExecutor` on ``size`` processes of this machine."""

    kind = "process"

    def __init__(self, size: int) -> None:
        self.size = size
        self._slots = [_Slot() for _ in range(size)]
        self._free: asyncio.Queue[_Slot] | None = None

    def pids(self) -> list[int]:
        """The processes running now (one per slot started)."""
        return [pid for slot in self._slots if (pid := slot.pid()) is not None]

    async def run(self, spec: EntrypointSpec, job: Job, *, timeout: float | None) -> Any:
        """Run one attempt in a process of the pool (see the module's docs)."""
        if self._free is None:
            self._free = asyncio.Queue()
            for slot in self._slots:
                self._free.put_nowait(slot)
        slot = await self._free.get()
        try:
            return await self._run_on(slot, spec, job, timeout)
        finally:
            self._free.put_nowait(slot)

    async def _run_on(
        self, slot: _Slot, spec: EntrypointSpec, job: Job, timeout: float | None
    ) -> Any:
        args = (run_job, spec.handler, job_fields(job), spec.memory_limit)
        for fresh in (False, True):
            if fresh:  # its process died while idle (killed from outside): start a new one
                await _unstoppable(asyncio.to_thread(slot.kill))
            if slot.executor is None:
                await _unstoppable(asyncio.to_thread(slot.start))
            assert slot.executor is not None
            try:
                submitted = slot.executor.submit(*args)
                break
            except (BrokenProcessPool, RuntimeError):  # broken, or shut down by its manager
                if fresh:
                    raise
        future = asyncio.wrap_future(submitted)
        future.add_done_callback(_retrieve)  # a killed run's error is nobody's to read
        began = time.monotonic()
        try:
            done, _ = await asyncio.wait([future], timeout=timeout)
        except asyncio.CancelledError:
            await _unstoppable(asyncio.to_thread(slot.kill))  # before the job can go back
            raise
        if not done:
            await _unstoppable(asyncio.to_thread(slot.kill))
            logger.warning(
                "a handler in a process ran past its timeout; its process was ended",
                extra={"job_id": job.id, "entrypoint": job.entrypoint, "timeout_s": timeout},
            )
            raise JobTimeoutError(
                f"the handler ran longer than its timeout of {timeout:g} s; its process was "
                f"ended after {time.monotonic() - began:.1f} s (and replaced)"
            )
        try:
            return future.result()
        except BrokenProcessPool as exc:  # TerminatedWorkerError: the process died
            await _unstoppable(asyncio.to_thread(slot.kill))
            raise HandlerProcessDied(_died(exc, spec)) from None
        except pickle.PicklingError:  # loky could not send the task: say which object
            check_sendable(spec.name, spec.handler)  # (a handler taken on after the start)
            raise

    async def close(self) -> None:
        """End every process (running attempts end with them)."""
        await asyncio.gather(*(asyncio.to_thread(s.kill) for s in self._slots))


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def _unstoppable(call: Any) -> None:
    """Await ``call`` to its end even if cancelled meanwhile; then raise the cancellation."""
    task = asyncio.ensure_future(call)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            cancelled = True
    task.result()
    if cancelled:
        raise asyncio.CancelledError


def _died(exc: BrokenProcessPool, spec: EntrypointSpec) -> str:
    codes = re.search(r"exit codes of the workers are \{([^}]*)\}", str(exc))
    how = f" ({codes.group(1)})" if codes else ""
    hint = (
        f" (its memory_limit is {format_bytes(spec.memory_limit)}: a library may end the "
        "process when an allocation fails)"
        if spec.memory_limit
        else ""
    )
    return (
        f"the process running the handler ended before it returned{how}: a crash in native "
        f"code, os._exit, or a kill from outside{hint}. This attempt is lost and retried per "
        "the entrypoint's policy; a new process took its place"
    )


def check_sendable(name: str, handler: Callable[..., Any]) -> None:
    """UnpicklableHandlerError, naming the object that cannot be pickled, unless ``handler``
    can be sent to a process."""
    try:
        cloudpickle.dumps(handler)
    except Exception as exc:
        raise _unpicklable(name, handler, exc) from None


def _unpicklable(name: str, handler: Callable[..., Any], exc: BaseException) -> Exception:
    return UnpicklableHandlerError(
        f"the handler of entrypoint {name!r} cannot be sent to a process: {_culprit(handler)} "
        f"cannot be pickled ({type(exc).__name__}: {exc}). Move the handler (and what it uses) "
        "to a module and import it, or make it a plain function that creates such objects "
        "itself (a connection, a lock, a queue); or run it with executor='thread'"
    )


def _culprit(handler: Callable[..., Any]) -> str:
    """Which object the handler uses keeps it from being pickled (best effort)."""
    function = inspect.unwrap(handler)
    if not inspect.isfunction(function):
        return f"the handler ({article(type(handler).__name__)} object)"
    try:
        found = inspect.getclosurevars(function)
    except (TypeError, ValueError):
        return "the handler (or something it uses)"
    kinds = (("the variable", found.nonlocals), ("the global", found.globals))
    for kind, values in kinds:
        for var, value in values.items():
            try:
                cloudpickle.dumps(value)
            except Exception:
                what = article(type(value).__name__)
                return f"{kind} {var!r} it uses ({what})"
    for default in (*(function.__defaults__ or ()), *(function.__kwdefaults__ or {}).values()):
        try:
            cloudpickle.dumps(default)
        except Exception:
            return f"a default argument ({article(type(default).__name__)})"
    return "the handler (or something it uses)"
