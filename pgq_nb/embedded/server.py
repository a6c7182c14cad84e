"""The embedded server: a PostgreSQL 18 data directory in a per-user home, run detached.

Layout of the home (``$PGQ_NB_HOME``; else ``/var/lib/pgq_nb`` as root, and
``$XDG_DATA_HOME/pgq_nb`` or ``~/.local/share/pgq_nb`` for anyone else)::

    secret        the password of the ``postgres`` superuser, for pgq_nb's own set-up only
    app_secret    the password of the ``pgq_nb`` role, the one :meth:`EmbeddedServer.dsn` uses
    server.json   port and unix-socket directory, chosen at init and kept
    postgres.log  output of initdb, pg_ctl and the server
    lock          flock()ed around initialisation and start-up
    run/          the unix socket (or a short directory under /tmp when the path is too long)
    data/         the data directory (owned by the ``postgres`` OS user when we are root)

The home and every file in it belong to the invoking user, mode 0600 (the home 0700, or 0710
with the ``postgres`` group as root); anything else is refused, never repaired, because someone
else may have made it. See ``_safefs``, ``_layout`` (root) and ``_roles`` (the role).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from pgq_nb.embedded import _postmaster as pm
from pgq_nb.embedded import _system
from pgq_nb.embedded._home import (
    HomeFiles,
    Settings,
    ensure_socket_dir,
    max_connections,
    new_secret,
    write_pg_conf,
)
from pgq_nb.embedded._initdb import initdb
from pgq_nb.embedded._layout import (
    HOME_WAY_OUT,
    check_no_legacy_data,
    check_reachable,
    default_home,
    ensure_home,
    usable_bin_dir,
)
from pgq_nb.embedded._roles import APP_ROLE, SUPERUSER, set_up_app_role
from pgq_nb.embedded._safefs import check_private, open_private, refuse, who
from pgq_nb.embedded._system import (
    PG_MAJOR,
    ServerUser,
    log_size,
    log_tail,
    rotate_log,
    run_logged,
    server_user,
)
from pgq_nb.errors import ConfigurationError, EmbeddedServerError

__all__ = ["EmbeddedServer", "ServerStatus", "default_home"]

START_TIMEOUT = 60.0
"""Seconds to wait for initdb, or for the server to accept connections."""

_PG_CTL_UNSAFE = frozenset('"$`\\\n')  # pg_ctl puts the data directory in "..." for /bin/sh
_PORT_TAKEN = ("could not bind", "could not create any TCP/IP sockets", "Address already in use")


@dataclass(frozen=True, kw_only=True)
class ServerStatus:
    """A snapshot of the embedded server, as :meth:`EmbeddedServer.status` sees it."""

    running: bool
    pid: int | None
    port: int | None
    data_dir: Path
    socket_dir: Path | None
    version: int | None
    """Major version of the data directory; None if not initialised."""
    initialised: bool


class EmbeddedServer:
    """A local PostgreSQL 18 server in ``home``, reachable by unix socket and 127.0.0.1.

    Every connection needs a password: :meth:`dsn` connects as the ``pgq_nb`` role (no
    superuser), whose password is kept in ``home/app_secret``. The server runs detached: it
    outlives the Python process that started it, until :meth:`stop`.
    """

    def __init__(self, home: Path | None = None) -> None:
        chosen = default_home() if home is None else Path(home)
        self.home: Path = Path(os.path.abspath(chosen.expanduser()))
        self.data_dir: Path = self.home / "data"
        self.log_file: Path = self.home / "postgres.log"
        self._files = HomeFiles(self.home)

    def __repr__(self) -> str:
        return f"EmbeddedServer(home={str(self.home)!r})"

    # -- public ------------------------------------------------------------------------------

    def ensure_running(self) -> str:
        """Initialise the home if needed, start the server if it is not running; return its DSN.

        Safe when several processes call it at once: initialisation and start-up happen under
        an exclusive lock on ``home/lock``. The returned DSN uses the unix socket and the
        ``pgq_nb`` role, which may create schemas but is no superuser.
        """
        self.start()
        return self.dsn()

    def start(self) -> None:
        """Start the server detached (initialising the home first if needed); idempotent.

        Also sets up the ``pgq_nb`` role if the home has none yet (a home made by an older
        pgq_nb), handing it the pgq_nb schemas already there.
        """
        max_connections()  # a bad PGQ_NB_MAX_CONNECTIONS fails before anything is done
        check_no_legacy_data(self.home)
        with self._locked() as user:
            self._init_if_needed(user, sync=True)
            if not self._adopt_running():
                cmd = [str(_system.bin_dir() / "pg_ctl"), "start", "-D", str(self.data_dir)]
                cmd += ["-w", "-t", str(int(START_TIMEOUT))]  # pg_ctl detaches the server
                timeout = START_TIMEOUT + 5
                self._launch(user, lambda: run_logged(cmd, user, self.log_file, timeout) == 0)
            self._ensure_app_role()

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the server; False if it was not running.

        Sends SIGINT, Postgres's fast shutdown (what ``pg_ctl stop -m fast`` does): sessions are
        ended and a shutdown checkpoint written. Waits up to ``timeout`` seconds for the exit.
        """
        if not self.data_dir.is_dir():
            return False
        with self._locked():
            info = pm.read_pidfile(self.data_dir)
            if info is None or not pm.is_postmaster_of(info.pid, self.data_dir):
                return False
            try:
                os.kill(info.pid, signal.SIGINT)
            except ProcessLookupError:
                return False
            if not pm.wait_exit(info.pid, timeout):
                raise EmbeddedServerError(
                    f"Postgres (pid {info.pid}) did not stop within {timeout:g} s. Its log is "
                    f"{self.log_file}; `kill -QUIT {info.pid}` stops it immediately."
                )
            return True

    def status(self) -> ServerStatus:
        """Whether the server runs, and where; never starts or changes anything."""
        version = self._files.data_version()
        settings = self._files.load_settings()
        info = pm.read_pidfile(self.data_dir) if version is not None else None
        if info is not None and not pm.is_postmaster_of(info.pid, self.data_dir):
            info = None
        port = info.port if info is not None and info.port else None
        socket_dir = info.socket_dir if info is not None else None
        if settings is not None:
            port = port or settings.port
            socket_dir = socket_dir or settings.socket_dir
        return ServerStatus(
            running=info is not None,
            pid=info.pid if info is not None else None,
            port=port,
            data_dir=self.data_dir,
            socket_dir=socket_dir,
            version=version,
            initialised=version is not None,
        )

    def dsn(self, *, tcp: bool = False) -> str:
        """The ``pgq_nb`` role's DSN of the ``postgres`` database (unix socket, or 127.0.0.1)."""
        settings = self._settings_or_raise()
        secret = self._files.read_app_secret()
        if secret is None:
            if self._files.read_secret() is None:
                raise EmbeddedServerError(self._missing_secret_message())
            raise EmbeddedServerError(
                f"The embedded Postgres in {self.home} has no role for applications yet (an "
                "older pgq_nb made it, or its set-up was interrupted). Start it once with "
                "EmbeddedServer().ensure_running() or `pgq-nb db start`, which sets it up."
            )
        return _url(APP_ROLE, secret, settings, tcp=tcp)

    def admin_dsn(self, *, tcp: bool = False) -> str:
        """The superuser's DSN, for administration only (creating databases or roles).

        A superuser can read any file and run any program as the server's OS user: never hand
        this DSN to job code or to other users; applications get :meth:`dsn`.
        """
        settings = self._settings_or_raise()
        secret = self._files.read_secret()
        if secret is None:
            raise EmbeddedServerError(self._missing_secret_message())
        return _url(SUPERUSER, secret, settings, tcp=tcp)

    def _settings_or_raise(self) -> Settings:
        settings = self._files.load_settings()
        if self._files.data_version() is None or settings is None:
            raise EmbeddedServerError(
                f"The embedded Postgres in {self.home} is not initialised. Call "
                "EmbeddedServer().ensure_running() or run `pgq-nb db start`."
            )
        return settings

    # -- locking and initialisation ----------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[ServerUser]:
        """Create or check the home and hold its lock; yields the user that runs the server."""
        if _PG_CTL_UNSAFE & set(str(self.home)):
            raise ConfigurationError(
                f"The embedded server's home {str(self.home)!r} contains one of the characters "
                '" $ ` \\ or a newline, which pg_ctl cannot handle. Set PGQ_NB_HOME to another '
                "path."
            )
        user = server_user()
        ensure_home(self.home, user)
        check_private(self._files.private_files())
        fd = open_private(self.home / "lock", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield user
        finally:
            os.close(fd)

    def _init_if_needed(self, user: ServerUser, *, sync: bool) -> None:
        """Run initdb unless the data directory exists; check its version if it does."""
        version = self._files.data_version()
        if version is None:
            initdb(self.home, self.data_dir, self.log_file, self._files, user, sync=sync)
            return
        if version != PG_MAJOR:
            raise EmbeddedServerError(self._version_message(version))
        st = os.lstat(self.data_dir)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != user.uid:
            raise refuse(
                self.data_dir,
                f"this data directory is not a directory of {who(user.uid)} (it is "
                f"{stat.filemode(st.st_mode)}, owner {who(st.st_uid)}), so someone else made it",
                f"Move {self.home} away to start afresh.",
            )
        if self._files.read_secret() is None:
            raise EmbeddedServerError(self._missing_secret_message())
        if self._files.load_settings() is None:
            self._files.save_settings(self._files.new_settings())

    # -- starting ----------------------------------------------------------------------------

    def _adopt_running(self) -> bool:
        """True if a postmaster already serves this data directory (waiting until ready)."""
        info = pm.read_pidfile(self.data_dir)
        if info is None or not pm.is_postmaster_of(info.pid, self.data_dir):
            return False
        if not pm.wait_ready(self.data_dir, info.pid, START_TIMEOUT):
            return False
        info = pm.read_pidfile(self.data_dir)
        settings = self._files.load_settings()
        if info is not None and info.port and info.socket_dir:
            actual = Settings(info.port, info.socket_dir)
            if actual != settings:
                self._files.save_settings(actual)
        return True

    def _launch(self, user: ServerUser, spawn: Callable[[], bool]) -> None:
        """Prepare socket, lock files and port, then ``spawn()`` until it reports success.

        ``spawn`` returns True once the server accepts connections, False if it failed; a port
        taken meanwhile, or shared memory still held by a killed server, is retried.
        """
        usable_bin_dir(user)
        check_reachable(self.home, user, "the home", HOME_WAY_OUT)
        rotate_log(self.log_file)
        settings = self._files.load_settings() or self._files.new_settings()
        ensure_socket_dir(settings.socket_dir, user)
        pm.clear_stale(self.data_dir, settings.socket_dir)
        for attempt in range(3):
            if not pm.port_available(settings.port):
                settings = Settings(pm.choose_port(avoid=settings.port), settings.socket_dir)
            self._files.save_settings(settings)
            write_pg_conf(self.data_dir, settings, user)
            offset = log_size(self.log_file)
            if spawn():
                return
            tail = log_tail(self.log_file, offset, self._secrets())
            if attempt < 2 and any(marker in tail for marker in _PORT_TAKEN):
                settings = Settings(pm.choose_port(avoid=settings.port), settings.socket_dir)
                continue
            if attempt < 2 and "shared memory block is still in use" in tail:
                time.sleep(1.0)
                continue
            raise EmbeddedServerError(
                f"PostgreSQL could not start on {self.data_dir}. Last lines of its log:\n"
                f"{tail}\nFull log: {self.log_file}"
            )

    def _ensure_app_role(self) -> None:
        """Set up the ``pgq_nb`` role unless ``app_secret`` says it is; the server runs."""
        if self._files.read_app_secret() is not None:
            return
        settings = self._files.load_settings()
        secret = self._files.read_secret()
        if settings is None or secret is None:
            raise EmbeddedServerError(self._missing_secret_message())
        app_secret = new_secret()
        try:
            set_up_app_role(settings.socket_dir, settings.port, secret, app_secret)
        except Exception as exc:
            raise EmbeddedServerError(
                f"Could not set up the role {APP_ROLE!r} in the embedded Postgres in "
                f"{self.home}: {type(exc).__name__}: {exc}. If the superuser's password in "
                f"{self._files.secret_file} no longer matches, restore it; its log is "
                f"{self.log_file}."
            ) from exc
        self._files.save_app_secret(app_secret)

    def _secrets(self) -> list[str | None]:
        return [self._files.read_secret(), self._files.read_app_secret()]

    # -- messages ----------------------------------------------------------------------------

    def _version_message(self, version: int) -> str:
        return (
            f"The embedded Postgres data directory {self.data_dir} was created by PostgreSQL "
            f"{version}, but pgq_nb's embedded server is PostgreSQL {PG_MAJOR}, which cannot "
            f"open it. Either set PGQ_NB_HOME to a new directory (a fresh PostgreSQL {PG_MAJOR} "
            f"server is created there), or keep the data: start it with PostgreSQL {version}, "
            f"dump it with PostgreSQL {version}'s pg_dumpall (or pg_dump), restore the dump into "
            f"the new server with psql, then remove {self.home}."
        )

    def _missing_secret_message(self) -> str:
        return (
            f"The embedded Postgres in {self.home} has a data directory but its password file "
            f"{self._files.secret_file} is missing, so nothing can connect. Restore that file, or "
            f"stop the server and move {self.home} away to start afresh."
        )


def _url(role: str, secret: str, settings: Settings, *, tcp: bool) -> str:
    auth = f"{role}:{quote(secret, safe='')}"
    if tcp:
        return f"postgresql://{auth}@127.0.0.1:{settings.port}/postgres"
    host = quote(str(settings.socket_dir), safe="/")
    return f"postgresql://{auth}@/postgres?host={host}&port={settings.port}"
