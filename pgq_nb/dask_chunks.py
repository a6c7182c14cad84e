"""Several attempts per Dask task (issue #17): how many, and what the task runs.

Dask costs the notebook's process a few ms of CPU per task (the client and, with a
``LocalCluster``, the scheduler: about 3.5 ms per task on a 2-core machine, measured in
``benchmarks/scenario_dask.py``), which for handlers of ~20 ms is as much as a core can
spare. Only fewer tasks cut it. So the attempts of one entrypoint that start in the same loop
turn go to Dask as chunks, each one task (:func:`run_chunk`) that runs its attempts one after
the other and returns each one's own outcome, recorded one by one as before.

The size of a chunk follows joblib's auto batching: the mean duration of the entrypoint's
recent attempts (measured on the Dask worker, returned with the outcomes), and about
:data:`TARGET_S` of work per task, at most :data:`MAX_CHUNK` attempts. An entrypoint not
measured yet, and one whose attempts take longer than half the target, runs one attempt per
task, as before chunks. Attempts with a ``timeout=`` are never chunked (their timeout counts
from their own submission).

A chunk shares its fate: a Dask worker lost while it runs one loses every attempt of it
(each ends as DaskWorkerLost, retried per its policy); that is the price of one task's cost
for many attempts. The outcomes of a chunk reach the queue when the whole chunk ends.
"""

from __future__ import annotations

import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pgq_nb.process_child import run_job

#: Work per Dask task the chunks aim at, in seconds (joblib's MIN_IDEAL_BATCH_DURATION).
TARGET_S = 0.2

#: The most attempts in one chunk.
MAX_CHUNK = 32

#: Recent attempts per entrypoint whose durations size its chunks.
WINDOW = 32

T = TypeVar("T")


class RemoteTraceback(Exception):
    """The traceback of an attempt that failed in a chunk on a Dask worker (its text), the
    ``__cause__`` of the attempt's error, so the job's traceback shows where it failed."""

    def __str__(self) -> str:
        return f"\n{self.args[0] if self.args else ''}"


def run_chunk(handler: Callable[..., Any], chunk: Sequence[dict[str, Any]]) -> list[Any]:
    """Run on a Dask worker: each attempt of ``chunk`` (the job fields of
    :func:`pgq_nb.process_child.job_fields`) in turn; for each, ``(True, encoded result,
    None, seconds)`` or ``(False, error, traceback text, seconds)``. One failing attempt does
    not stop the others."""
    outcomes: list[Any] = []
    for fields in chunk:
        began = time.perf_counter()
        try:
            value = run_job(handler, fields, None)
        except Exception as exc:
            trace = "".join(traceback.format_exception(exc))
            exc.__traceback__ = None  # (the text travels; frames do not pickle)
            outcomes.append((False, exc, trace, time.perf_counter() - began))
        else:
            outcomes.append((True, value, None, time.perf_counter() - began))
    return outcomes


def with_trace(exc: BaseException, trace: str | None) -> BaseException:
    """``exc``, with the text of its traceback on the Dask worker as its cause."""
    if trace and exc.__cause__ is None:
        exc.__cause__ = RemoteTraceback(trace)
    return exc


#: An entrypoint whose last attempt ended longer ago than this no longer sizes the worker's
#: concurrency (:meth:`Durations.largest`).
RECENT_S = 10.0


class Durations:
    """The recent durations of each entrypoint's attempts on Dask, and its chunk size."""

    def __init__(self) -> None:
        self._seen: dict[str, deque[float]] = {}
        self._last: dict[str, float] = {}  # when an attempt of each last ended (monotonic)

    def add(self, name: str, seconds: float, now: float | None = None) -> None:
        self._seen.setdefault(name, deque(maxlen=WINDOW)).append(max(0.0, seconds))
        self._last[name] = time.monotonic() if now is None else now

    def mean(self, name: str) -> float | None:
        seen = self._seen.get(name)
        return sum(seen) / len(seen) if seen else None

    def chunk_size(self, name: str) -> int:
        """Attempts per task for ``name``: 1 until measured, then about TARGET_S of work."""
        return chunk_size(self.mean(name))

    def largest(self, now: float | None = None) -> int:
        """The largest chunk size of the entrypoints that ran in the last RECENT_S (1 when
        none did): long attempts alone claim as deep as before chunks."""
        since = (time.monotonic() if now is None else now) - RECENT_S
        recent = [name for name, last in self._last.items() if last >= since]
        return max((self.chunk_size(name) for name in recent), default=1)


def chunk_size(mean_s: float | None) -> int:
    """Attempts per task for attempts of ``mean_s`` seconds each (None: not measured)."""
    if mean_s is None or mean_s * 2 > TARGET_S:
        return 1
    if mean_s <= TARGET_S / MAX_CHUNK:
        return MAX_CHUNK
    return max(1, min(MAX_CHUNK, int(TARGET_S / mean_s + 1e-6)))  # (0.2 / 0.02: 10, not 9)


def split(items: Sequence[T], size: int) -> list[list[T]]:
    """``items`` in chunks of at most ``size``, as even as can be (8 by 3: 3, 3, 2)."""
    if not items:
        return []
    count = -(-len(items) // max(1, size))
    base, extra = divmod(len(items), count)
    chunks, start = [], 0
    for i in range(count):
        end = start + base + (1 if i < extra else 0)
        chunks.append(list(items[start:end]))
        start = end
    return chunks
