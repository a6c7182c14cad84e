"""A worker module for `pgq-nb worker dask_app:q --dask ADDRESS` (tests/test_dask_executor.py).

Its handler lives in tests/apps/dask_handlers.py, which the Dask workers import by name.
"""

from __future__ import annotations

import dask_handlers  # type: ignore[import-not-found]

import pgq_nb

q = pgq_nb.connect()
q.entrypoint("whoami")(dask_handlers.whoami)
