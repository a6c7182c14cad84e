"""A throw-away server for test suites: a direct child of the caller that dies with it."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from pgq_nb.embedded import _postmaster as pm
from pgq_nb.embedded._system import ServerUser, bin_dir, server_env
from pgq_nb.embedded.server import START_TIMEOUT, EmbeddedServer
from pgq_nb.errors import EmbeddedServerError

_PR_SET_PDEATHSIG = 1
_STOP_SIGNAL = signal.SIGINT  # postgres "fast shutdown": ends sessions instead of waiting


class _ChildServer(subprocess.Popen[bytes]):
    """The test server process; :meth:`terminate` asks for a fast shutdown."""

    def terminate(self) -> None:
        """Send SIGINT (fast shutdown): SIGTERM would wait for every client to disconnect."""
        self.send_signal(_STOP_SIGNAL)


def start_child_for_tests(home: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """Start Postgres in ``home`` as a foreground child process; return ``(dsn, process)``.

    Initialises ``home`` if needed (without fsync), then runs ``postgres`` directly, with
    fsync, synchronous_commit and full_page_writes off, and waits until it accepts
    connections. On Linux the server gets a parent-death signal, so a killed test run leaves
    no server behind; the kernel sends it when the *thread* that called this function exits,
    so call it from the main thread. Stop it with ``process.terminate()`` (a fast shutdown)
    and ``process.wait()``.
    """
    server = EmbeddedServer(home)
    with server._locked() as user:
        server._init_if_needed(user, sync=False)
        info = pm.read_pidfile(server.data_dir)
        if info is not None and pm.is_postmaster_of(info.pid, server.data_dir):
            raise EmbeddedServerError(
                f"A Postgres server (pid {info.pid}) already runs on {server.data_dir}; stop "
                "it first (EmbeddedServer(home).stop()) or use another home."
            )
        children: list[_ChildServer] = []

        def spawn() -> bool:
            child = _spawn(server, user)
            children.append(child)
            ready = pm.wait_ready(
                server.data_dir, child.pid, START_TIMEOUT, alive=lambda: child.poll() is None
            )
            if not ready:
                child.wait()
            return ready

        try:
            server._launch(user, spawn)
        except BaseException:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
            raise
    return server.dsn(), children[-1]


def _spawn(server: EmbeddedServer, user: ServerUser) -> _ChildServer:
    cmd = [str(bin_dir() / "postgres"), "-D", str(server.data_dir)]
    for setting in ("fsync=off", "synchronous_commit=off", "full_page_writes=off"):
        cmd += ["-c", setting]
    with open(server.log_file, "ab") as log:
        return _ChildServer(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=server_env(),
            cwd="/",
            user=user.uid if user.switch else None,
            group=user.gid if user.switch else None,
            extra_groups=[] if user.switch else None,
            start_new_session=True,  # no terminal signals: only its parent's death stops it
            preexec_fn=_parent_death_hook(),
        )


def _parent_death_hook() -> Callable[[], None] | None:
    """A preexec_fn that makes the kernel send SIGINT to the child when its parent dies."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()

    def hook() -> None:
        # Runs in the child after CPython's setreuid()/setregid(). That order matters: the
        # kernel clears the parent-death signal whenever the effective uid or gid changes.
        if prctl(_PR_SET_PDEATHSIG, int(_STOP_SIGNAL), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return hook
