"""A worker module for `pgq-nb worker process_app:q --processes 2` (tests/test_process_executor.py).

Its handlers are sent to the worker's processes by name: each process imports this module.
"""

from __future__ import annotations

import os
import sys
import time

import pgq_nb

q = pgq_nb.connect()


@q.entrypoint("whoami")
def whoami(job: pgq_nb.Job) -> dict[str, object]:
    """Which process ran the job, its parent, and whether loky was loaded there."""
    return {"pid": os.getpid(), "ppid": os.getppid(), "loky": "loky" in sys.modules}


@q.entrypoint("nap")
def nap(job: pgq_nb.Job) -> int:
    """Sleeps job.data seconds (after saying it started, in the file job.data names)."""
    with open(job.data["started"], "w") as f:
        f.write(str(os.getpid()))
    time.sleep(job.data["seconds"])
    return os.getpid()
