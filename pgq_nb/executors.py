"""Where a handler runs: the executor seam of the worker.

A worker runs ``async def`` handlers on its loop and plain ``def`` handlers in its thread pool
(:mod:`pgq_nb.handler_runs`). A :class:`JobExecutor` runs them somewhere else: a pool of
processes of this machine (:mod:`pgq_nb.process_pool`, loky with cloudpickle) or a Dask
cluster (:mod:`pgq_nb.dask_executor`, a worker given ``dask=client``). Which handler goes
where is decided here (:func:`runs_outside`), from the entrypoint's ``executor=`` and the
worker's ``processes=`` (or ``dask=``).

This module imports nothing optional: :func:`open_pool` imports the process pool (and loky)
only when a worker needs one (and dask only for ``dask=``), so ``import pgq_nb`` and a plain
``pgq-nb worker`` stay lean.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from pgq_nb.errors import ConfigurationError, InvalidInputError

if TYPE_CHECKING:
    from pgq_nb.models import Job
    from pgq_nb.registry import EntrypointSpec

#: What ``@q.entrypoint(executor=...)`` accepts: ``"thread"`` (the worker's loop or thread
#: pool, whatever the worker's ``processes=``), ``"process"`` (a process of the worker's pool).
EXECUTORS = ("thread", "process")

_EXTRA_HINT = "pip install 'pgq_nb[processes]' (loky and cloudpickle)"


class JobExecutor(Protocol):
    """Runs attempts outside the worker's loop and threads.

    ``run`` returns what :func:`pgq_nb.handler_runs.run_in_thread` returns (an ``Encoded``
    result) or raises the attempt's error; past ``timeout`` (counted from the handler's start)
    it ends the run and raises JobTimeoutError; cancelled, it ends the run before it raises
    CancelledError, so a job is never run twice at once."""

    kind: str
    size: int

    async def run(self, spec: EntrypointSpec, job: Job, *, timeout: float | None) -> Any: ...

    async def close(self) -> None: ...

    def pids(self) -> list[int]: ...


def check_executor(value: object) -> str | None:
    """An entrypoint's ``executor=``: None (the worker decides), "thread" or "process"."""
    if value is None or (isinstance(value, str) and value in EXECUTORS):
        return value
    raise InvalidInputError(
        f"executor must be one of {', '.join(map(repr, EXECUTORS))} or None (the worker's "
        f"choice), not {value!r}"
    )


def check_processes(value: object) -> int | None:
    """A worker's ``processes=``: None or False (threads), True (one per core) or an int >= 1."""
    if value is None or value is False:
        return None
    if value is True:
        return os.cpu_count() or 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(
            f"processes must be a positive int (or True for one per core, {os.cpu_count()} "
            f"here; None for threads), not {value!r}"
        )
    return value


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_memory(value: object) -> int | None:
    """``memory_limit=``: bytes (an int) or a size like ``"2GB"``, ``"512MB"``, ``"1.5GiB"``."""
    if value is None:
        return None
    size: float = -1.0
    if isinstance(value, int | float) and not isinstance(value, bool):
        size = float(value)
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        unit = match.group(2).lower()
        base = _UNITS[unit[:1] if unit[:1] != "b" else ""]
        if "i" in unit:  # KiB, MiB, GiB, TiB
            base = 1024 ** {"k": 1, "m": 2, "g": 3, "t": 4}[unit[0]]
        size = float(match.group(1)) * base
    if not size >= 1024**2:
        raise InvalidInputError(
            f"memory_limit {value!r} is not a memory size of at least 1 MiB: write it like "
            "'2GB', '512MB' or '1.5GiB', or give bytes as an int"
        )
    return int(size)


def runs_outside(spec: EntrypointSpec, processes: int | None) -> bool:
    """Does an attempt of ``spec`` run in the worker's process pool? Those of entrypoints with
    ``executor="process"``, and, in a worker with ``processes=N``, plain ``def`` handlers that
    name no executor. ``async def`` handlers run on the loop unless they ask for a process
    (they wait on I/O: a process gains them nothing); transactional handlers always run in
    the worker, on its connection."""
    if spec.transactional or spec.executor == "thread":
        return False
    if spec.executor == "process":
        return True
    return processes is not None and not spec.is_async


def pool_size(processes: int | None, concurrency: int) -> int:
    """Processes of a worker's pool: ``processes=``, or for a worker of threads serving
    ``executor="process"`` entrypoints one per core, at most its concurrency."""
    if processes is not None:
        return processes
    return max(1, min(os.cpu_count() or 1, concurrency))


def executor_label(processes: int | None, pool: JobExecutor | None) -> str:
    """The workers table's ``executor``: "thread", "process", or "dask <scheduler address>"
    (:func:`split_label` parts the last for ``q.workers()``)."""
    if pool is not None and pool.kind == "dask":
        return f"dask {getattr(pool, 'address', 'unknown')}"
    return "process" if processes else "thread"


def split_label(row: dict[str, Any]) -> dict[str, Any]:
    """A workers row with ``executor`` "dask" and its ``scheduler`` address apart."""
    executor, _, scheduler = str(row.get("executor") or "thread").partition(" ")
    return {**row, "executor": executor, "scheduler": scheduler or None}


def open_pool(
    specs: Iterable[EntrypointSpec],
    processes: int | None,
    concurrency: int,
    check: bool = True,
    dask: Any = None,
) -> JobExecutor | None:
    """The pool a worker needs for ``specs`` (None when every one runs in the worker). Checks
    first (unless not ``check``) that each of their handlers can be sent to a process
    (UnpicklableHandlerError). Starts no process yet. With ``dask`` (a distributed.Client),
    the handlers that would run in processes run on its cluster (:mod:`pgq_nb.dask_executor`)."""
    if dask is not None:
        return open_dask(specs, dask, check)
    outside = [s for s in specs if runs_outside(s, processes)]
    if processes is None and not outside:
        return None
    module = _process_pool()
    for spec in outside if check else ():
        module.check_sendable(spec.name, spec.handler)
    pool: JobExecutor = module.ProcessPool(pool_size(processes, concurrency))
    return pool


def open_dask(specs: Iterable[EntrypointSpec], client: Any, check: bool = True) -> JobExecutor:
    """The executor of a worker given ``dask=client``: checks the client (closed, or its
    scheduler unreachable: InvalidInputError) and that the handlers it will send pickle."""
    executor: JobExecutor = _dask().DaskExecutor(client)
    if check:
        check_handlers(specs, executor)
    return executor


def check_handlers(specs: Iterable[EntrypointSpec], executor: JobExecutor) -> None:
    """UnpicklableHandlerError unless the handlers of ``specs`` that ``executor`` would run
    can be pickled (before anything is claimed)."""
    sizes = 1 if executor.kind == "dask" else executor.size
    check = _dask().check_sendable if executor.kind == "dask" else check_sendable
    for spec in specs:
        if runs_outside(spec, sizes):
            check(spec.name, spec.handler)


def check_dask(dask: object, processes: object) -> None:
    """``dask=`` and ``processes=`` together: refused (one place runs the handlers)."""
    if dask is not None and processes not in (None, False):
        raise InvalidInputError(
            f"give dask= or processes=, not both (processes={processes!r}): with dask= the "
            "handlers run on the Dask cluster's workers; for processes of this machine drop "
            "dask= (or start a LocalCluster and give its client)"
        )


def dask_client(address: str, timeout: float | None = None) -> Any:
    """A ``distributed.Client`` of the scheduler at ``address`` (``pgq-nb worker --dask``)."""
    return _dask().connect(address, timeout)


def _dask() -> Any:
    try:
        from pgq_nb import dask_executor
    except ImportError as exc:
        raise ConfigurationError(
            f"running handlers on Dask needs dask.distributed ({exc}): pip install 'pgq_nb[dask]'"
        ) from None
    return dask_executor


def check_sendable(name: str, handler: Callable[..., Any]) -> None:
    """UnpicklableHandlerError unless ``handler`` can be pickled for a process."""
    _process_pool().check_sendable(name, handler)


def _process_pool() -> Any:
    try:
        from pgq_nb import process_pool
    except ImportError as exc:
        raise ConfigurationError(
            f"running handlers in processes needs loky and cloudpickle ({exc}): {_EXTRA_HINT}"
        ) from None
    return process_pool
