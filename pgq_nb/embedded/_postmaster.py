"""Is a postmaster running on a data directory? Stale lock files, readiness, free ports."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pgq_nb.embedded._safefs import read_text
from pgq_nb.errors import EmbeddedServerError

_PROC = Path("/proc")
_POLL = 0.01


@dataclass(frozen=True)
class Postmaster:
    """What ``postmaster.pid`` says (fields absent while the server is still writing it)."""

    pid: int
    port: int | None
    socket_dir: Path | None
    status: str


def read_pidfile(data_dir: Path) -> Postmaster | None:
    """Parse ``data_dir/postmaster.pid``; None if absent or unreadable."""
    text = read_text(data_dir / "postmaster.pid")
    if text is None:
        return None
    lines = text.splitlines()
    try:
        pid = abs(int(lines[0]))
    except (IndexError, ValueError):
        return None
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
    socket_dir = Path(lines[4].strip()) if len(lines) > 4 and lines[4].strip() else None
    status = lines[7].strip() if len(lines) > 7 else ""
    return Postmaster(pid=pid, port=port, socket_dir=socket_dir, status=status)


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live process (a zombie counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat_line = (_PROC / str(pid) / "stat").read_text()
    except FileNotFoundError:
        return not _PROC.joinpath("self").exists()
    except OSError:
        return True
    return stat_line.rpartition(")")[2].split()[:1] != ["Z"]


def is_postmaster_of(pid: int, data_dir: Path) -> bool:
    """True if ``pid`` is alive and is a postgres process working in ``data_dir``.

    Where ``/proc`` exists, the command line must mention postgres, the process must run as
    the data directory's owner and (when we may look) work in the data directory, so a PID
    reused by an unrelated process, or by another server, is recognised as stale.
    """
    if not pid_alive(pid):
        return False
    if not _PROC.joinpath("self").exists():
        return True
    try:
        cmdline = (_PROC / str(pid) / "cmdline").read_bytes()
        status = (_PROC / str(pid) / "status").read_text()
        owner = os.stat(data_dir).st_uid  # postgres only runs as the data directory's owner
    except OSError:
        return False
    if b"postgres" not in cmdline:
        return False
    uids = next((line.split()[1:3] for line in status.splitlines() if line.startswith("Uid:")), [])
    if str(owner) not in uids:
        return False
    try:
        cwd = os.readlink(_PROC / str(pid) / "cwd")
    except OSError:
        return True  # not ours to inspect: trust the command line
    return cwd == os.path.realpath(data_dir)


def _processes_in(data_dir: Path) -> list[int]:
    """PIDs of processes whose working directory is ``data_dir`` (orphaned backends)."""
    if not _PROC.joinpath("self").exists():
        return []
    real = os.path.realpath(data_dir)
    found = []
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "cwd") == real and pid_alive(int(entry.name)):
                    found.append(int(entry.name))
    return found


def clear_stale(data_dir: Path, socket_dir: Path, wait: float = 10.0) -> None:
    """Remove a stale ``postmaster.pid`` and stale socket lock files; no postmaster may run.

    Postgres itself refuses to start while the PID in a lock file is alive, even when that PID
    now belongs to an unrelated process. Before removing the data directory's lock, wait for
    backends orphaned by a killed postmaster to exit, so none can still touch the data.
    """
    if (data_dir / "postmaster.pid").exists():
        deadline = time.monotonic() + wait
        while leftovers := _processes_in(data_dir):
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"Processes {leftovers} left behind by a stopped Postgres still use "
                    f"{data_dir}. Stop them (kill {' '.join(map(str, leftovers))}) and retry."
                )
            time.sleep(0.05)
        with contextlib.suppress(FileNotFoundError):
            (data_dir / "postmaster.pid").unlink()
    with contextlib.suppress(OSError):
        for lock in socket_dir.glob(".s.PGSQL.*.lock"):
            owner = read_pidfile_line(lock)
            if owner is None or not is_postmaster_of(owner, data_dir):
                lock.unlink(missing_ok=True)
                socket_dir.joinpath(lock.name.removesuffix(".lock")).unlink(missing_ok=True)


def read_pidfile_line(lock: Path) -> int | None:
    """The PID on the first line of a Postgres lock file."""
    try:
        return abs(int((read_text(lock) or "").splitlines()[0]))
    except (IndexError, ValueError):
        return None


def wait_ready(
    data_dir: Path, pid: int, timeout: float, alive: Callable[[], bool] | None = None
) -> bool:
    """Wait until postmaster ``pid`` accepts connections; False if it exits first."""
    deadline = time.monotonic() + timeout
    while True:
        info = read_pidfile(data_dir)
        if info is not None and info.pid == pid and info.status in {"ready", "standby"}:
            return True
        if not (alive() if alive is not None else pid_alive(pid)):
            return False
        if time.monotonic() > deadline:
            raise EmbeddedServerError(
                f"Postgres (pid {pid}) on {data_dir} did not become ready within {timeout:g} s."
            )
        time.sleep(_POLL)


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` has exited; False on timeout."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL)
    return True


def port_available(port: int) -> bool:
    """True if a server could listen on 127.0.0.1:``port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def choose_port(avoid: int | None = None) -> int:
    """A free TCP port on 127.0.0.1, preferably below the usual ephemeral range."""
    for _ in range(50):
        port = random.randint(20000, 32000)
        if port != avoid and port_available(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
