"""The kernel's launcher, and how its whole process tree is found and killed (Linux, /proc).

A notebook's kernel is not started directly: the worker starts ``python kernel_tree.py
WORKER_PID -- KERNEL_CMD...`` (this file as a script: stdlib only, no pgq_nb import), which

- makes itself a *child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``): a process the kernel
  started that loses its parent (a daemon's double fork, a ``start_new_session=True`` child of a
  process that ended) is re-parented to the launcher, not to init, so every process the kernel
  started, in whatever session or group, stays a descendant of the launcher;
- asks for a *parent-death signal* (``prctl(PR_SET_PDEATHSIG, SIGHUP)``): when the worker
  ends, even by SIGKILL, the launcher kills every descendant and its own process group;
- runs the kernel as its child, reaps what is re-parented to it, and when the kernel ends kills
  what the kernel left behind, then exits with the kernel's status.

The runner (:func:`kill_tree`) kills the launcher's descendants before jupyter_client kills the
launcher's process group, so nothing the kernel started survives a timeout, a cancel or the
end of a run. What escapes: a process that changes its user, or one started by a service
outside the tree (``systemd-run``, ``at``, a container runtime). On a platform without /proc or
prctl (not Linux) the launcher only runs the kernel, and only the kernel's process group is
killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> bool:
    """prctl(2), True if it took effect (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _stat(pid: str) -> tuple[int, str] | None:
    """(ppid, state) of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    return int(fields[1]), fields[0]


def descendants(root: int) -> list[int]:
    """The live (not zombie) descendants of ``root``, parents before children."""
    children: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if name.isdigit() and (stat := _stat(name)) is not None and stat[1] not in "ZX":
            children.setdefault(stat[0], []).append(int(name))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found and child != root:
                found.append(child)
                todo.append(child)
    return found


def kill_tree(root: int, rounds: int = 20) -> list[int]:
    """SIGKILL every descendant of ``root`` (not ``root`` itself), again until none is left
    (a process may fork while its siblings are killed); the pids killed."""
    killed: list[int] = []
    for _ in range(rounds):
        found = descendants(root)
        if not found:
            break
        for pid in found:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGSTOP)  # no more forks while the rest is killed
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except OSError:
                pass
    return killed


def _end(*_: object) -> None:
    """The worker ended (or asked us to end): kill everything the kernel started, and us."""
    kill_tree(os.getpid())
    os.killpg(0, signal.SIGKILL)


def main(argv: list[str]) -> int:
    """``kernel_tree.py WORKER_PID -- CMD...``: run CMD as described in the module docstring."""
    parent, cmd = int(argv[1]), argv[3:]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # an interrupt (sent to the group) is the kernel's
    signal.signal(signal.SIGHUP, _end)
    signal.signal(signal.SIGTERM, _end)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_PDEATHSIG, signal.SIGHUP)
    if os.getppid() != parent:  # the worker ended before the signal was asked for
        _end()
    kernel = os.fork()
    if kernel == 0:
        for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    while True:  # reap what is re-parented to us, until the kernel ends
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        if pid == kernel:
            break
    kill_tree(os.getpid())
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
