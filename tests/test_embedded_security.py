"""The embedded Postgres on a shared machine: what another local user may not do to it.

Real servers, files and processes. "Another user" is uid/gid 65534 (nobody): as root, the
tests chown what such a user would have planted. Tests that need root skip otherwise; the
others hold for root and for a normal user alike. Every home comes from ``temporary_home()``
and every server is stopped at teardown.
"""

from __future__ import annotations

import asyncio
import grp
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import pgq_nb
from pgq_nb.embedded import EmbeddedServer, _layout, _system, temporary_home
from pgq_nb.embedded import _postmaster as pm
from pgq_nb.embedded._system import server_user
from pgq_nb.errors import ConfigurationError, EmbeddedServerError

pytestmark = pytest.mark.timeout(120)

NOBODY = 65534
ROOT = os.geteuid() == 0
root_only = pytest.mark.skipif(
    not ROOT,
    reason=(
        "needs root: plants files as another user, or checks what root's server user may "
        "reach; run the suite as root (as CI does) to run it"
    ),
)
VICTIM_TEXT = "a file the server must never touch\n"


def _fetch(dsn: str, sql: str, *args: Any) -> Any:
    async def run() -> Any:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def _execute(dsn: str, sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def _make_home(path: Path, mode: int = 0o700) -> Path:
    """A home made by hand, as its owner would (as root: reachable by the server's group)."""
    path.mkdir(mode=mode)
    user = server_user()
    if user.switch:
        os.chown(path, -1, user.gid)
        path.chmod(mode | 0o010)
    else:
        path.chmod(mode)
    return path


def _modes(path: Path, top: Path) -> dict[Path, int]:
    """The modes of ``path`` and its parents up to ``top`` (directories of this test's own)."""
    chain = [path, *path.parents]
    return {p: p.stat().st_mode for p in chain[: chain.index(top) + 1]}


@pytest.fixture
def home() -> Iterator[Path]:
    with temporary_home() as path:
        yield path


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file somewhere else that a planted symlink points at."""
    path = tmp_path / "victim"
    path.write_text(VICTIM_TEXT)
    path.chmod(0o644)
    return path


def _assert_untouched(victim: Path) -> None:
    st = victim.stat()
    assert victim.read_text() == VICTIM_TEXT
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o644, os.geteuid())


def _refused(server: EmbeddedServer, *expected: str) -> str:
    with pytest.raises(EmbeddedServerError) as raised:
        server.ensure_running()
    message = str(raised.value)
    for text in (*expected, "retry"):
        assert text in message, message
    assert pm.read_pidfile(server.data_dir) is None
    return message


# -- 1. a home or a file someone else made -----------------------------------------------------


@root_only
def test_home_made_by_another_user_is_refused(home: Path) -> None:
    _make_home(home, 0o777)
    os.chown(home, NOBODY, NOBODY)
    secret = home / "secret"
    secret.write_text("chosen-by-the-attacker\n")
    os.chown(secret, NOBODY, NOBODY)
    secret.chmod(0o600)
    _refused(EmbeddedServer(home), str(home), "belongs to uid 65534", "rm -r")
    assert sorted(p.name for p in home.iterdir()) == ["secret"]


@root_only
def test_secret_of_another_user_is_refused(home: Path) -> None:
    _make_home(home)
    secret = home / "secret"
    secret.write_text("chosen-by-the-attacker\n")
    secret.chmod(0o600)
    os.chown(secret, NOBODY, NOBODY)
    _refused(EmbeddedServer(home), str(secret), "belongs to uid 65534")
    assert not (home / "data").exists()


def test_secret_others_could_write_is_refused(home: Path) -> None:
    _make_home(home)
    secret = home / "secret"
    secret.write_text("chosen-by-the-attacker\n")
    secret.chmod(0o666)
    _refused(EmbeddedServer(home), str(secret), "writable by other users")
    assert not (home / "data").exists()


def test_home_others_could_write_is_refused(home: Path) -> None:
    _make_home(home)
    home.chmod(0o777)
    _refused(EmbeddedServer(home), str(home), "writable by other users", "chmod go-w")
    assert list(home.iterdir()) == []


def test_home_under_a_directory_others_could_write_is_refused(home: Path) -> None:
    shared = _make_home(home.parent / "shared")
    shared.chmod(0o777)  # not sticky: anyone could rename the home away and put theirs there
    server = EmbeddedServer(shared / "home")
    _refused(server, str(shared), "writable by other users")
    assert list(shared.iterdir()) == []


@root_only
def test_home_under_another_users_directory_is_refused(home: Path) -> None:
    theirs = _make_home(home.parent / "theirs", 0o755)
    os.chown(theirs, NOBODY, NOBODY)
    _refused(EmbeddedServer(theirs / "home"), str(theirs), "belongs to uid 65534")
    assert list(theirs.iterdir()) == []


@pytest.mark.parametrize("name", ["postgres.log", "secret", "app_secret", "server.json", "lock"])
def test_symlink_planted_in_a_new_home_is_never_followed(
    home: Path, victim: Path, name: str
) -> None:
    _make_home(home)
    (home / name).symlink_to(victim)
    _refused(EmbeddedServer(home), str(home / name), "symbolic link", f"rm {home / name}")
    _assert_untouched(victim)


def test_symlinks_in_the_data_directory_and_at_staging_names_are_replaced_not_followed(
    home: Path, victim: Path
) -> None:
    server = EmbeddedServer(home)
    server.ensure_running()
    assert server.stop()
    conf = server.data_dir / "pgq_nb.conf"
    conf.unlink()
    conf.symlink_to(victim)  # as the server's OS user could (COPY ... TO, as superuser)
    (home / f".server.json.{os.getpid()}").symlink_to(victim)
    (home / "server.json").unlink()
    try:
        assert _fetch(server.ensure_running(), "SELECT 1") == 1
    finally:
        server.stop()
    _assert_untouched(victim)
    assert stat.S_ISREG(conf.lstat().st_mode)
    assert conf.lstat().st_uid == server_user().uid


# -- 2. the DSN handed out is no superuser -----------------------------------------------------


@pytest.fixture
def two_servers() -> Iterator[tuple[EmbeddedServer, EmbeddedServer]]:
    with temporary_home() as first, temporary_home() as second:
        servers = EmbeddedServer(first), EmbeddedServer(second)
        try:
            yield servers
        finally:
            for server in servers:
                server.stop()


def _run_a_job(dsn: str, schema: str, enqueue: bool = True) -> int:
    q = pgq_nb.connect(dsn, schema=schema)
    q.entrypoint("work")(lambda job: None)
    if enqueue:
        q.enqueue("work")
    stats = q.run_until_idle()
    return stats.succeeded


def test_applications_get_a_role_that_is_no_superuser(
    two_servers: tuple[EmbeddedServer, EmbeddedServer],
) -> None:
    server, other = two_servers
    other.ensure_running()
    other.stop()
    dsn = server.ensure_running()
    role = _fetch(dsn, "SELECT current_user")
    assert role == "pgq_nb"
    flags = "SELECT ARRAY[rolsuper, rolcreatedb, rolcreaterole] FROM pg_roles WHERE rolname = $1"
    assert _fetch(dsn, flags, role) == [False, False, False]
    other_file = str(other.data_dir / "PG_VERSION")
    assert _fetch(server.admin_dsn(), "SELECT pg_read_file($1)", other_file).strip() == "18"
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        _fetch(dsn, "SELECT pg_read_file($1)", other_file)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        _execute(dsn, "CREATE TEMP TABLE t (line text); COPY t FROM PROGRAM 'id'")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        _execute(dsn, "CREATE ROLE intruder SUPERUSER")
    assert _run_a_job(dsn, "sec_app") == 1
    assert _run_a_job(server.dsn(tcp=True), "sec_app") == 1


@pytest.mark.parametrize("while_running", [True, False])
def test_home_of_an_older_pgq_nb_gets_the_role_and_keeps_its_queue(
    home: Path, while_running: bool
) -> None:
    server = EmbeddedServer(home)
    server.ensure_running()
    admin = server.admin_dsn()
    q = pgq_nb.connect(admin, schema="sec_legacy")  # as an older pgq_nb did: as the superuser
    q.entrypoint("work")(lambda job: None)
    queued = q.enqueue("work")
    _execute(admin, "DROP OWNED BY pgq_nb; DROP ROLE pgq_nb")
    (home / "app_secret").unlink()
    if not while_running:
        server.stop()
    with pytest.raises(EmbeddedServerError, match="pgq-nb db start"):
        server.dsn()
    try:
        dsn = server.ensure_running()
        assert _fetch(dsn, "SELECT current_user") == "pgq_nb"
        owners = _fetch(
            dsn,
            "SELECT array_agg(DISTINCT pg_get_userbyid(relowner)) FROM pg_class "
            "WHERE relnamespace = 'sec_legacy'::regnamespace",
        )
        assert owners == ["pgq_nb"]
        assert _fetch(dsn, "SELECT count(*) FROM sec_legacy.jobs WHERE id = $1", queued) == 1
        assert _run_a_job(dsn, "sec_legacy", enqueue=False) == 1
        assert _run_a_job(dsn, "sec_legacy") == 1  # new rows: the identity sequences are its own
    finally:
        server.stop()


# -- 3. as root: no directory is opened to other users ----------------------------------------


@root_only
def test_root_default_home_opens_no_directory(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = home.parent
    root_home = _make_home(base / "root")  # stands for /root: 0700, root's
    root_home.chmod(0o700)
    system_home = base / "var-lib" / "pgq_nb"
    monkeypatch.setenv("HOME", str(root_home))
    monkeypatch.delenv("PGQ_NB_HOME", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setattr(_layout, "SYSTEM_HOME", system_home)
    server = EmbeddedServer()
    assert server.home == system_home
    try:
        assert _fetch(server.ensure_running(), "SELECT 1") == 1
    finally:
        server.stop()
    assert stat.S_IMODE(root_home.stat().st_mode) == 0o700
    assert list(root_home.iterdir()) == []
    for made in (system_home, system_home.parent):
        st = made.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o710, server_user().gid)


@root_only
def test_directories_made_on_the_way_to_a_home_are_told_in_one_line(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    user = server_user()
    base = home.parent
    srv, queues = base / "srv", base / "srv" / "queues"
    deep = queues / "home"
    _layout.ensure_home(deep, user)
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    group = grp.getgrgid(user.gid).gr_name
    assert err.startswith(f"pgq_nb: made {srv}, {queues} (root:{group}, mode 0710: "), err
    for text in (f"group {group} may pass through", f"the home {deep},", "PGQ_NB_HOME"):
        assert text in err, err
    for made in (srv, queues, deep):  # as told
        st = made.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, user.gid, 0o710)
    _layout.ensure_home(deep, user)  # made already: nothing new to tell
    _layout.ensure_home(home, user)  # its parent was there: nothing made on the way
    assert capsys.readouterr().err == ""


@root_only
def test_home_the_server_user_cannot_reach_is_refused(tmp_path: Path) -> None:
    before = _modes(tmp_path, tmp_path.parent)  # pytest's, 0700: out of the server user's reach
    assert not any(mode & stat.S_IXOTH for mode in before.values())
    server = EmbeddedServer(tmp_path / "home")
    message = _refused_start(server)
    for text in ("may not enter", "does not widen", "/var/lib/pgq_nb", "/tmp", "PGQ_NB_DSN"):
        assert text in message, message
    assert _modes(tmp_path, tmp_path.parent) == before


@root_only
def test_binaries_the_server_user_cannot_reach_are_refused(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install = tmp_path / "venv" / "pginstall18"
    for part in ("lib", "share", "bin"):
        (install / part).mkdir(parents=True)
    for name in ("postgres", "initdb", "pg_ctl"):
        (install / "bin" / name).touch(mode=0o755)
    monkeypatch.setattr(_system, "bin_dir", lambda: install / "bin")
    before = _modes(install / "bin", tmp_path.parent)
    message = _refused_start(EmbeddedServer(home))
    for text in ("may not enter", "PostgreSQL binaries", "does not widen", "PGQ_NB_DSN"):
        assert text in message, message
    assert _modes(install / "bin", tmp_path.parent) == before


def _refused_start(server: EmbeddedServer) -> str:
    with pytest.raises(EmbeddedServerError) as raised:
        server.ensure_running()
    assert not server.status().initialised
    return str(raised.value)


@root_only
def test_root_data_in_the_old_default_home_is_moved_not_abandoned(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = home.parent
    root_home = _make_home(base / "root")
    legacy = root_home / ".local" / "share" / "pgq_nb"
    old = EmbeddedServer(legacy)
    _execute(old.ensure_running(), "CREATE SCHEMA kept; CREATE TABLE kept.t AS SELECT 42 AS x")
    old.stop()
    system_home = _make_home(base / "var-lib", 0o755) / "pgq_nb"
    monkeypatch.setenv("HOME", str(root_home))
    monkeypatch.delenv("PGQ_NB_HOME", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setattr(_layout, "SYSTEM_HOME", system_home)
    server = EmbeddedServer()
    with pytest.raises(EmbeddedServerError) as raised:
        server.ensure_running()
    assert f"mv {legacy} {system_home}" in str(raised.value)
    assert not system_home.exists()
    legacy.rename(system_home)  # what the message says to do
    try:
        assert _fetch(server.ensure_running(), "SELECT x FROM kept.t") == 42
        assert server.status().socket_dir == system_home / "run"
    finally:
        server.stop()


# -- 4. limits from the environment -----------------------------------------------------------


def test_max_connections_is_read_at_every_start(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = EmbeddedServer(home)
    try:
        for limit in ("57", "300"):
            monkeypatch.setenv("PGQ_NB_MAX_CONNECTIONS", limit)
            assert _fetch(server.ensure_running(), "SHOW max_connections") == limit
            server.stop()
    finally:
        server.stop()


@pytest.mark.parametrize("bad", ["lots", "0", "4", "-5", "10001", "1e3", "12.5"])
def test_bad_max_connections_is_refused_before_anything_starts(
    home: Path, monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv("PGQ_NB_MAX_CONNECTIONS", bad)
    server = EmbeddedServer(home)
    with pytest.raises(ConfigurationError) as raised:
        server.ensure_running()
    message = str(raised.value)
    for text in ("PGQ_NB_MAX_CONNECTIONS", repr(bad), "5 to 10000", "unset"):
        assert text in message, message
    assert not home.exists()


def test_the_app_role_cannot_plant_functions_for_the_superuser(home: Path) -> None:
    # the app role may create schemas; one named "postgres" must not reach the superuser's
    # search path, or an admin's innocent query would run the app's function as superuser
    async def plant_and_look() -> tuple[str, str]:
        app = await asyncpg.connect(server.dsn())
        try:
            await app.execute("DROP SCHEMA IF EXISTS postgres CASCADE")
            await app.execute("CREATE SCHEMA postgres")
            await app.execute(
                "CREATE FUNCTION postgres.pg_database_size(text) RETURNS bigint "
                "LANGUAGE sql AS 'SELECT 42::bigint'"
            )
        finally:
            await app.close()
        admin = await asyncpg.connect(server.admin_dsn())
        try:
            path = await admin.fetchval("SHOW search_path")
            size = await admin.fetchval("SELECT pg_database_size('postgres')::text")
        finally:
            await admin.close()
        return path, size

    server = EmbeddedServer(home)
    server.ensure_running()
    try:
        path, size = asyncio.run(plant_and_look())
    finally:
        server.stop()
    assert "$user" not in path
    assert size != "42", "the superuser ran the app role's function"


def test_a_directory_pgq_nb_makes_is_never_seen_half_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # four processes starting one new home at once: the others must never find the home
    # before its mode (and, as root, its group) are set, or they refuse it as unreachable
    from pgq_nb.embedded import _safefs

    target = tmp_path / "home"
    seen: list[int | None] = []
    real_fchmod = os.fchmod

    def fchmod_while_looked_at(fd: int, mode: int) -> None:
        seen.append(stat.S_IMODE(os.lstat(target).st_mode) if os.path.lexists(target) else None)
        real_fchmod(fd, mode)

    monkeypatch.setattr(os, "fchmod", fchmod_while_looked_at)
    assert _safefs.make_dir(target, 0o710)
    assert seen == [None], f"the home was visible with mode {seen} before its mode was set"
    assert stat.S_IMODE(os.lstat(target).st_mode) == 0o710
    assert not _safefs.make_dir(target, 0o710)
    assert [p.name for p in tmp_path.iterdir()] == ["home"], "a staging directory was left"
