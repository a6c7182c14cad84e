"""The small files of the embedded server's home: secret, settings, socket directory, PG conf."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pgq_nb.embedded import _postmaster as pm
from pgq_nb.embedded._system import ServerUser, chown_to, grant_traverse
from pgq_nb.errors import EmbeddedServerError

PG_CONF = "pgq_nb.conf"
"""Included by the data directory's postgresql.conf; rewritten from the settings at each start."""

_SUN_PATH_MAX = 107 if sys.platform.startswith("linux") else 103  # sizeof(sun_path) - 1


@dataclass(frozen=True)
class Settings:
    """Where the server listens; kept in ``home/server.json``."""

    port: int
    socket_dir: Path


class HomeFiles:
    """Reads and writes the files of one home; callers hold the home's lock when writing."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.data_dir = home / "data"
        self.secret_file = home / "secret"
        self.settings_file = home / "server.json"

    def data_version(self) -> int | None:
        """The major version in ``data/PG_VERSION``; None if there is no data directory."""
        try:
            return int((self.data_dir / "PG_VERSION").read_text().strip().split(".")[0])
        except (OSError, ValueError):
            return None

    def read_secret(self) -> str | None:
        """The password of the ``postgres`` role; None if missing."""
        try:
            return self.secret_file.read_text().strip() or None
        except OSError:
            return None

    def ensure_secret(self) -> str:
        """The password, generated into a new 0600 file if there is none yet."""
        existing = self.read_secret()
        if existing is not None:
            if stat.S_IMODE(self.secret_file.stat().st_mode) & 0o077:
                os.chmod(self.secret_file, 0o600)
            return existing
        self.secret_file.unlink(missing_ok=True)
        secret = secrets.token_urlsafe(32)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        with os.fdopen(os.open(self.secret_file, flags, 0o600), "w") as f:
            f.write(secret + "\n")
        return secret

    def load_settings(self) -> Settings | None:
        """The saved port and socket directory; None if missing or unreadable."""
        try:
            raw = json.loads(self.settings_file.read_text())
            return Settings(int(raw["port"]), Path(raw["socket_dir"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save_settings(self, settings: Settings) -> None:
        """Replace ``server.json`` atomically (if it changed)."""
        if settings == self.load_settings():
            return
        text = json.dumps({"port": settings.port, "socket_dir": str(settings.socket_dir)})
        staging = self.settings_file.with_name(f".server.json.{os.getpid()}")
        with os.fdopen(os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(text + "\n")
        os.replace(staging, self.settings_file)

    def new_settings(self) -> Settings:
        """A free port and a socket directory whose socket path is short enough."""
        return Settings(pm.choose_port(), self.choose_socket_dir())

    def choose_socket_dir(self) -> Path:
        """``home/run``, or a short private directory when that path is too long for a socket."""
        digest = hashlib.sha256(os.fsencode(self.home)).hexdigest()[:12]
        name = f"pgq_nb-{os.getuid()}-{digest}"
        candidates = [self.home / "run", Path(tempfile.gettempdir()) / name, Path("/tmp") / name]
        for candidate in candidates:
            text = str(candidate)
            socket_path = os.fsencode(os.path.join(text, ".s.PGSQL.65535"))
            if len(socket_path) <= _SUN_PATH_MAX and not (
                set(text) & set(",'\"\\") or any(c.isspace() for c in text)
            ):
                return candidate
        raise EmbeddedServerError(
            f"No directory for the server's unix socket has a short enough path (tried "
            f"{', '.join(map(str, candidates))}). Set PGQ_NB_HOME to a shorter path."
        )


def ensure_socket_dir(directory: Path, user: ServerUser) -> None:
    """Create the socket directory (0700, the server user's) or check the existing one."""
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700)
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise EmbeddedServerError(f"{directory} should be a socket directory; remove it.")
    if st.st_uid != user.uid:
        if st.st_uid != os.geteuid():
            raise EmbeddedServerError(
                f"The socket directory {directory} belongs to uid {st.st_uid}, not to the "
                "server's user. Remove it and retry."
            )
        chown_to(directory, user)
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(directory, 0o700)
    grant_traverse(directory.parent, user)


def write_pg_conf(data_dir: Path, settings: Settings, user: ServerUser) -> None:
    """Write the listen address, port and socket directory into ``data_dir/pgq_nb.conf``."""
    socket_dir = str(settings.socket_dir).replace("'", "''")
    text = (
        "# Written by pgq_nb at every start, from ../server.json; edits here are lost.\n"
        "listen_addresses = '127.0.0.1'\n"
        f"port = {settings.port}\n"
        f"unix_socket_directories = '{socket_dir}'\n"
        "max_connections = 200\n"
    )
    path = data_dir / PG_CONF
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(text)
    chown_to(path, user)
