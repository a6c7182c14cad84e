"""A schedule whose ticks run a notebook: ``q.add_schedule(name, cron, notebook=...,
parameters=...)`` stores the notebook's content (as ``q.enqueue_notebook`` does) and a data
schedule of the runner's entrypoint whose payload names that content, in one transaction: every
tick runs the version stored when the schedule was added, and gets the tick's time as the
parameter ``fire_time`` (see :mod:`pgq_nb.nbjobs.runner`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Callable
from typing import Any

from pgq_nb.encoding import decode_payload, encode_payload
from pgq_nb.errors import InvalidInputError
from pgq_nb.nbjobs.api import check_served
from pgq_nb.nbjobs.content import (
    ENTRYPOINT,
    check_parameters,
    notebook_job_payload,
    prepare,
    store,
)
from pgq_nb.registry import Registry
from pgq_nb.schedule import data
from pgq_nb.schedule.database import ScheduleSpec

BOTH = (
    "a schedule runs a notebook (notebook=, parameters=) or an entrypoint "
    "(entrypoint=, payload=), not both"
)


def notebook_payload_refused(name: str) -> InvalidInputError:
    """The error for ``payload=`` given to a schedule that runs a notebook."""
    return InvalidInputError(
        f"schedule {name!r} runs a notebook, whose payload names its stored content: change "
        f"its parameters with q.update_schedule({name!r}, parameters={{...}}) (or notebook= "
        "for another notebook), not payload= or entrypoint="
    )


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
        raise InvalidInputError(BOTH)
    async with pool.acquire() as conn, conn.transaction():
        await check_served(registry, conn)
        name, job_payload = await notebook_job_payload(conn, queries, notebook, parameters)
        schedule = data.DataSchedule(
            spec=spec, entrypoint=name, payload=encode_payload(job_payload)
        )
        return await data.add(conn, queries, schedule)


async def update_notebook_schedule(
    pool: Any,
    queries: dict[str, str],
    name: str,
    notebook: str | os.PathLike[str] | None,
    parameters: dict[str, Any] | None,
    spec_of: Callable[[Any], ScheduleSpec],
) -> dt.datetime:
    """Give notebook schedule ``name`` new ``parameters`` (replacing the old ones) and/or a new
    ``notebook`` (its content stored now, the parameters kept unless given), in one
    transaction; its next run."""
    values = None if parameters is None else check_parameters(parameters)
    async with pool.acquire() as conn, conn.transaction():
        row = await data.lock(conn, queries, name, "q.update_schedule cannot change it")
        if row["entrypoint"] != ENTRYPOINT:
            raise InvalidInputError(
                f"schedule {name!r} runs the entrypoint {row['entrypoint']!r}, not a notebook: "
                "change what its ticks get with payload=; notebook= and parameters= are for a "
                "schedule added with notebook="
            )
        old = decode_payload(row["payload"])
        old = old if isinstance(old, dict) else {}
        if values is None:
            values = dict(old.get("parameters") or {})
        if notebook is None:
            payload = {**old, "parameters": values}
        else:
            prepared = await asyncio.to_thread(prepare, notebook, values)
            await store(conn, queries, prepared)
            payload = prepared.payload

        def change(locked: Any) -> data.DataSchedule:
            return data.DataSchedule(
                spec=spec_of(locked), entrypoint=ENTRYPOINT, payload=encode_payload(payload)
            )

        return await data.update(conn, queries, name, change)
