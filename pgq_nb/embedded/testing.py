"""Throw-away servers for test suites: a home anyone's server can use, a child that dies with us."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from pgq_nb.embedded import _postmaster as pm
from pgq_nb.embedded import _system
from pgq_nb.embedded._layout import HOME_WAY_OUT, check_reachable
from pgq_nb.embedded._system import ServerUser, open_log, server_env, server_user
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

    As root, ``home`` must be a place the ``postgres`` OS user can reach (pytest's ``tmp_path``
    is not): use :func:`temporary_home`. The DSN is the ``pgq_nb`` role's, as
    :meth:`EmbeddedServer.dsn` gives.

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
            server._ensure_app_role()
        except BaseException:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
            raise
    return server.dsn(), children[-1]


@contextlib.contextmanager
def temporary_home() -> Iterator[Path]:
    """A path for a throw-away server's home, which the server's OS user can reach.

    A new directory in the system's temporary directory: pgq_nb made it, so as root it lets
    the ``postgres`` group through (0710). Yields ``<it>/home`` (not created yet). On exit, a
    server still running there is stopped (killed if it resists) and the directory removed.
    """
    user = server_user()
    base = Path(tempfile.mkdtemp(prefix="pgq_nb-test-"))
    try:
        if user.switch:
            os.chown(base, -1, user.gid)
            os.chmod(base, 0o710)
        check_reachable(base, user, "the temporary home", HOME_WAY_OUT + " (or set TMPDIR)")
        yield base / "home"
    finally:
        stop_any_server(base / "home")
        shutil.rmtree(base, ignore_errors=True)


def stop_any_server(home: Path) -> None:
    """Stop the server of ``home`` however it was started; kill it if it resists."""
    with contextlib.suppress(Exception):
        EmbeddedServer(home).stop(timeout=10)
    info = pm.read_pidfile(home / "data")
    if info is not None and pm.is_postmaster_of(info.pid, home / "data"):
        os.kill(info.pid, signal.SIGKILL)
        pm.wait_exit(info.pid, 10)


def _spawn(server: EmbeddedServer, user: ServerUser) -> _ChildServer:
    cmd = [str(_system.bin_dir() / "postgres"), "-D", str(server.data_dir)]
    for setting in ("fsync=off", "synchronous_commit=off", "full_page_writes=off"):
        cmd += ["-c", setting]
    with open_log(server.log_file) as log:
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
