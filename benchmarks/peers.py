"""The other Postgres job queues the ``peers`` scenarios compare with, behind one small interface.

Each peer lives in its own module (``benchmarks.peer_procrastinate``, ``peer_dbos``,
``peer_chancy``, ``peer_oban``; oban-py needs Python 3.12 or newer) and imports its package
only when it runs, so a missing one costs nothing: ``missing()`` says how to install it (or
which Python it needs), and the run goes on without it. Every peer runs
in a fresh database of its own per run (created by the harness, its tables installed by the
peer's own migration API, dropped afterwards), through its own worker loop and its own bulk
enqueue API, with the settings its documentation recommends for many small async jobs
(``settings()``, printed and in the JSON). After a drain, every peer is checked to have
finished every job, counted in its own tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import re
import sys
import time
from collections.abc import AsyncIterator
from importlib import metadata
from typing import Any, Protocol

import asyncpg

from benchmarks.common import log, with_database

INSTALL_HINT = "pip install -e '.[peers]'"
NAMES = ("procrastinate", "DBOS", "Chancy", "oban-py")
_MODULES = {
    "procrastinate": "benchmarks.peer_procrastinate",
    "DBOS": "benchmarks.peer_dbos",
    "Chancy": "benchmarks.peer_chancy",
    "oban-py": "benchmarks.peer_oban",
}
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One run of one peer: its rate, and what its own tables say it finished."""

    rate: float  # jobs/s
    finished: int  # counted in the peer's own tables after the run
    expected: int
    note: str = ""  # e.g. capped at the time limit

    def check(self) -> str:
        """The finished-job check, as the report prints it."""
        mark = "ok" if self.finished == self.expected else "MISSING"
        return f"{self.finished:,} of {self.expected:,} finished ({mark})"


class Peer(Protocol):
    """What every peer module's ``PEER`` provides."""

    name: str  # as the table shows it
    package: str  # its distribution on PyPI
    min_python: tuple[int, int]
    candidates: tuple[int, ...]  # the concurrency values the peers scenario sweeps
    concurrency: int  # its worker's concurrency in the next run (the sweep sets the best)

    def settings(self) -> dict[str, Any]:
        """The settings it runs with (its knobs and why), for the report."""
        ...

    async def drain(self, dsn: str, n: int, cap: float) -> Outcome:
        """Bulk-enqueue ``n`` no-op jobs (untimed), then time its worker emptying the queue."""
        ...

    async def enqueue(self, dsn: str, n: int) -> Outcome:
        """Time its bulk enqueue of ``n`` jobs with a small JSON payload each."""
        ...


def missing(name: str) -> str | None:
    """Why peer ``name`` cannot run here (with what to do), or None if it can."""
    module = _module(name)
    peer: Peer = module.PEER
    if sys.version_info < peer.min_python:
        need = ".".join(str(x) for x in peer.min_python)
        return (
            f"{name} ({peer.package}) needs Python {need} or newer; this is "
            f"{sys.version_info.major}.{sys.version_info.minor}: skipped"
        )
    try:
        metadata.version(peer.package)
    except metadata.PackageNotFoundError:
        return f"{name} is not installed: skipped (install it with {INSTALL_HINT})"
    return None


def load(name: str) -> Peer:
    """The peer called ``name`` (one of NAMES)."""
    peer: Peer = _module(name).PEER
    return peer


def version(name: str) -> str:
    try:
        return metadata.version(load(name).package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _module(name: str) -> Any:
    if name not in _MODULES:
        raise ValueError(f"unknown peer {name!r}: expected one of {', '.join(NAMES)}")
    return importlib.import_module(_MODULES[name])


@contextlib.asynccontextmanager
async def empty_database(admin_dsn: str, name: str) -> AsyncIterator[str]:
    """Create database ``name`` (empty), yield its DSN, drop it afterwards."""
    if not _DB_NAME.fullmatch(name):
        raise ValueError(f"bad database name {name!r}")
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
        # the embedded server's superuser searches pg_catalog first; peers create their tables
        # unqualified, so give it PostgreSQL's stock search_path in this database
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await admin.execute(
                f'ALTER ROLE CURRENT_USER IN DATABASE "{name}" SET search_path = "$user", public'
            )
    finally:
        await admin.close()
    try:
        yield with_database(admin_dsn, name)
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def count(dsn: str, sql: str) -> int:
    """One count from the peer's own tables, on a connection of its own."""
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


@dataclasses.dataclass(frozen=True)
class Tables:
    """How to read a peer's progress from its own tables (SQL returning one value each)."""

    pending: str  # true while any job is queued or running
    finished: str  # how many jobs finished successfully
    queued: str  # how many jobs are queued (after an enqueue)


async def timed_drain(
    dsn: str, n: int, cap: float, tables: Tables, start: Any, stop: Any
) -> Outcome:
    """Time a drain: ``await start()`` starts the peer's worker, ``await stop()`` stops it.

    The clock runs from just before ``start`` until the peer's tables show no queued or
    running job (polled every 20 ms on a connection of its own, as for pgq_nb and PgQueuer);
    past ``cap`` seconds it stops and reports the rate so far, with a note.
    """
    conn = await asyncpg.connect(dsn)
    note = ""
    try:
        began = time.perf_counter()
        try:
            await start()
            deadline = began + cap
            while await conn.fetchval(tables.pending):
                if time.perf_counter() > deadline:
                    break
                await asyncio.sleep(0.02)
            elapsed = time.perf_counter() - began
            done = int(await conn.fetchval(tables.finished))
        finally:
            await stop()
        if done < n:
            note = f"capped at {cap:g} s with {done:,} of {n:,} done"
        finished = int(await conn.fetchval(tables.finished))
    finally:
        await conn.close()
    return Outcome(rate=done / elapsed, finished=finished, expected=n, note=note)


async def timed_enqueue(dsn: str, n: int, tables: Tables, enqueue: Any) -> Outcome:
    """Time ``await enqueue()`` (the peer's bulk enqueue of ``n`` jobs), then count them."""
    began = time.perf_counter()
    await enqueue()
    elapsed = time.perf_counter() - began
    queued = await count(dsn, tables.queued)
    return Outcome(rate=n / elapsed, finished=queued, expected=n)


async def stop_task(task: asyncio.Task[Any], name: str, timeout: float = 30.0) -> None:
    """Cancel a peer's worker task (how its docs say to stop one run in asyncio) and wait."""
    task.cancel()
    try:
        await asyncio.wait_for(task, timeout=timeout)
    except (asyncio.CancelledError, TimeoutError):
        pass
    except Exception as exc:
        log(f"  ({name}'s worker ended with {type(exc).__name__}: {exc})")
