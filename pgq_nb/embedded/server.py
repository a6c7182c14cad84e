"""The embedded server: a PostgreSQL 18 data directory in a per-user home, run detached.

Layout of the home (``$PGQ_NB_HOME``, else ``$XDG_DATA_HOME/pgq_nb`` or
``~/.local/share/pgq_nb``)::

    secret        the password of the ``postgres`` role (mode 0600, the invoking user's)
    server.json   port and unix-socket directory, chosen at init and kept
    postgres.log  output of initdb, pg_ctl and the server
    lock          flock()ed around initialisation and start-up
    run/          the unix socket (or a short directory under /tmp when the path is too long)
    data/         the data directory (owned by the ``postgres`` OS user when we are root)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from pgq_nb.embedded import _postmaster as pm
from pgq_nb.embedded._home import PG_CONF, HomeFiles, Settings, ensure_socket_dir, write_pg_conf
from pgq_nb.embedded._system import (
    PG_MAJOR,
    ServerUser,
    bin_dir,
    check_executable,
    chown_to,
    grant_traverse,
    log_size,
    log_tail,
    run_logged,
    server_user,
)
from pgq_nb.errors import ConfigurationError, EmbeddedServerError

START_TIMEOUT = 60.0
"""Seconds to wait for initdb, or for the server to accept connections."""

_SUPERUSER = "postgres"
_PG_CTL_UNSAFE = frozenset('"$`\\\n')  # pg_ctl puts the data directory in "..." for /bin/sh
_PORT_TAKEN = ("could not bind", "could not create any TCP/IP sockets", "Address already in use")


def default_home() -> Path:
    """The embedded server's home: ``$PGQ_NB_HOME``, else the per-user data directory."""
    configured = os.environ.get("PGQ_NB_HOME")
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "pgq_nb"


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

    Every connection needs the password kept in ``home/secret``. The server runs detached: it
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
        an exclusive lock on ``home/lock``. The returned DSN uses the unix socket.
        """
        self.start()
        return self.dsn()

    def start(self) -> None:
        """Start the server detached (initialising the home first if needed); idempotent."""
        with self._locked() as user:
            self._init_if_needed(user, sync=True)
            if self._adopt_running():
                return
            cmd = [str(bin_dir() / "pg_ctl"), "start", "-D", str(self.data_dir), "-w"]
            cmd += ["-t", str(int(START_TIMEOUT))]  # pg_ctl detaches the server (setsid)
            self._launch(user, lambda: run_logged(cmd, user, self.log_file, START_TIMEOUT + 5) == 0)

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
        """The DSN of the ``postgres`` database: over the unix socket, or over 127.0.0.1."""
        settings = self._files.load_settings()
        secret = self._files.read_secret()
        if self._files.data_version() is None or settings is None:
            raise EmbeddedServerError(
                f"The embedded Postgres in {self.home} is not initialised. Call "
                "EmbeddedServer().ensure_running() or run `pgq-nb db start`."
            )
        if secret is None:
            raise EmbeddedServerError(self._missing_secret_message())
        auth = f"{_SUPERUSER}:{quote(secret, safe='')}"
        if tcp:
            return f"postgresql://{auth}@127.0.0.1:{settings.port}/postgres"
        host = quote(str(settings.socket_dir), safe="/")
        return f"postgresql://{auth}@/postgres?host={host}&port={settings.port}"

    # -- locking and initialisation ----------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[ServerUser]:
        """Create the home (0700) and hold its lock; yields the user that runs the server."""
        if _PG_CTL_UNSAFE & set(str(self.home)):
            raise ConfigurationError(
                f"The embedded server's home {str(self.home)!r} contains one of the characters "
                '" $ ` \\ or a newline, which pg_ctl cannot handle. Set PGQ_NB_HOME to another '
                "path."
            )
        user = server_user()
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        grant_traverse(self.home, user)
        fd = os.open(self.home / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield user
        finally:
            os.close(fd)

    def _init_if_needed(self, user: ServerUser, *, sync: bool) -> None:
        """Run initdb unless the data directory exists; check its version if it does."""
        version = self._files.data_version()
        if version is None:
            self._initdb(user, sync=sync)
            return
        if version != PG_MAJOR:
            raise EmbeddedServerError(self._version_message(version))
        if self._files.read_secret() is None:
            raise EmbeddedServerError(self._missing_secret_message())
        self._files.ensure_secret()  # tightens the file's mode if needed
        if self._files.load_settings() is None:
            self._files.save_settings(self._files.new_settings())

    def _initdb(self, user: ServerUser, *, sync: bool) -> None:
        """Create the data directory: initdb into ``data.initdb/``, then rename it to ``data/``.

        An interrupted initialisation thus never leaves a half-made ``data/`` behind.
        """
        bins = _usable_bin_dir(user)
        secret = self._files.ensure_secret()
        _rotate_log(self.log_file)
        if self.data_dir.exists():
            try:
                self.data_dir.rmdir()
            except OSError:
                raise EmbeddedServerError(
                    f"{self.data_dir} exists but is not a PostgreSQL data directory (it has no "
                    "PG_VERSION). Move it away, or set PGQ_NB_HOME to a new directory."
                ) from None
        staging = self.home / "data.initdb"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700)
        chown_to(staging, user)
        offset = log_size(self.log_file)
        pwfile = self.home / f".pwfile-{os.getpid()}"  # initdb runs as the server user
        pwfile.unlink(missing_ok=True)
        try:
            with os.fdopen(os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                f.write(secret)
            chown_to(pwfile, user)
            cmd = [str(bins / "initdb"), "-D", str(staging), "-U", _SUPERUSER]
            cmd += ["-A", "scram-sha-256", f"--pwfile={pwfile}", "--locale=C", "--encoding=UTF8"]
            cmd += ["--no-instructions"] if sync else ["--no-instructions", "--no-sync"]
            code = run_logged(cmd, user, self.log_file, timeout=120)
        finally:
            pwfile.unlink(missing_ok=True)
        if code != 0:
            raise EmbeddedServerError(
                f"initdb failed (exit code {code}) for {self.data_dir}. Last lines of its output:"
                f"\n{log_tail(self.log_file, offset, secret)}\nFull log: {self.log_file}"
            )
        with open(staging / "postgresql.conf", "a") as conf:
            conf.write(f"\n# pgq_nb: listen address, port, socket dir\ninclude = '{PG_CONF}'\n")
        settings = self._files.new_settings()
        write_pg_conf(staging, settings, user)
        staging.rename(self.data_dir)
        self._files.save_settings(settings)
        if sync:
            fd = os.open(self.home, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

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
        _usable_bin_dir(user)
        _rotate_log(self.log_file)
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
            tail = log_tail(self.log_file, offset, self._files.read_secret())
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


def _usable_bin_dir(user: ServerUser) -> Path:
    """The binaries' directory, checked (and made reachable) for the server user."""
    bins = bin_dir()
    for name in ("postgres", "initdb", "pg_ctl"):
        check_executable(bins / name, user)
    grant_traverse(bins, user)
    return bins


def _rotate_log(log_file: Path, limit: int = 10 * 1024 * 1024) -> None:
    """Keep one previous log once the log passes ``limit`` bytes (only before a start)."""
    if log_size(log_file) > limit:
        os.replace(log_file, log_file.with_name(log_file.name + ".1"))
    os.close(os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
