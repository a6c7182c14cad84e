"""The web dashboard's options, and who may use it.

Bound to a loopback address (127.0.0.1 by default) it may run without a secret; any other
address needs one, from ``PGQ_NB_WEB_TOKEN`` or a private file (``--token-file``), never from
the command line (which every local user can read in ``ps``). Pure functions, no Starlette.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from pgq_nb.errors import ConfigurationError

TOKEN_ENV = "PGQ_NB_WEB_TOKEN"
#: The shortest secret accepted: guessing it must be hopeless.
MIN_TOKEN_LENGTH = 16
MAX_TOKEN_FILE_BYTES = 4096
#: Fewer different characters than this is no secret ("aaaaaaaaaaaaaaaa", "abababab...").
MIN_DISTINCT_CHARACTERS = 6
_MAKE_ONE = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


@dataclasses.dataclass(frozen=True, kw_only=True)
class WebConfig:
    """What ``pgq-nb web`` serves and to whom."""

    host: str = "127.0.0.1"
    port: int = 8080
    read_only: bool = False
    hide_payloads: bool = False
    #: the secret a browser logs in with (or sends as ``Authorization: Bearer``); None: no login
    token: str | None = None
    #: seconds between the pages' live updates
    refresh_s: float = 2.0
    #: seconds a page's reads may take before it answers 503 "the database is not answering"
    read_timeout_s: float = 5.0

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``: addresses only this machine reaches."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_token(token: str, source: str) -> str:
    """``token`` without surrounding white space, if it is long enough to be a secret."""
    token = token.strip()
    if not token:
        raise ConfigurationError(f"{source} is empty; put a secret in it ({_MAKE_ONE})")
    if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigurationError(
            f"the secret in {source} is {len(token)} characters; use at least "
            f"{MIN_TOKEN_LENGTH} printable characters without spaces (for example {_MAKE_ONE})"
        )
    if len(set(token)) < MIN_DISTINCT_CHARACTERS:
        raise ConfigurationError(
            f"the secret in {source} has only {len(set(token))} different characters; a secret "
            f"must be random: make one (for example {_MAKE_ONE})"
        )
    return token


def _safe_directory(st: os.stat_result) -> bool:
    """A directory nobody but its owner (this user or root) can change entries in: not writable
    by group or others, unless sticky (``/tmp``: others cannot rename or replace our entries)."""
    owner_ok = st.st_uid in (0, os.geteuid())
    return owner_ok and (not st.st_mode & 0o022 or bool(st.st_mode & stat.S_ISVTX))


def _open_token_file(path: Path) -> int:
    """A descriptor of ``path``, reached from ``/`` one directory at a time without following a
    symlink (its directories' symlinks resolved first), every directory on the way one that only
    this user or root can change; the file itself must not be a symlink. A directory that
    another user may write could swap the file for another of ours, or a symlink in it for a
    path of theirs, between a check and the open."""
    path = Path(os.path.abspath(path))
    real = Path(os.path.realpath(path.parent)) / path.name
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        walked = Path("/")
        for name in real.parts[1:-1]:
            st = os.fstat(fd)
            if not _safe_directory(st):
                raise ConfigurationError(
                    f"--token-file {path} is reached through {walked}, a directory other users "
                    f"may change (owner uid {st.st_uid}, mode {stat.filemode(st.st_mode)}), so "
                    "one of them could swap the secret; keep it in a directory of yours that "
                    "only you can write (for example your home, chmod 700)"
                )
            walked = walked / name
            next_fd = os.open(
                name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
            )
            os.close(fd)
            fd = next_fd
        st = os.fstat(fd)
        if not _safe_directory(st):
            raise ConfigurationError(
                f"--token-file {path} is in {walked}, a directory other users may change (owner "
                f"uid {st.st_uid}, mode {stat.filemode(st.st_mode)}), so one of them could swap "
                "the secret; keep it in a directory of yours that only you can write (for "
                "example your home, chmod 700)"
            )
        return os.open(
            real.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=fd
        )
    finally:
        os.close(fd)


def read_token_file(path: Path) -> str:
    """The secret in ``path``: a regular file of ours, not a symlink, in directories only we (or
    root) can change, that no one else may read or write (mode 0600 or 0400); anything else is
    refused with what to do."""
    try:
        fd = _open_token_file(path)
    except FileNotFoundError:
        raise ConfigurationError(
            f"--token-file {path} does not exist; write a secret to it "
            f"({_MAKE_ONE} > {path}; chmod 600 {path})"
        ) from None
    except OSError as exc:
        if os.path.islink(path):
            raise ConfigurationError(
                f"--token-file {path} is a symbolic link; pgq_nb reads its secret only from the "
                "file itself, so that nobody can redirect it: name the real file"
            ) from None
        raise ConfigurationError(f"cannot read --token-file {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(st.st_mode):
            problem = "is not a regular file"
        elif st.st_uid != os.geteuid():
            problem = f"belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()})"
        elif st.st_mode & 0o077:
            problem = (
                f"may be read or written by other users (mode {stat.filemode(st.st_mode)}); "
                f"make it private: chmod 600 {path}"
            )
        elif st.st_size > MAX_TOKEN_FILE_BYTES:
            problem = f"is {st.st_size} bytes, more than a secret needs"
        if problem is not None:
            raise ConfigurationError(f"--token-file {path} {problem}")
        data = os.read(fd, MAX_TOKEN_FILE_BYTES + 1)
    finally:
        os.close(fd)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigurationError(f"--token-file {path} is not UTF-8 text") from None
    return check_token(text, f"--token-file {path}")


def resolve_token(token_file: Path | None, environ: Mapping[str, str]) -> str | None:
    """The secret from ``--token-file`` or else ``PGQ_NB_WEB_TOKEN``; None when neither."""
    if token_file is not None:
        if environ.get(TOKEN_ENV):
            raise ConfigurationError(
                f"both --token-file and {TOKEN_ENV} are set; give the secret one way only"
            )
        return read_token_file(token_file)
    value = environ.get(TOKEN_ENV)
    return None if value is None else check_token(value, TOKEN_ENV)


def build_config(
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    read_only: bool = False,
    hide_payloads: bool = False,
    token_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> WebConfig:
    """The checked configuration: a non-loopback ``host`` without a secret is refused."""
    if not 1 <= port <= 65535:
        raise ConfigurationError(f"--port {port} is not a TCP port; use 1 to 65535 (default 8080)")
    token = resolve_token(token_file, os.environ if environ is None else environ)
    if token is None and not is_loopback(host):
        raise ConfigurationError(
            f"pgq-nb web will not listen on {host} without a secret: anyone who reaches that "
            f"address could see every job and requeue, pause or cancel them. Set {TOKEN_ENV} "
            "(in the service's environment, not on the command line) or pass --token-file PATH "
            f"(a file only you can read: {_MAKE_ONE} > PATH; chmod 600 PATH), or keep the "
            "default --host 127.0.0.1"
        )
    return WebConfig(
        host=host, port=port, read_only=read_only, hide_payloads=hide_payloads, token=token
    )
