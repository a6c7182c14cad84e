"""Handlers of tests/apps/dask_app.py, in a module of their own: a Dask worker imports this
one to run them (it must not import dask_app, which opens a queue)."""

from __future__ import annotations

import os


def whoami(job: object) -> dict[str, object]:
    """Which process and which Dask worker ran the job."""
    from distributed import get_worker

    return {"pid": os.getpid(), "dask_worker": get_worker().address}
