"""The small files of the embedded server's home: secrets, settings, socket directory, PG conf.

Every one is read and written through ``_safefs``: never through a symlink, and a file that
is not ours or that others may write is refused.
"""

from __future__ import annotations

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
from pgq_nb.embedded._layout import HOME_WAY_OUT, check_reachable
from pgq_nb.embedded._safefs import (
    check_parents,
    make_dir,
    open_dir,
    read_private,
    read_text,
    refuse,
    replace_file,
    who,
)
from pgq_nb.embedded._system import ServerUser
from pgq_nb.errors import ConfigurationError, EmbeddedServerError

PG_CONF = "pgq_nb.conf"
"""Included by the data directory's postgresql.conf; rewritten from the settings at each start."""

MAX_CONNECTIONS_ENV = "PGQ_NB_MAX_CONNECTIONS"
DEFAULT_MAX_CONNECTIONS = 200
_MAX_CONNECTIONS_RANGE = range(5, 10_001)

_SUN_PATH_MAX = 107 if sys.platform.startswith("linux") else 103  # sizeof(sun_path) - 1


@dataclass(frozen=True)
class Settings:
    """Where the server listens; kept in ``home/server.json``."""

    port: int
    socket_dir: Path


def max_connections() -> int:
    """``$PGQ_NB_MAX_CONNECTIONS`` (default 200), checked; read at every start."""
    raw = os.environ.get(MAX_CONNECTIONS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_CONNECTIONS
    low, high = _MAX_CONNECTIONS_RANGE[0], _MAX_CONNECTIONS_RANGE[-1]
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if value not in _MAX_CONNECTIONS_RANGE:
        raise ConfigurationError(
            f"{MAX_CONNECTIONS_ENV}={raw!r} is not a connection limit the embedded Postgres can "
            f"use: give a whole number from {low} to {high} (the default is "
            f"{DEFAULT_MAX_CONNECTIONS}), or unset it."
        )
    return value


class HomeFiles:
    """Reads and writes the files of one home; callers hold the home's lock when writing."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.data_dir = home / "data"
        self.secret_file = home / "secret"
        self.app_secret_file = home / "app_secret"
        self.settings_file = home / "server.json"

    def private_files(self) -> list[Path]:
        """The home's files that are ours alone (each may be missing)."""
        names = ("secret", "app_secret", "server.json", "postgres.log", "lock")
        return [self.home / name for name in names]

    def data_version(self) -> int | None:
        """The major version in ``data/PG_VERSION``; None if there is no data directory."""
        try:
            return int((read_text(self.data_dir / "PG_VERSION") or "").strip().split(".")[0])
        except ValueError:
            return None

    def read_secret(self) -> str | None:
        """The password of the ``postgres`` superuser; None if missing."""
        return _read_secret(self.secret_file)

    def read_app_secret(self) -> str | None:
        """The password of the application's role; None if missing."""
        return _read_secret(self.app_secret_file)

    def ensure_secret(self) -> str:
        """The superuser's password, generated into a new 0600 file if there is none yet."""
        existing = self.read_secret()
        if existing is not None:
            return existing
        secret = new_secret()
        replace_file(self.secret_file, secret + "\n")
        return secret

    def save_app_secret(self, secret: str) -> None:
        """Keep the application role's password (written last when the role is set up)."""
        replace_file(self.app_secret_file, secret + "\n")

    def load_settings(self) -> Settings | None:
        """The saved port and socket directory; None if missing or unreadable."""
        try:
            text = read_private(self.settings_file)
        except OSError:
            return None
        if text is None:
            return None
        try:
            raw = json.loads(text)
            port, socket_dir = int(raw["port"]), Path(raw["socket_dir"])
        except (ValueError, KeyError, TypeError):
            return None
        if socket_dir != self.home / "run" and socket_dir.name != self._short_socket_name():
            socket_dir = self.choose_socket_dir()  # the home was moved
        return Settings(port, socket_dir)

    def save_settings(self, settings: Settings) -> None:
        """Replace ``server.json`` atomically (if it changed)."""
        if settings == self.load_settings():
            return
        text = json.dumps({"port": settings.port, "socket_dir": str(settings.socket_dir)})
        replace_file(self.settings_file, text + "\n")

    def new_settings(self) -> Settings:
        """A free port and a socket directory whose socket path is short enough."""
        return Settings(pm.choose_port(), self.choose_socket_dir())

    def _short_socket_name(self) -> str:
        digest = hashlib.sha256(os.fsencode(self.home)).hexdigest()[:12]
        return f"pgq_nb-{os.getuid()}-{digest}"

    def choose_socket_dir(self) -> Path:
        """``home/run``, or a short private directory when that path is too long for a socket."""
        name = self._short_socket_name()
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


def new_secret() -> str:
    """A new random password."""
    return secrets.token_urlsafe(32)


def _read_secret(path: Path) -> str | None:
    text = read_private(path)
    if text is None:
        return None
    return text.strip() or None


def ensure_socket_dir(directory: Path, user: ServerUser) -> None:
    """Create the socket directory (0700, the server user's) or check the existing one."""
    check_parents(directory.parent)
    make_dir(directory, 0o700, **user.owner())
    with open_dir(directory) as (fd, st):
        if st.st_uid not in (user.uid, os.geteuid()):
            raise refuse(
                directory,
                f"this socket directory belongs to {who(st.st_uid)}, who could listen in the "
                "server's place",
                f"Remove it (rm -r {directory}).",
            )
        if st.st_uid != user.uid:
            os.fchown(fd, user.uid, user.gid)
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.fchmod(fd, 0o700)
    check_reachable(directory, user, "the socket directory", HOME_WAY_OUT)


def write_pg_conf(data_dir: Path, settings: Settings, user: ServerUser) -> None:
    """Write listen address, port, socket directory and limits into ``data_dir/pgq_nb.conf``."""
    socket_dir = str(settings.socket_dir).replace("'", "''")
    text = (
        "# Written by pgq_nb at every start, from ../server.json and PGQ_NB_* settings; edits\n"
        "# here are lost.\n"
        "listen_addresses = '127.0.0.1'\n"
        f"port = {settings.port}\n"
        f"unix_socket_directories = '{socket_dir}'\n"
        f"max_connections = {max_connections()}\n"
    )
    path = data_dir / PG_CONF
    if read_text(path) != text:
        replace_file(path, text, **user.owner())


def include_pg_conf(data_dir: Path, user: ServerUser) -> None:
    """Make the data directory's ``postgresql.conf`` include :data:`PG_CONF` (at initdb)."""
    conf = data_dir / "postgresql.conf"
    text = read_private(conf, owner=user.uid)
    if text is None:
        raise EmbeddedServerError(f"initdb left no {conf}; remove {data_dir} and retry.")
    text += f"\n# pgq_nb: listen address, port, socket dir, limits\ninclude = '{PG_CONF}'\n"
    replace_file(conf, text, **user.owner())
