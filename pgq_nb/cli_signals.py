"""How ``pgq-nb worker`` answers SIGINT and SIGTERM: the first stops it gracefully (running
jobs get the grace period), the second at once (unfinished jobs go back to the queue), a third
exits without returning them. The process ends within :data:`HARD_STOP_S` of the second signal
whatever the stop is waiting for, and :func:`exit_now` ends it even if a flush is stuck.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import faulthandler
import logging
import os
import signal
import sys
import time
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pgq_nb.worker import Worker, WorkerStats

#: Seconds from the second signal to the exit, whether or not the stop at once has ended (it
#: usually takes one or two: the interrupted jobs are returned, the worker deregisters).
HARD_STOP_S = 20.0
#: Seconds :func:`exit_now` gives the last flushes before it ends the process anyway.
EXIT_WATCHDOG_S = 5.0

_log = logging.getLogger("pgq_nb")
_exiting = False


def run_until_stopped(
    worker: Worker,
    future: concurrent.futures.Future[WorkerStats],
    loop: asyncio.AbstractEventLoop,
) -> tuple[WorkerStats, bool]:
    """Wait for ``future`` (``worker.run()`` on ``loop``) while the signals stop it; returns its
    stats and whether the stop was at once."""
    signals = 0
    hard_since: float | None = None

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal signals, hard_since
        signals += 1
        name = signal.Signals(signum).name
        if signals == 1:
            _log.info(
                "stopping: running jobs get the grace period; signal again to stop at once",
                extra={"signal": name},
            )
            loop.call_soon_threadsafe(worker.request_stop)
        elif signals == 2:
            hard_since = time.monotonic()
            _log.warning(
                "stopping at once: unfinished jobs go back to the queue; signal again to exit "
                "without returning them (they are then reclaimed after the heartbeat timeout)",
                extra={"signal": name},
            )
            loop.call_soon_threadsafe(worker.request_stop, True)
        else:
            exit_now(1)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while True:
        try:
            return future.result(timeout=0.5), signals >= 2
        except concurrent.futures.TimeoutError:
            if hard_since is not None and time.monotonic() - hard_since > HARD_STOP_S:
                _log.warning(
                    "the stop at once did not end in %g s; exiting without it (jobs not yet "
                    "returned are reclaimed after the heartbeat timeout)",
                    HARD_STOP_S,
                )
                exit_now(1)


def exit_now(code: int) -> None:
    """End the process at once, without waiting for handler threads. The flushes take locks
    that another thread may hold: if they have not let go in :data:`EXIT_WATCHDOG_S`, the
    threads' stacks go to stderr and the process ends anyway (exit code 1)."""
    global _exiting
    if not _exiting:  # armed once: a signal during the flushes does not push it back
        _exiting = True
        with contextlib.suppress(Exception):  # (fd 2 closed)
            faulthandler.dump_traceback_later(EXIT_WATCHDOG_S, exit=True, file=2)
    for flush in (sys.stdout.flush, sys.stderr.flush, logging.shutdown):
        with contextlib.suppress(Exception):  # (one re-entered by a signal raises)
            flush()
    os._exit(code)
