"""Files and directories of the home, opened without following symlinks and checked.

Every file pgq_nb reads or writes in a home is opened with ``O_NOFOLLOW`` (a symlink planted
at its name is refused, not followed), new files are created with ``O_EXCL`` and moved into
place with ``rename``, and what was opened is checked with ``fstat``: a regular file, ours,
writable by nobody else. Directories are created and checked the same way, through a
descriptor. Anything else is refused with a message that says what is wrong and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import secrets
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pgq_nb.errors import EmbeddedServerError

_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_MAX_SYMLINKS = 40


def who(uid: int) -> str:
    """``uid 65534 (nobody)``: a uid and, when known, its name."""
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def _private_group(st: os.stat_result) -> bool:
    """True if the file's group is its owner's own (a user private group with no one else)."""
    try:
        owner = pwd.getpwuid(st.st_uid)
        group = grp.getgrgid(st.st_gid)
    except KeyError:
        return False
    return (
        group.gr_gid == owner.pw_gid
        and group.gr_name == owner.pw_name
        and set(group.gr_mem) <= {owner.pw_name}
    )


def writable_by_others(st: os.stat_result) -> bool:
    """True if someone besides the owner (and root) may write to it."""
    mode = st.st_mode
    return bool(mode & stat.S_IWOTH) or (bool(mode & stat.S_IWGRP) and not _private_group(st))


def refuse(path: Path | str, problem: str, fix: str) -> EmbeddedServerError:
    """The error for a file or directory pgq_nb will not use."""
    return EmbeddedServerError(
        f"The embedded Postgres will not use {path}: {problem}. {fix} Then retry."
    )


@dataclass(frozen=True)
class Lookup:
    """One step of resolving a path: ``entry`` looked up in ``directory``."""

    directory: Path
    entry: Path
    entry_stat: os.stat_result | None
    """The entry itself (not followed); None if it does not exist yet."""


def walk(path: Path) -> Iterator[Lookup]:
    """Every lookup the kernel makes to resolve ``path``, following symlinks as it does."""
    pending = list(reversed(Path(os.path.abspath(path)).parts[1:]))
    current = Path("/")
    hops = 0
    while pending:
        name = pending.pop()
        if name in ("", "."):
            continue
        if name == "..":
            current = current.parent
            continue
        entry = current / name
        try:
            st: os.stat_result | None = os.lstat(entry)
        except FileNotFoundError:
            st = None
        yield Lookup(current, entry, st)
        if st is not None and stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > _MAX_SYMLINKS:
                raise refuse(path, "it goes through too many symbolic links", "Fix the links.")
            target = Path(os.readlink(entry))
            if target.is_absolute():
                current = Path("/")
            pending.extend(reversed(target.parts[1:] if target.is_absolute() else target.parts))
            continue
        current = entry


def check_parents(path: Path) -> None:
    """Refuse ``path`` if anyone but root and us could swap it or a directory on its way.

    Each directory searched to reach it must belong to root or to us and be writable by nobody
    else, or be sticky like /tmp, where the entry we go through must be root's or ours.
    """
    me = os.geteuid()
    for step in walk(path):
        try:
            st = os.stat(step.directory)
        except FileNotFoundError:
            continue  # nothing there yet: checked again once it is made
        if st.st_uid not in (0, me):
            raise refuse(
                path,
                f"the directory {step.directory} on its way belongs to {who(st.st_uid)}, who "
                "could replace what is in it",
                "Choose a location whose directories belong to you or root (PGQ_NB_HOME).",
            )
        if not writable_by_others(st):
            continue
        owner = step.entry_stat.st_uid if step.entry_stat is not None else me
        if not st.st_mode & stat.S_ISVTX or owner not in (0, me):
            raise refuse(
                path,
                f"the directory {step.directory} on its way is writable by other users (mode "
                f"{stat.filemode(st.st_mode)}) and {step.entry} could be replaced by them",
                "Choose a location whose directories only you or root can write (PGQ_NB_HOME).",
            )


def make_dir(path: Path, mode: int, *, uid: int = -1, gid: int = -1) -> bool:
    """Create directory ``path`` with exactly ``mode`` (and owner); False if it existed.

    The directory is made under a staging name, given its owner and mode, then renamed into
    place: a process racing to create the same path never sees it half made (a home still
    0700 root's, say, which the server's user cannot reach)."""
    if os.path.lexists(path):
        return False
    staging = path.with_name(f".{path.name}.new-{os.getpid()}-{secrets.token_hex(4)}")
    os.mkdir(staging, 0o700)
    try:
        fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW)
        try:
            if uid != -1 or gid != -1:
                os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        try:
            os.rename(staging, path)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                return False  # someone else made it meanwhile (or planted something there)
            raise
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(staging)


@contextlib.contextmanager
def open_dir(path: Path) -> Iterator[tuple[int, os.stat_result]]:
    """An ``O_NOFOLLOW`` descriptor of directory ``path`` and its stat; refuses anything else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW)
    except OSError as exc:
        raise refuse(
            path, f"it is not a plain directory ({exc.strerror})", f"Remove {path}."
        ) from None
    try:
        yield fd, os.fstat(fd)
    finally:
        os.close(fd)


def _open_checked(path: Path, flags: int, owner: int) -> int:
    """Open ``path`` without following a symlink; check it is a regular file of ``owner``."""
    try:
        fd = os.open(path, flags | _NOFOLLOW, 0o600)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise refuse(
            path,
            "it is a symbolic link, and pgq_nb opens its files only directly so that nobody can "
            "redirect them",
            f"If you did not put it there, someone else did: remove it (rm {path}).",
        ) from None
    try:
        st = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(st.st_mode):
            problem = "it is not a regular file"
        elif st.st_uid != owner:
            problem = f"it belongs to {who(st.st_uid)}, not {who(owner)}, so someone else wrote it"
        elif st.st_mode & 0o022:
            problem = (
                f"it is writable by other users (mode {stat.filemode(st.st_mode)}), so its "
                "content cannot be trusted"
            )
        elif st.st_nlink > 1 and flags & (os.O_WRONLY | os.O_RDWR):
            problem = "it has other hard links, so writing it would change another file"
        if problem is not None:
            raise refuse(path, problem, f"Remove it if you do not know why (rm {path}).")
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_private(path: Path, flags: int, owner: int | None = None) -> int:
    """A descriptor of ``path``, a regular file of ``owner`` (default: us) writable only by it.

    ``flags`` may include ``O_CREAT`` (mode 0600). A symlink, another owner, group or other
    write permission, or (when writing) extra hard links are refused.
    """
    return _open_checked(path, flags, os.geteuid() if owner is None else owner)


def check_private(paths: Iterable[Path]) -> None:
    """Refuse unless each of ``paths`` is missing or a private file (see :func:`open_private`)."""
    for path in paths:
        try:
            os.close(open_private(path, os.O_RDONLY))
        except FileNotFoundError:
            continue


def read_private(path: Path, owner: int | None = None) -> str | None:
    """The text of a private file (see :func:`open_private`); None if it does not exist.

    Group or other *read* permission is taken away: the file's content is a secret.
    """
    try:
        fd = open_private(path, os.O_RDONLY, owner)
    except FileNotFoundError:
        return None
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
            os.fchmod(fd, 0o600)
        with os.fdopen(fd, "r", closefd=False) as file:
            return file.read()
    finally:
        os.close(fd)


def read_bytes(path: Path, offset: int = 0, limit: int = 1 << 24) -> bytes | None:
    """Up to ``limit`` bytes of regular file ``path`` from ``offset`` (never through a symlink).

    None if it is missing, a symlink, not a regular file or unreadable.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        os.lseek(fd, offset, os.SEEK_SET)
        with os.fdopen(fd, "rb", closefd=False) as file:
            return file.read(limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_text(path: Path) -> str | None:
    """The text of a small regular file (see :func:`read_bytes`), such as a lock file."""
    data = read_bytes(path, limit=1 << 16)
    return None if data is None else data.decode("utf-8", "replace")


def replace_file(path: Path, text: str, *, uid: int = -1, gid: int = -1) -> None:
    """Write ``text`` to a new 0600 file and rename it to ``path`` (atomic; never follows)."""
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(staging)
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
    try:
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
        with os.fdopen(fd, "w", closefd=False) as file:
            file.write(text)
            file.flush()
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(staging)
        raise
    os.close(fd)
    os.replace(staging, path)
