"""Handlers in processes (issue #17, items 1 and 2): ``processes=N`` and ``executor="process"``.

Real processes, real signals, the real Postgres of the fixtures; one test drives a real kernel.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import pgq_nb
from pgq_nb import runtime
from tests.conftest import REPO, SCHEMA, start_worker_process, stop_processes, worker_env

QUICK_RETRY = pgq_nb.RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.1)


def _picked(q: pgq_nb.Queue) -> int:
    async def run() -> int:
        n: int = await q.aio.pool.fetchval(
            f"SELECT count(*) FROM {SCHEMA}.jobs WHERE status = 'picked'"
        )
        return n

    return runtime.run_sync(run())


def test_closures_and_lambdas_run_in_other_processes(q: pgq_nb.Queue) -> None:
    factor = 3

    def times(job: pgq_nb.Job) -> dict[str, int]:  # a closure, as a cell would define
        return {"pid": os.getpid(), "value": job.data["x"] * factor}

    q.entrypoint("times")(times)
    q.entrypoint("pid")(lambda job: os.getpid())
    ids = q.enqueue(["times"] * 6, [{"x": i} for i in range(6)])
    lam = q.enqueue(["pid"] * 4)
    stats = q.run_until_idle(processes=2)
    assert stats.succeeded == 10 and stats.failed == 0
    results = [q.get_job(i).result for i in ids]
    assert [r["value"] for r in results] == [i * 3 for i in range(6)]
    pids = {r["pid"] for r in results} | {q.get_job(i).result for i in lam}
    assert os.getpid() not in pids
    assert 1 <= len(pids) <= 2
    assert _picked(q) == 0


def test_a_timeout_ends_the_process_so_later_side_effects_never_happen(
    q: pgq_nb.Queue, tmp_path: Path
) -> None:
    marker = tmp_path / "written-after-the-timeout"

    @q.entrypoint("slow", executor="process", timeout=0.5, retry=pgq_nb.RetryPolicy(max_attempts=1))
    def slow(job: pgq_nb.Job) -> None:
        time.sleep(3)
        marker.write_text(str(os.getpid()))

    q.entrypoint("quick", executor="process")(lambda job: "ok")
    bad = q.enqueue("slow")
    good = q.enqueue(["quick"] * 4)
    began = time.monotonic()
    q.run_until_idle()
    info = q.get_job(bad)
    assert info.status is pgq_nb.JobStatus.FAILED
    assert info.error is not None and info.error.startswith("JobTimeoutError"), info.error
    assert "its process was ended" in info.error
    assert set(q.statuses(good).values()) == {pgq_nb.JobStatus.SUCCEEDED}
    time.sleep(max(0.0, 5 - (time.monotonic() - began)))  # well past when it would write
    assert not marker.exists()


@pytest.mark.parametrize("crash", ["os._exit", "segfault"])
def test_a_handler_that_kills_its_process_loses_only_its_attempt(
    q: pgq_nb.Queue, crash: str
) -> None:
    @q.entrypoint("crashy", retry=QUICK_RETRY)
    def crashy(job: pgq_nb.Job) -> str:
        if job.attempts == 1:
            if crash == "os._exit":
                os._exit(7)
            ctypes.string_at(0)  # SIGSEGV
        return "second time lucky"

    @q.entrypoint("steady")
    def steady(job: pgq_nb.Job) -> int:
        time.sleep(0.2)
        return os.getpid()

    bad = q.enqueue("crashy")
    good = q.enqueue(["steady"] * 6)
    stats = q.run_until_idle(processes=2, timeout=120)
    assert stats.succeeded == 7 and stats.retried == 1 and stats.failed == 0
    info = q.get_job(bad)
    assert info.status is pgq_nb.JobStatus.SUCCEEDED and info.attempts == 2
    assert info.result == "second time lucky"
    assert info.errors and info.errors[0]["error"].startswith("HandlerProcessDied"), info.errors
    code = "EXIT(7)" if crash == "os._exit" else "SIGSEGV"
    assert code in info.errors[0]["error"]
    assert set(q.statuses(good).values()) == {pgq_nb.JobStatus.SUCCEEDED}
    assert _picked(q) == 0


def test_memory_limit_fails_one_job_clearly_and_the_others_succeed(q: pgq_nb.Queue) -> None:
    @q.entrypoint(
        "hungry",
        executor="process",
        memory_limit="1GB",
        retry=pgq_nb.RetryPolicy(max_attempts=1),
    )
    def hungry(job: pgq_nb.Job) -> int:
        return len(bytearray(3 * 10**9))

    @q.entrypoint("modest", executor="process", memory_limit="1GB")
    def modest(job: pgq_nb.Job) -> int:
        return len(bytearray(50 * 10**6))

    bad = q.enqueue("hungry")
    good = q.enqueue(["modest"] * 4)
    stats = q.run_until_idle()
    assert stats.failed == 1 and stats.succeeded == 4
    info = q.get_job(bad)
    assert info.status is pgq_nb.JobStatus.FAILED
    assert info.error is not None and info.error.startswith("MemoryLimitExceeded"), info.error
    assert "memory_limit of 1 GB" in info.error and "peak resident memory" in info.error
    assert [q.get_job(i).result for i in good] == [50 * 10**6] * 4


def test_cancel_ends_a_handler_running_in_a_process(q: pgq_nb.Queue, tmp_path: Path) -> None:
    marker = tmp_path / "written-after-the-cancel"

    @q.entrypoint("long", executor="process")
    def long(job: pgq_nb.Job) -> None:
        (tmp_path / "started").write_text("")
        time.sleep(4)
        marker.write_text("")

    job_id = q.enqueue("long")
    w = q.start_worker()
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "started").exists():
            assert time.monotonic() < deadline, "the handler did not start in 60 s"
            time.sleep(0.05)
        began = time.monotonic()
        q.cancel(job_id)
        assert q.wait(job_id, timeout=60) == {job_id: "cancelled"}
    finally:
        w.stop(timeout=60)
    time.sleep(max(0.0, 6 - (time.monotonic() - began)))
    assert not marker.exists()


def test_a_handler_that_cannot_be_pickled_is_refused_before_anything_is_claimed(
    q: pgq_nb.Queue,
) -> None:
    lock = threading.Lock()

    def locked(job: pgq_nb.Job) -> None:
        with lock:
            pass

    with pytest.raises(pgq_nb.UnpicklableHandlerError) as refused:
        q.entrypoint("locked", executor="process")(locked)
    message = str(refused.value)
    assert "'lock'" in message and "lock" in message.lower() and "module" in message
    assert "locked" not in q.aio.registry.handlers

    q.entrypoint("locked")(locked)  # fine for threads; refused by a worker of processes
    job_id = q.enqueue("locked")
    with pytest.raises(pgq_nb.UnpicklableHandlerError, match="entrypoint 'locked'"):
        q.run_until_idle(processes=2)
    assert q.get_job(job_id).status is pgq_nb.JobStatus.QUEUED
    assert _picked(q) == 0


@pytest.mark.parametrize("processes", [0, -2, 1.5, "2"])
def test_processes_must_be_a_positive_int(q: pgq_nb.Queue, processes: object) -> None:
    q.entrypoint("noop")(lambda job: None)
    q.enqueue("noop")
    with pytest.raises(pgq_nb.InvalidInputError, match="processes must be a positive int"):
        q.run_until_idle(processes=processes)  # type: ignore[arg-type]
    with pytest.raises(pgq_nb.InvalidInputError, match="processes must be a positive int"):
        q.start_worker(processes=processes)  # type: ignore[arg-type]
    assert _picked(q) == 0


@pytest.mark.parametrize("limit", [-1, 0, "-2GB", "lots", "2 parsecs", True])
def test_memory_limit_must_be_a_size(q: pgq_nb.Queue, limit: object) -> None:
    with pytest.raises(pgq_nb.InvalidInputError, match="is not a memory size"):
        q.entrypoint("x", executor="process", memory_limit=limit)  # type: ignore[arg-type]


def test_options_that_need_a_process_say_so(q: pgq_nb.Queue) -> None:
    with pytest.raises(pgq_nb.InvalidInputError, match="memory_limit needs executor='process'"):
        q.entrypoint("x", memory_limit="2GB")
    with pytest.raises(pgq_nb.InvalidInputError, match="transactional"):
        q.entrypoint("x", executor="process", transactional=True)
    with pytest.raises(pgq_nb.InvalidInputError, match="executor must be one of"):
        q.entrypoint("x", executor="processes")


# -- in a real kernel ----------------------------------------------------------------------

KERNEL_SETUP = """
import os, time, pgq_nb
q = pgq_nb.connect()
factor = 10

def scaled(job):            # a function of the cell, reading a global of the notebook
    return {"pid": os.getpid(), "value": job.data * factor}

def make(offset):
    return lambda job: {"pid": os.getpid(), "value": job.data + offset}

q.entrypoint("scaled")(scaled)
q.entrypoint("shifted")(make(100))   # a closure made in a cell

@q.entrypoint("sleepy")
def sleepy(job):
    with open(os.path.join(OUT, f"{job.id}.pid"), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(60)
    with open(os.path.join(OUT, f"{job.id}.done"), "w") as f:
        f.write("")
"""


class Kernel:
    """A real IPython kernel, driven as a notebook front end drives it."""

    def __init__(self, env: dict[str, str]) -> None:
        from jupyter_client.manager import KernelManager

        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(env=env)
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=120)

    def send(self, code: str) -> str:
        msg_id: str = self.client.execute(code)
        return msg_id

    def reply(self, msg_id: str, timeout: float = 180) -> tuple[str, str]:
        """The cell's status and what it printed (stream text, results, error names)."""
        shown: list[str] = []
        while True:
            msg = self.client.get_iopub_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                shown.append(content["text"])
            elif kind == "execute_result":
                shown.append(content["data"].get("text/plain", ""))
            elif kind == "error":
                shown.append(f"{content['ename']}: {content['evalue']}")
            elif kind == "status" and content["execution_state"] == "idle":
                break
        reply = self.client.get_shell_msg(timeout=timeout)
        return reply["content"]["status"], "".join(shown)

    def run(self, code: str, timeout: float = 180) -> str:
        status, shown = self.reply(self.send(code), timeout)
        assert status == "ok", shown
        return shown

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except FileNotFoundError:
        return False


def test_a_notebook_runs_its_cells_handlers_in_processes_and_stop_stops_them(
    q: pgq_nb.Queue, installed: str, tmp_path: Path
) -> None:
    q.entrypoint("scaled")(lambda job: None)  # so that this side may enqueue them
    q.entrypoint("shifted")(lambda job: None)
    q.entrypoint("sleepy")(lambda job: None)
    env = dict(os.environ, PGQ_NB_DSN=installed, PGQ_NB_SCHEMA=SCHEMA)
    env.pop("PGQ_NB_HOME", None)
    kernel = Kernel(env)
    try:
        kernel.run(f"OUT = {str(tmp_path)!r}\n{KERNEL_SETUP}")
        kernel_pid = int(kernel.run("print(os.getpid())"))
        scaled = q.enqueue(["scaled"] * 4, [1, 2, 3, 4])
        shifted = q.enqueue(["shifted"] * 4, [1, 2, 3, 4])
        shown = kernel.run(
            "print(q.run_until_idle(processes=2, entrypoints=['scaled', 'shifted']))"
        )
        assert "succeeded=8" in shown, shown
        results = [q.get_job(i).result for i in [*scaled, *shifted]]
        assert [r["value"] for r in results] == [10, 20, 30, 40, 101, 102, 103, 104]
        pids = {r["pid"] for r in results}
        assert kernel_pid not in pids and 1 <= len(pids) <= 2

        # the Stop button while two handlers run in processes
        sleepers = q.enqueue(["sleepy"] * 3)
        cell = kernel.send("q.run_until_idle(processes=2)")
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("*.pid"))) < 2:
            assert time.monotonic() < deadline, "two handlers did not start in 120 s"
            time.sleep(0.1)
        running = [int(p.read_text()) for p in tmp_path.glob("*.pid")]
        assert kernel_pid not in running
        kernel.manager.interrupt_kernel()
        status, shown = kernel.reply(cell)
        assert status == "error" and "KeyboardInterrupt" in shown, shown
        assert set(q.statuses(sleepers).values()) == {pgq_nb.JobStatus.QUEUED}
        assert _picked(q) == 0
        attempts = [q.get_job(i).attempts for i in sleepers]
        assert attempts == [0, 0, 0], attempts  # returned, not counted
        for pid in running:
            deadline = time.monotonic() + 30
            while _alive(pid):
                assert time.monotonic() < deadline, f"process {pid} outlived the stop"
                time.sleep(0.1)
        assert kernel.run("print(1 + 1)").strip() == "2"  # the kernel goes on
        assert not list(tmp_path.glob("*.done"))
    finally:
        kernel.close()


def test_pgq_nb_worker_runs_handlers_in_its_processes(q: pgq_nb.Queue, installed: str) -> None:
    q.entrypoint("whoami")(lambda job: None)
    ids = q.enqueue(["whoami"] * 8)
    process = start_worker_process(installed, "process_app:q", "--processes", "2")
    try:
        assert set(q.wait(ids, timeout=120).values()) == {"succeeded"}
    finally:
        stop_processes([process])
    assert process.returncode == 0
    results = [q.get_job(i).result for i in ids]
    pids = {r["pid"] for r in results}
    assert process.pid not in pids and 1 <= len(pids) <= 2
    assert {r["ppid"] for r in results} == {process.pid}  # the worker's own processes
    assert _picked(q) == 0


def test_the_processes_end_when_their_worker_is_killed(q: pgq_nb.Queue, installed: str) -> None:
    q.entrypoint("whoami")(lambda job: None)
    ids = q.enqueue(["whoami"] * 4)
    process = start_worker_process(installed, "process_app:q", "--processes", "2")
    try:
        assert set(q.wait(ids, timeout=120).values()) == {"succeeded"}
        pids = {q.get_job(i).result["pid"] for i in ids}
        assert pids and all(_alive(pid) for pid in pids)
    finally:
        process.kill()  # as a kernel that dies: no clean-up runs
        process.wait()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "a process outlived its worker by 30 s"
        time.sleep(0.2)


def test_workers_say_where_they_run_handlers(q: pgq_nb.Queue) -> None:
    from pgq_nb.notebook.dashboard_html import runs_in

    q.entrypoint("noop")(lambda job: None)
    q.entrypoint("apart", executor="process")(lambda job: None)
    in_processes = q.start_worker(processes=2, entrypoints=["noop"])
    threads = q.start_worker(entrypoints=["noop"])
    mixed = q.start_worker()
    try:
        deadline = time.monotonic() + 60
        while len(q.worker_list()) < 3:
            assert time.monotonic() < deadline, "three workers did not register in 60 s"
            time.sleep(0.1)
        rows = {w["id"]: w for w in q.worker_list()}
        frame = q.workers().set_index("worker_id")
    finally:
        for w in (in_processes, threads, mixed):
            w.stop(timeout=60)
    seen = {
        h: (rows[h.worker.worker_id]["executor"], rows[h.worker.worker_id]["processes"])
        for h in (in_processes, threads, mixed)
    }
    cores = os.cpu_count() or 1
    assert seen[in_processes] == ("process", 2)
    assert seen[threads] == ("thread", None)
    assert seen[mixed] == ("thread", min(cores, 32))
    assert frame["processes"].get(in_processes.worker.worker_id) == 2
    assert [runs_in(rows[h.worker.worker_id]) for h in (in_processes, threads)] == [
        "2 processes",
        "threads",
    ]


def test_a_process_killed_while_idle_is_replaced_and_async_handlers_run_under_asyncio_run(
    q: pgq_nb.Queue,
) -> None:
    @q.entrypoint("pid", executor="process")
    async def pid(job: pgq_nb.Job) -> int:  # an async handler, in a process of its own
        await asyncio.sleep(0)
        return os.getpid()

    w = q.start_worker()
    try:
        first = q.enqueue("pid")
        assert q.wait(first, timeout=60) == {first: "succeeded"}
        before = q.get_job(first).result
        os.kill(before, signal.SIGKILL)  # from outside, between jobs
        deadline = time.monotonic() + 30
        while _alive(before):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)  # the pool's manager notices the death
        later = q.enqueue(["pid"] * 3)
        assert set(q.wait(later, timeout=60).values()) == {"succeeded"}
    finally:
        w.stop(timeout=60)
    assert before != os.getpid() and before not in {q.get_job(i).result for i in later}
    assert all(q.get_job(i).attempts == 1 for i in later)


def test_a_handler_defined_after_the_start_that_cannot_be_pickled_fails_its_jobs_clearly(
    q: pgq_nb.Queue,
) -> None:
    q.entrypoint("fine")(lambda job: os.getpid())
    w = q.start_worker(processes=2)
    try:
        lock = threading.Lock()

        @q.entrypoint("later", retry=pgq_nb.RetryPolicy(max_attempts=1))
        def later(job: pgq_nb.Job) -> None:  # defined in a later cell, after the start
            with lock:
                pass

        bad = q.enqueue("later")
        good = q.enqueue(["fine"] * 3)
        assert q.wait(bad, timeout=60) == {bad: "failed"}
        assert set(q.wait(good, timeout=60).values()) == {"succeeded"}
    finally:
        w.stop(timeout=60)
    error = q.get_job(bad).error
    assert error is not None and error.startswith("UnpicklableHandlerError"), error
    assert "the variable 'lock' it uses" in error and "module" in error
    assert _picked(q) == 0


def test_a_signal_to_the_whole_process_group_stops_gracefully(
    q: pgq_nb.Queue, installed: str, tmp_path: Path
) -> None:
    """Ctrl-C in a terminal and systemd's stop signal every process of the group: the handlers'
    processes leave the decision to the worker, whose grace period lets the job finish."""
    q.entrypoint("nap")(lambda job: None)
    started = tmp_path / "started"
    job_id = q.enqueue("nap", {"started": str(started), "seconds": 2})
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pgq_nb.cli",
            "--log-level",
            "WARNING",
            "worker",
            "process_app:q",
            "--processes",
            "1",
        ],
        env=worker_env(installed),
        cwd=str(REPO),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not started.exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    info = q.get_job(job_id)
    assert info.status is pgq_nb.JobStatus.SUCCEEDED and info.attempts == 1, info.error
    assert info.result == int(started.read_text())
