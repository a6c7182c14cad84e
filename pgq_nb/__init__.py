"""pgq_nb: data pipelines from a Jupyter notebook on a durable Postgres job queue.

import pgq_nb
q = pgq_nb.connect()              # embedded Postgres, or dsn=... / PGQ_NB_DSN

@q.entrypoint("score")
def score(job: pgq_nb.Job) -> dict:
    return {"double": job.data["x"] * 2}

q.enqueue("score", {"x": 21})
q.run_until_idle()
"""

import logging
from typing import Any

from pgq_nb.config import Settings
from pgq_nb.errors import (
    BlockingCallError,
    ConfigurationError,
    DaskWorkerLost,
    DatabaseUnavailableError,
    DuplicateJobError,
    EmbeddedServerError,
    HandlerExitError,
    HandlerProcessDied,
    InvalidInputError,
    JobNotFoundError,
    JobTimeoutError,
    MemoryLimitExceeded,
    NotebookCellError,
    PayloadError,
    PgqError,
    SchemaError,
    UncacheablePayloadError,
    UnknownEntrypointError,
    UnpicklableHandlerError,
    UnstorableResultError,
)
from pgq_nb.facade import Queue, WorkerHandle, aconnect, connect
from pgq_nb.models import Job, JobInfo, JobStatus
from pgq_nb.nbjobs.output import NotebookOutput
from pgq_nb.queue import AsyncQueue
from pgq_nb.retry import GiveUp, RetryLater, RetryPolicy
from pgq_nb.schedule.cron import Schedule
from pgq_nb.snooze import Snooze
from pgq_nb.view_limits import ViewTruncated
from pgq_nb.worker import Worker, WorkerStats

__version__ = "0.1.0"


def record(name: str, value: Any) -> Any:
    """In a notebook run as a job (``q.enqueue_notebook``): record ``value`` under ``name``,
    for ``q.notebook_runs()``. JSON values, or a pandas DataFrame or Series. Returns
    ``value``. Outside a kernel it only checks the value."""
    from pgq_nb.notebook.record import record as record_value

    return record_value(name, value)


# A library logs, the application decides where to: without this, Python's last-resort handler
# would print every retry warning into notebook cells. `pgq-nb` configures a handler itself.
logging.getLogger("pgq_nb").addHandler(logging.NullHandler())

__all__ = [
    "AsyncQueue",
    "BlockingCallError",
    "ConfigurationError",
    "DaskWorkerLost",
    "DatabaseUnavailableError",
    "DuplicateJobError",
    "EmbeddedServerError",
    "GiveUp",
    "HandlerExitError",
    "HandlerProcessDied",
    "InvalidInputError",
    "Job",
    "JobInfo",
    "JobNotFoundError",
    "JobStatus",
    "JobTimeoutError",
    "MemoryLimitExceeded",
    "NotebookCellError",
    "NotebookOutput",
    "PayloadError",
    "PgqError",
    "Queue",
    "RetryLater",
    "RetryPolicy",
    "Schedule",
    "SchemaError",
    "Settings",
    "Snooze",
    "UncacheablePayloadError",
    "UnknownEntrypointError",
    "UnpicklableHandlerError",
    "UnstorableResultError",
    "ViewTruncated",
    "Worker",
    "WorkerHandle",
    "WorkerStats",
    "__version__",
    "aconnect",
    "connect",
    "record",
]
