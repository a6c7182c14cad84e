"""A worker module for the notebook-job tests: `pgq-nb worker notebook_app:q --notebooks`
(the runner is served only with that flag). NB_MAX_ATTEMPTS sets the retry policy."""

from __future__ import annotations

import os

import pgq_nb

q = pgq_nb.connect(
    retry=pgq_nb.RetryPolicy(
        max_attempts=int(os.environ.get("NB_MAX_ATTEMPTS", "2")), base_delay=0.2, max_delay=0.5
    )
)
