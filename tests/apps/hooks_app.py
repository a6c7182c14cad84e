"""A worker module with a hook (tests/test_hooks.py): `pgq-nb worker hooks_app:q` runs the
hooks registered on the module's queue; this one appends each succeeded job's id and result to
the file named by PGQ_NB_TEST_HOOK_FILE."""

from __future__ import annotations

import os

import pgq_nb
from pgq_nb.hooks import Outcome

q = pgq_nb.connect()


@q.entrypoint("hooked")
def hooked(job: pgq_nb.Job) -> int:
    return int(job.data["x"]) + 1


@q.on("succeeded")
def note(job: pgq_nb.Job, outcome: Outcome) -> None:
    with open(os.environ["PGQ_NB_TEST_HOOK_FILE"], "a") as f:
        f.write(f"{job.id} {outcome.result}\n")
