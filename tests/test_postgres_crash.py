"""Postgres crashing under running workers (issue #14): nothing may stay `picked` for good.

The slow tests start a Postgres of their own (never the session's) in a temporary home, crash
it while workers run (SIGQUIT to the postmaster, an immediate stop as `pg_ctl stop -m
immediate`; or SIGKILL of the postmaster alone), and start it again on the same home and port.
A crash can lose the reply to a COMMIT the server did commit, or, with synchronous_commit off
(as the test server runs, and as any server tuned for speed may), a commit the client was
already told about: the database goes back a fraction of a second. Either way a live worker
can be left holding `picked` jobs it is not running, which its heartbeat keeps from ever
being reclaimed. Whatever happened, every job must end in history exactly once, nothing may
stay `picked`, and no worker may die of it.

The fast test loses the reply to a claim's COMMIT on purpose, through a small proxy, without
crashing anything.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import struct
import subprocess
import threading
import time
import urllib.parse
import warnings
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

import pgq_nb
from pgq_nb import db, runtime
from pgq_nb.embedded import start_child_for_tests, temporary_home
from tests.conftest import SCHEMA, start_worker_process, stop_processes

T = TypeVar("T")

#: The crashes must never use up a job's attempts (see tests/apps/crash_app.py).
PATIENT = pgq_nb.RetryPolicy(max_attempts=20, base_delay=0.05, max_delay=0.5)
#: With no progress for this long and the queue not empty, the rest is stuck: with 3 s
#: heartbeat timeouts, anything a worker lost is claimed again within a few seconds.
STALL_S = 30.0
#: Errors to wait out while the server is down or restarting.
PASSING: tuple[type[BaseException], ...] = (*db.TRANSIENT_ERRORS, pgq_nb.PgqError)


# -- a server to crash -------------------------------------------------------------------------


class CrashableServer:
    """A Postgres of the test's own in ``home``, a child of pytest, crashed and restarted."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.dsn, self.process = start_child_for_tests(home)
        self.crashes: list[str] = []

    def crash(self, sig: signal.Signals = signal.SIGQUIT) -> None:
        """Stop the server like a crash: SIGQUIT (immediate shutdown) or SIGKILL."""
        os.kill(self.process.pid, sig)  # the child process is the postmaster itself
        self.process.wait(timeout=60)
        self.crashes.append(sig.name)

    def restart(self) -> None:
        """Start it again on the same home; it recovers from the crash, then accepts
        connections on the port kept in server.json, so the DSN is the same."""
        dsn, self.process = start_child_for_tests(self.home)
        assert dsn == self.dsn, f"the restarted server has another DSN: {dsn!r}, not {self.dsn!r}"

    def durable_commits(self) -> None:
        """Make every later session of the DSN's role commit durably. (The test server runs
        with synchronous_commit off: a crash loses the last commits it acknowledged.)"""

        async def alter() -> None:
            conn = await db.connect_one(self.dsn)
            try:
                await conn.execute("ALTER ROLE CURRENT_USER SET synchronous_commit = on")
            finally:
                await conn.close()

        runtime.run_sync(alter())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # a fast shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def crashable_server() -> Iterator[CrashableServer]:
    """A CrashableServer in a temporary home (one the server's OS user can reach), stopped and
    removed at the end."""
    with temporary_home() as home:
        server = CrashableServer(home)
        try:
            yield server
        finally:
            server.stop()


# -- looking at the queue while the server comes and goes --------------------------------------


def _connect(dsn: str) -> pgq_nb.Queue:
    """A queue with the quick timings conftest gives every test queue and worker process."""
    return pgq_nb.connect(
        dsn, schema=SCHEMA, heartbeat_interval=0.5, heartbeat_timeout=3.0, poll_interval=0.2
    )


def _retrying(call: Callable[[], Coroutine[Any, Any, T]], timeout: float = 60.0) -> T:
    """Run ``call()`` on the pgq_nb loop, again while the server is unreachable or restarting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return runtime.run_sync(call())
        except PASSING:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _fetch(q: pgq_nb.Queue, query: str, *args: Any) -> list[Any]:
    async def run() -> list[Any]:
        rows: list[Any] = await q.aio.pool.fetch(query.format(s=q.schema), *args)
        return rows

    return _retrying(run)


def _finished(q: pgq_nb.Queue) -> int:
    count: int = _fetch(q, "SELECT count(*) AS n FROM {s}.history")[0]["n"]
    return count


def _leftovers(q: pgq_nb.Queue) -> list[Any]:
    return _fetch(
        q,
        "SELECT j.id, j.status, j.worker_id, j.attempts, j.started IS NOT NULL AS started, "
        "w.id IS NOT NULL AS worker_alive, "
        "extract(epoch FROM now() - w.heartbeat)::float8 AS heartbeat_age "
        "FROM {s}.jobs AS j LEFT JOIN {s}.workers AS w ON w.id = j.worker_id ORDER BY j.id",
    )


def _wait_for_finished(
    q: pgq_nb.Queue, at_least: int, procs: Sequence[subprocess.Popen[bytes]] = ()
) -> None:
    """Wait until ``at_least`` jobs are in history; fail once nothing finished for STALL_S."""
    last, changed = -1, time.monotonic()
    while (n := _finished(q)) < at_least:
        if n != last:
            last, changed = n, time.monotonic()
        if time.monotonic() - changed > STALL_S:
            left = collections.Counter(r["status"] for r in _leftovers(q))
            raise AssertionError(
                f"stuck at {n} finished jobs (waiting for {at_least}) for {STALL_S:.0f} s; "
                f"jobs left {dict(left)}; worker exit codes {[p.poll() for p in procs]}"
                + _exited(procs)
            )
        time.sleep(0.02)


def _exited(procs: Sequence[subprocess.Popen[bytes]]) -> str:
    """A note for a message when a worker process exited (its error is in its stderr)."""
    codes = [p.poll() for p in procs]
    if all(c is None for c in codes):
        return ""
    return (
        f"\n(worker process exit codes {codes}: a worker exited during the crashes; its error "
        "is in the captured stderr)"
    )


def _settle(q: pgq_nb.Queue, total: int, timeout: float, stall: float = STALL_S) -> float:
    """Wait until ``total`` jobs are in history and none is left in jobs, at most ``timeout``
    seconds, or until nothing changed for ``stall`` seconds; return the seconds waited."""
    start = time.monotonic()
    last: tuple[Any, ...] = ()
    changed = start
    while True:
        rows = _fetch(
            q,
            "SELECT (SELECT count(*) FROM {s}.history) AS finished, "
            "(SELECT count(*) FROM {s}.jobs) AS live, "
            "(SELECT count(*) FROM {s}.jobs WHERE status = 'picked') AS picked",
        )
        now = time.monotonic()
        state = tuple(rows[0].values())
        if state[0] >= total and state[1] == 0:
            return now - start
        if state != last:
            last, changed = state, now
        if now - changed > stall or now - start > timeout:
            return now - start
        time.sleep(0.25)


def _describe(left: list[Any], runs: dict[int, list[int]], waited: float, after: str) -> str:
    """What is left in jobs, for an assertion message: the `picked` jobs by worker, and whether
    they had run (their completion was lost) or not (their claim's reply was lost)."""
    by_status = collections.Counter(r["status"] for r in left)
    picked = [r for r in left if r["status"] == "picked"]
    lines = [
        f"{len(left)} job(s) still in jobs {dict(by_status)} {waited:.0f} s after {after}; "
        f"{len(picked)} stuck 'picked':"
    ]
    for worker_id in sorted({r["worker_id"] for r in picked}):
        mine = [r for r in picked if r["worker_id"] == worker_id]
        alive = mine[0]["worker_alive"]
        state = f"alive, heartbeat {mine[0]['heartbeat_age']:.1f} s ago" if alive else "gone"
        ran = [r for r in mine if r["id"] in runs and max(runs[r["id"]]) >= r["attempts"]]
        lines.append(
            f"  worker {worker_id} ({state}): {len(mine)} picked, {len(ran)} of which had run "
            f"(completion lost), {len(mine) - len(ran)} never ran (claim's reply lost); ids "
            f"{[r['id'] for r in mine][:25]}, attempts "
            f"{sorted(collections.Counter(r['attempts'] for r in mine).items())}, marked "
            f"started {sum(r['started'] for r in mine)}"
        )
    others = [(r["id"], r["status"]) for r in left if r["status"] != "picked"]
    if others:
        lines.append(f"  not picked: {others[:25]}")
    return "\n".join(lines)


def _read_runs(log_dir: Path) -> dict[int, list[int]]:
    """job id -> the attempts that ran, from the worker processes' run logs."""
    runs: dict[int, list[int]] = collections.defaultdict(list)
    for log in log_dir.glob("runs-*.log"):
        for line in log.read_text().splitlines():
            job_id, attempt, _pid = line.split()
            runs[int(job_id)].append(int(attempt))
    return runs


def _check_history(q: pgq_nb.Queue, expected: Sequence[int], where: str = "TRUE") -> None:
    """Every expected job in history exactly once, and succeeded."""
    rows = _fetch(
        q, f"SELECT id, status, attempts, error FROM {{s}}.history WHERE {where} ORDER BY id"
    )
    ids = [r["id"] for r in rows]
    doubled = [i for i, n in collections.Counter(ids).items() if n > 1]
    missing = sorted(set(expected) - set(ids))
    extra = sorted(set(ids) - set(expected))
    assert not doubled and not missing and not extra, (
        f"history has {len(ids)} rows for {len(expected)} jobs: {len(doubled)} doubled "
        f"{doubled[:25]}, {len(missing)} missing {missing[:25]}, {len(extra)} unexpected "
        f"{extra[:25]}"
    )
    failed = [(r["id"], r["status"], r["attempts"], r["error"]) for r in rows]
    failed = [f for f in failed if f[1] != "succeeded"]
    assert not failed, f"{len(failed)} jobs did not succeed: {failed[:10]}"


def _warn_if_nothing_lost(runs: dict[int, list[int]], what: str) -> None:
    """The crash timing is chosen to lose work; say so if this run lost none (it then did not
    exercise the bug, though it still checked that a crash loses and doubles nothing)."""
    if not any(len(r) > 1 for r in runs.values()):
        warnings.warn(f"{what}: no job ran twice, so the crashes lost no work", stacklevel=2)


def _close(q: pgq_nb.Queue) -> None:
    """Close the queue's pool (its server goes away with the test)."""

    async def close() -> None:
        try:
            async with asyncio.timeout(10):
                await q.aio.pool.close()
        except TimeoutError:
            q.aio.pool.terminate()

    runtime.run_sync(close())


# -- crashes -------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("sig", "commits"),
    [(signal.SIGQUIT, "sync_off"), (signal.SIGQUIT, "sync_on"), (signal.SIGKILL, "sync_off")],
    ids=["sigquit-sync_off", "sigquit-sync_on", "sigkill-sync_off"],
)
def test_drain_survives_repeated_postgres_crashes(
    tmp_path: Path, sig: signal.Signals, commits: str
) -> None:
    """20,000 jobs, two worker processes, four crashes during the drain.

    sigquit: an immediate shutdown; the backends are told and exit at once. sigkill: the
    postmaster dies alone; each backend ends its session with a FATAL error when it next
    waits for its client, as a server host's OOM killer would leave it.
    sync_off: the test server as it is (synchronous_commit off): each crash also takes back
    the last commits it acknowledged, claims and completions alike. sync_on: every commit
    acknowledged is durable; what a crash loses is the replies in flight."""
    total = 20_000
    log_dir = tmp_path / "runs"
    log_dir.mkdir()
    with crashable_server() as server:
        q: pgq_nb.Queue | None = None
        procs: list[subprocess.Popen[bytes]] = []
        try:
            if commits == "sync_on":
                server.durable_commits()
            q = _connect(server.dsn)
            q.entrypoint("tick", retry=PATIENT)(lambda job: None)
            ids = q.enqueue(["tick"] * total)
            procs = [
                start_worker_process(
                    server.dsn, "crash_app:q", "--concurrency", "16", RUN_LOG_DIR=str(log_dir)
                )
                for _ in range(2)
            ]
            for fraction in (0.15, 0.35, 0.55, 0.75):
                _wait_for_finished(q, int(total * fraction), procs)
                server.crash(sig)
                time.sleep(0.5)  # the workers find the server gone
                server.restart()
            waited = _settle(q, total, timeout=240)
            left = _leftovers(q)
            assert not left, _describe(
                left, _read_runs(log_dir), waited, f"the last of the crashes {server.crashes}"
            ) + _exited(procs)
            assert all(p.poll() is None for p in procs), "a worker process died" + _exited(procs)
            _check_history(q, ids)
            runs = _read_runs(log_dir)
            assert set(runs) == set(ids), f"{len(set(ids) - set(runs))} jobs never ran"
            if commits == "sync_off":
                _warn_if_nothing_lost(runs, f"drain ({sig.name}, sync_off)")
        finally:
            stop_processes(procs)
            if q is not None:
                _close(q)
    assert [p.returncode for p in procs] == [0, 0]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_workflow_run_finishes_after_a_postgres_crash() -> None:
    """A fan-out of 400 steps and a fan-in step, run by a worker in this process; one crash,
    timed to lose a batch of steps' completions: right after they commit, before the WAL
    writer writes them (the test server commits with synchronous_commit off)."""
    parts_n = 400
    with crashable_server() as server:
        q: pgq_nb.Queue | None = None
        worker: pgq_nb.WorkerHandle | None = None
        runs: dict[int, list[int]] = collections.defaultdict(list)
        gate = threading.Event()  # cleared: the steps wait before they finish
        gate.set()
        held: set[int] = set()
        try:
            q = _connect(server.dsn)

            @q.entrypoint("part", retry=PATIENT)
            async def part(job: pgq_nb.Job) -> int:
                while not gate.is_set():
                    held.add(job.id)
                    await asyncio.sleep(0.005)
                held.discard(job.id)
                await asyncio.sleep(0.01)
                runs[job.id].append(job.attempts)
                return int(job.data)

            @q.entrypoint("total", retry=PATIENT)
            async def total(job: pgq_nb.Job) -> dict[str, int]:
                parents = job.parent_results()["part"]
                runs[job.id].append(job.attempts)
                return {"sum": sum(parents), "parents": len(parents)}

            wf = q.workflow("crash_fan_in")
            parts = wf.map("part", range(parts_n))
            wf.step("total", depends_on=parts)
            run = wf.submit()
            worker = q.start_worker(concurrency=16)
            _wait_for_finished(q, parts_n // 3)
            # Hold a full batch of steps in their handlers long enough for their claim to
            # reach the WAL, then let them finish and crash as soon as their completions are
            # committed.
            gate.clear()
            deadline = time.monotonic() + 60
            while len(held) < 16:
                assert time.monotonic() < deadline, f"only {len(held)} steps held after 60 s"
                time.sleep(0.01)
            time.sleep(1.0)
            before = _finished(q)
            gate.set()
            deadline = time.monotonic() + 60
            while _finished(q) <= before:
                assert time.monotonic() < deadline, "the held steps did not finish"
            server.crash()
            time.sleep(0.5)
            server.restart()

            started = time.monotonic()
            deadline = started + 90
            while True:
                try:
                    state = runtime.run_sync(run.aio.wait(timeout=60, progress=False))
                    break
                except TimeoutError:
                    pytest.fail(
                        "run.wait(timeout=60) did not return after the crash; "
                        f"{_retrying(run.aio.counts)}\n"
                        + _describe(_leftovers(q), runs, time.monotonic() - started, "restart")
                    )
                except PASSING:
                    assert time.monotonic() < deadline, "the server did not come back"
                    time.sleep(0.1)
            left = _leftovers(q)
            assert state == "succeeded", f"the run ended {state}\n" + _describe(
                left, runs, time.monotonic() - started, "restart"
            )
            assert worker.running, "the worker stopped"
            results = _retrying(run.aio.results)
            assert results["total"] == {"sum": sum(range(parts_n)), "parents": parts_n}
            steps = _retrying(run.aio.steps)
            assert len(steps) == parts_n + 1
            assert not left, _describe(left, runs, time.monotonic() - started, "restart")
            _check_history(q, [s["id"] for s in steps], where=f"workflow_id = {int(run.id)}")
            _warn_if_nothing_lost(runs, "workflow")
        finally:
            gate.set()
            if worker is not None:
                worker.stop(timeout=60)
            if q is not None:
                _close(q)


# -- a lost COMMIT reply, without a crash -----------------------------------------------------


class _Conn:
    """What the proxy knows of one client connection."""

    def __init__(self) -> None:
        self.claim_statements: set[bytes] = set()  # names of prepared claim statements
        self.in_claim = False  # a claim ran since the last time the session was idle
        self.claimed = 0  # rows of that claim


class LostReplyProxy:
    """A TCP proxy in front of Postgres that loses, once, the reply to the COMMIT of a
    transaction that claimed jobs: the server commits, the client's connection is reset.

    It reads the protocol's framing only: a claim is a statement that calls claim_batch;
    from its Bind on, the server's messages are held until ReadyForQuery, and the first time
    the session comes back idle after a committed claim of some jobs, they are dropped."""

    MARK = b"claim_batch("  # claim_jobs and finish_and_claim call it

    def __init__(self, dsn: str) -> None:
        url = urllib.parse.urlsplit(dsn)
        query = urllib.parse.parse_qs(url.query)
        self._host = url.hostname or query.get("host", ["localhost"])[0]
        self._port = url.port or int(query.get("port", ["5432"])[0])
        self.dropped = threading.Event()
        self.lost_claim = 0  # jobs in the claim whose COMMIT reply was lost
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server = self._call(asyncio.start_server(self._serve, "127.0.0.1", 0))
        port = self._server.sockets[0].getsockname()[1]
        userinfo = url.netloc.rpartition("@")[0]
        database = url.path.lstrip("/") or query.get("dbname", ["postgres"])[0]
        self.dsn = f"postgresql://{userinfo}@127.0.0.1:{port}/{database}?sslmode=disable"

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def close(self) -> None:
        async def shut() -> None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        self._call(shut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _serve(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        s_writer: asyncio.StreamWriter | None = None
        try:
            if self._host.startswith("/"):
                path = f"{self._host}/.s.PGSQL.{self._port}"
                s_reader, s_writer = await asyncio.open_unix_connection(path)
            else:
                s_reader, s_writer = await asyncio.open_connection(self._host, self._port)
            conn = _Conn()
            pumps = [
                asyncio.ensure_future(self._from_client(conn, c_reader, s_writer)),
                asyncio.ensure_future(self._from_server(conn, s_reader, c_writer)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for writer in (c_writer, s_writer):
                if writer is not None:
                    writer.transport.abort()
            self._tasks.discard(task)

    async def _from_client(
        self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        head = await reader.readexactly(4)  # the startup message has no type byte
        body = await reader.readexactly(struct.unpack("!i", head)[0] - 4)
        writer.write(head + body)
        while True:
            head = await reader.readexactly(5)
            body = await reader.readexactly(struct.unpack("!i", head[1:])[0] - 4)
            if head[:1] == b"P":  # Parse: statement name, query
                name, _, rest = body.partition(b"\0")
                if self.MARK in rest.partition(b"\0")[0]:
                    conn.claim_statements.add(name)
                else:
                    conn.claim_statements.discard(name)
            elif head[:1] == b"B":  # Bind: portal name, statement name
                statement = body.partition(b"\0")[2].partition(b"\0")[0]
                if statement in conn.claim_statements:
                    conn.in_claim = True
            elif head[:1] == b"Q" and self.MARK in body:
                conn.in_claim = True
            writer.write(head + body)
            await writer.drain()

    async def _from_server(
        self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        held: list[bytes] = []
        committed = False  # this reply ends a transaction that claimed jobs, committed
        while True:
            head = await reader.readexactly(5)
            body = await reader.readexactly(struct.unpack("!i", head[1:])[0] - 4)
            if not conn.in_claim:
                writer.write(head + body)
                await writer.drain()
                continue
            held.append(head + body)
            if head[:1] == b"C":  # CommandComplete: its tag
                tag = body.rstrip(b"\0")
                if tag == b"COMMIT":
                    committed = True
                elif tag.startswith(b"SELECT") and not conn.claimed:
                    conn.claimed = int(tag.split()[1])  # the claim's own tag comes first
                    committed = True  # unless a transaction is open: then it waits for COMMIT
            if head[:1] != b"Z":  # ReadyForQuery ends a reply: forward it, or lose it
                continue
            idle = body[:1] == b"I"
            if idle and committed and conn.claimed and not self.dropped.is_set():
                self.lost_claim = conn.claimed
                self.dropped.set()
                return  # the connection is reset without the reply
            writer.writelines(held)
            await writer.drain()
            held, committed = [], False
            if idle:
                conn.in_claim, conn.claimed = False, 0


@pytest.mark.timeout(120)
def test_claim_whose_commit_reply_is_lost_is_run(q: pgq_nb.Queue, installed: str) -> None:
    """The server commits a claim of 8 jobs, the worker never hears of it (its connection is
    reset): those jobs must still run, once each."""
    total = 40
    proxy = LostReplyProxy(installed)
    pq: pgq_nb.Queue | None = None
    worker: pgq_nb.WorkerHandle | None = None
    runs: dict[int, list[int]] = collections.defaultdict(list)
    try:
        pq = _connect(proxy.dsn)

        @pq.entrypoint("work", retry=PATIENT)
        async def work(job: pgq_nb.Job) -> None:
            runs[job.id].append(job.attempts)

        q.entrypoint("work", retry=PATIENT)(lambda job: None)
        ids = q.enqueue(["work"] * total)
        worker = pq.start_worker(concurrency=8)
        assert proxy.dropped.wait(30), "the worker never committed a claim through the proxy"
        assert proxy.lost_claim > 0
        waited = _settle(q, total, timeout=60, stall=15)
        left = _leftovers(q)
        assert not left, _describe(
            left, runs, waited, f"a claim of {proxy.lost_claim} jobs lost its COMMIT reply"
        )
        assert worker.running, "the worker stopped"
        _check_history(q, ids)
        assert sorted(runs) == sorted(ids)
        doubled = {i: r for i, r in runs.items() if len(r) > 1}
        assert not doubled, f"jobs ran more than once: {doubled}"
    finally:
        if worker is not None:
            worker.stop(timeout=30)
        if pq is not None:
            _close(pq)
        proxy.close()
