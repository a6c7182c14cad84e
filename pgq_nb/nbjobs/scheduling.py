"""A schedule whose ticks run a notebook: ``q.add_schedule(name, cron, notebook=...,
parameters=...)`` stores the notebook's content (as ``q.enqueue_notebook`` does) and a data
schedule of the runner's entrypoint whose payload names that content, in one transaction: every
tick runs the version stored when the schedule was added, and gets the tick's time as the
parameter ``fire_time`` (see :mod:`pgq_nb.nbjobs.runner`)."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from pgq_nb.errors import InvalidInputError
from pgq_nb.models import encode_payload
from pgq_nb.nbjobs.api import check_served
from pgq_nb.nbjobs.content import notebook_job_payload
from pgq_nb.registry import Registry
from pgq_nb.schedule import data
from pgq_nb.schedule.database import ScheduleSpec


async def add_notebook_schedule(
    pool: Any,
    queries: dict[str, str],
    registry: Registry,
    spec: ScheduleSpec,
    notebook: str | os.PathLike[str] | None,
    parameters: dict[str, Any] | None,
    entrypoint: str | None,
    payload: Any,
) -> dt.datetime:
    """Add data schedule ``spec`` running ``notebook`` with ``parameters``; its first tick."""
    if notebook is None:
        raise InvalidInputError(
            "parameters= goes with notebook=: q.add_schedule(name, cron, "
            "notebook='report.ipynb', parameters={...}); an entrypoint's schedule takes payload="
        )
    if entrypoint is not None or payload is not None:
        raise InvalidInputError(
            "a schedule runs a notebook (notebook=, parameters=) or an entrypoint "
            "(entrypoint=, payload=), not both"
        )
    async with pool.acquire() as conn, conn.transaction():
        await check_served(registry, conn)
        name, job_payload = await notebook_job_payload(conn, queries, notebook, parameters)
        schedule = data.DataSchedule(
            spec=spec, entrypoint=name, payload=encode_payload(job_payload)
        )
        return await data.add(conn, queries, schedule)
