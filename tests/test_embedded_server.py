"""The embedded Postgres server, with real processes: start, reuse, restart, failure modes.

Every test has its own home from ``temporary_home()`` (as root, pytest's ``tmp_path`` is out
of the ``postgres`` user's reach) and stops whatever server it started.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from pgq_nb.embedded import (
    EmbeddedServer,
    default_home,
    start_child_for_tests,
    temporary_home,
)
from pgq_nb.embedded import _postmaster as pm
from pgq_nb.embedded._system import bin_dir, server_env, server_user
from pgq_nb.embedded.testing import stop_any_server
from pgq_nb.errors import EmbeddedServerError

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[1]

_START_AND_REPORT = """
import sys
from pathlib import Path
from pgq_nb.embedded import EmbeddedServer
server = EmbeddedServer(Path(sys.argv[1]))
go = Path(sys.argv[2]) if len(sys.argv) > 2 else None
while go is not None and not go.exists():
    pass
print(server.ensure_running())
print(server.status().pid)
"""

_CHILD_THEN_SLEEP = """
import sys, time
from pathlib import Path
from pgq_nb.embedded import start_child_for_tests
dsn, process = start_child_for_tests(Path(sys.argv[1]))
print(process.pid, flush=True)
time.sleep(60)
"""


def _python_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PGQ_NB_MAX_CONNECTIONS", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _start_in_subprocess(home: Path) -> tuple[str, int]:
    """ensure_running() in another Python process, which then exits; returns (dsn, pid)."""
    done = subprocess.run(
        [sys.executable, "-c", _START_AND_REPORT, str(home)],
        env=_python_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    dsn, pid = done.stdout.split()
    return dsn, int(pid)


async def _query(dsn: str, sql: str = "SELECT 1") -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def _select_one(dsn: str) -> object:
    return asyncio.run(_query(dsn))


def _secret(server: EmbeddedServer, name: str = "app_secret") -> str:
    return (server.home / name).read_text().strip()


@pytest.fixture
def home() -> Iterator[Path]:
    """A home path the server's OS user can reach (not created yet); removed afterwards."""
    with temporary_home() as path:
        yield path


@pytest.fixture
def new_server(home: Path) -> Iterator[Callable[..., EmbeddedServer]]:
    """Make servers on fresh homes (next to ``home``); every one is stopped at teardown."""
    homes: list[Path] = []

    def make(path: Path | None = None) -> EmbeddedServer:
        homes.append(path or home)
        return EmbeddedServer(homes[-1])

    yield make
    for path in homes:
        stop_any_server(path)


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[EmbeddedServer, str]]:
    """One server, started by a Python process that has exited since."""
    with temporary_home() as home:
        try:
            dsn, _ = _start_in_subprocess(home)
            yield EmbeddedServer(home), dsn
        finally:
            stop_any_server(home)


def test_first_start_over_socket_and_tcp(shared: tuple[EmbeddedServer, str]) -> None:
    server, dsn = shared
    status = server.status()
    assert status.running
    assert status.initialised
    assert status.version == 18
    assert status.socket_dir == server.home / "run"
    assert (
        dsn
        == server.dsn()
        == (
            f"postgresql://pgq_nb:{_secret(server)}@/postgres"
            f"?host={server.home / 'run'}&port={status.port}"
        )
    )
    tcp = server.dsn(tcp=True)
    assert tcp == f"postgresql://pgq_nb:{_secret(server)}@127.0.0.1:{status.port}/postgres"
    admin = server.admin_dsn(tcp=True)
    assert admin == (
        f"postgresql://postgres:{_secret(server, 'secret')}@127.0.0.1:{status.port}/postgres"
    )
    assert _select_one(dsn) == 1
    assert _select_one(tcp) == 1
    assert asyncio.run(_query(dsn, "SHOW listen_addresses")) == "127.0.0.1"
    assert asyncio.run(_query(dsn, "SHOW fsync")) == "on"
    assert asyncio.run(_query(dsn, "SHOW max_connections")) == "200"
    assert asyncio.run(_query(dsn, "SELECT current_user")) == "pgq_nb"
    assert asyncio.run(_query(admin, "SELECT current_user")) == "postgres"


def test_server_outlives_the_process_that_started_it(shared: tuple[EmbeddedServer, str]) -> None:
    server, _ = shared
    pid = server.status().pid
    assert pid is not None
    assert pm.pid_alive(pid)
    stat_fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    assert stat_fields[0] != "Z"
    assert int(stat_fields[1]) != os.getpid()


def test_wrong_or_missing_password_is_refused(
    shared: tuple[EmbeddedServer, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)  # no password from elsewhere
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))
    server, dsn = shared
    for good in (dsn, server.dsn(tcp=True), server.admin_dsn(), server.admin_dsn(tcp=True)):
        secret = good.split(":")[2].split("@")[0]
        for bad in (good.replace(secret, "wrong"), good.replace(f":{secret}", "")):
            with pytest.raises(asyncpg.InvalidPasswordError):
                _select_one(bad)
    rules = (server.data_dir / "pg_hba.conf").read_text().splitlines()
    methods = {line.split()[-1] for line in rules if line.strip() and not line.startswith("#")}
    assert methods == {"scram-sha-256"}


def test_secrets_are_private_and_never_logged(shared: tuple[EmbeddedServer, str]) -> None:
    server, _ = shared
    for name in ("secret", "app_secret", "server.json", "lock", "postgres.log"):
        st = (server.home / name).stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, os.getuid()), name
    home = server.home.stat()
    if server_user().switch:  # only the server's group may pass, to reach data/ and run/
        assert (stat.S_IMODE(home.st_mode), home.st_gid) == (0o710, server_user().gid)
    else:
        assert stat.S_IMODE(home.st_mode) == 0o700
    log = server.log_file.read_text()
    assert _secret(server, "secret") not in log
    assert _secret(server) not in log


def test_second_process_reuses_running_server(shared: tuple[EmbeddedServer, str]) -> None:
    server, dsn = shared
    assert _start_in_subprocess(server.home) == (dsn, server.status().pid)
    assert server.ensure_running() == dsn


def test_restart_after_stop(new_server: Callable[..., EmbeddedServer]) -> None:
    server = new_server()
    dsn = server.ensure_running()
    first_pid = server.status().pid
    assert server.stop() is True
    assert not server.status().running
    assert server.stop() is False
    assert server.ensure_running() == dsn
    assert server.status().pid != first_pid
    assert _select_one(dsn) == 1


@pytest.mark.parametrize("owner", ["dead", "unrelated live process"])
def test_stale_postmaster_pid_does_not_block_start(
    new_server: Callable[..., EmbeddedServer], owner: str
) -> None:
    server = new_server()
    dsn = server.ensure_running()
    status = server.status()
    assert status.pid is not None
    assert status.socket_dir is not None
    os.kill(status.pid, signal.SIGKILL)
    assert pm.wait_exit(status.pid, 10)
    # As the server's user, so Postgres itself cannot tell it apart from a live postmaster.
    user = server_user()
    sleeper = subprocess.Popen(
        ["sleep", "60"],
        user=user.uid if user.switch else None,
        group=user.gid if user.switch else None,
        extra_groups=[] if user.switch else None,
    )
    try:
        if owner != "dead":  # the PID in the lock files now belongs to `sleep`
            lock_files = [
                server.data_dir / "postmaster.pid",
                status.socket_dir / f".s.PGSQL.{status.port}.lock",
            ]
            for lock in lock_files:
                lines = lock.read_text().splitlines()
                lock.write_text("\n".join([str(sleeper.pid), *lines[1:]]) + "\n")
        assert server.ensure_running() == dsn
        assert server.status().pid not in (None, status.pid, sleeper.pid)
        assert _select_one(dsn) == 1
    finally:
        sleeper.kill()
        sleeper.wait()


def test_four_processes_start_a_new_home_at_once(
    new_server: Callable[..., EmbeddedServer], tmp_path: Path
) -> None:
    server = new_server()
    go = tmp_path / "go"
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", _START_AND_REPORT, str(server.home), str(go)],
            env=_python_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    time.sleep(0.5)  # let all four import and wait at the starting line
    go.touch()
    results = [starter.communicate(timeout=60) for starter in starters]
    assert [starter.returncode for starter in starters] == [0] * 4, [err for _, err in results]
    assert len({out for out, _ in results}) == 1
    assert server.log_file.read_text().count("--- pgq_nb: initdb ---") == 1
    assert _select_one(server.dsn()) == 1


def test_long_home_puts_socket_in_short_directory(
    new_server: Callable[..., EmbeddedServer], home: Path
) -> None:
    server = new_server(home.parent / ("h" * 110) / "home")
    dsn = server.ensure_running()
    socket_dir = server.status().socket_dir
    assert socket_dir is not None
    try:
        assert not socket_dir.is_relative_to(server.home)
        assert len(str(socket_dir / ".s.PGSQL.65535")) <= 107
        st = socket_dir.stat()
        assert stat.S_IMODE(st.st_mode) == 0o700
        assert st.st_uid == server_user().uid
        assert _select_one(dsn) == 1
        server.stop()  # the socket directory, now the server user's, is taken again
        assert server.ensure_running() == dsn
        assert server.status().socket_dir == socket_dir
        assert _select_one(dsn) == 1
    finally:
        stop_any_server(server.home)
        shutil.rmtree(socket_dir, ignore_errors=True)


def test_missing_locale_in_environment(
    new_server: Callable[..., EmbeddedServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.setenv("LANG", "xx_YY.UTF-8")
    monkeypatch.setenv("LC_CTYPE", "xx_YY.UTF-8")
    dsn = new_server().ensure_running()
    assert asyncio.run(_query(dsn, "SHOW server_encoding")) == "UTF8"
    sql = "SELECT datcollate FROM pg_database WHERE datname = 'postgres'"
    assert asyncio.run(_query(dsn, sql)) == "C"


def test_data_dir_of_another_major_version(home: Path) -> None:
    data = home / "data"
    user = server_user()
    data.mkdir(parents=True, mode=0o700)
    if user.switch:
        os.chown(home, -1, user.gid)
        home.chmod(0o710)
        os.chown(data, user.uid, user.gid)
    pg16_initdb = bin_dir().parents[1] / "pginstall" / "bin" / "initdb"
    subprocess.run(
        [str(pg16_initdb), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"],
        env=server_env(),
        cwd="/",
        user=user.uid if user.switch else None,
        group=user.gid if user.switch else None,
        extra_groups=[] if user.switch else None,
        capture_output=True,
        check=True,
        timeout=60,
    )
    server = EmbeddedServer(home)
    assert server.status().version == 16
    with pytest.raises(EmbeddedServerError) as raised:
        server.ensure_running()
    message = str(raised.value)
    for expected in ("PostgreSQL 16", "PostgreSQL 18", "PGQ_NB_HOME", "pg_dump", str(data)):
        assert expected in message
    assert not server.status().running


def test_port_taken_at_start_picks_another(new_server: Callable[..., EmbeddedServer]) -> None:
    server = new_server()
    server.ensure_running()
    old_port = server.status().port
    assert old_port is not None
    server.stop()
    with socket.create_server(("127.0.0.1", old_port)):
        server.ensure_running()
        new_port = server.status().port
        assert new_port not in (None, old_port)
        saved = json.loads((server.home / "server.json").read_text())
        assert saved["port"] == new_port
        assert _select_one(server.dsn(tcp=True)) == 1


def test_start_failure_reports_log_tail(new_server: Callable[..., EmbeddedServer]) -> None:
    server = new_server()
    server.ensure_running()
    server.stop()
    with open(server.data_dir / "postgresql.conf", "a") as conf:
        conf.write("shared_buffers = 'plenty'\n")
    with pytest.raises(EmbeddedServerError) as raised:
        server.ensure_running()
    message = str(raised.value)
    assert "shared_buffers" in message
    assert str(server.log_file) in message
    assert _secret(server) not in message


def test_not_initialised(tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path / "nothing")
    status = server.status()
    assert not status.running
    assert not status.initialised
    assert status.version is None
    assert server.stop() is False
    with pytest.raises(EmbeddedServerError, match="not initialised"):
        server.dsn()


def test_default_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PGQ_NB_HOME", str(tmp_path / "explicit"))
    assert default_home() == tmp_path / "explicit"
    assert EmbeddedServer().home == tmp_path / "explicit"
    monkeypatch.delenv("PGQ_NB_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    root = os.geteuid() == 0
    assert default_home() == (Path("/var/lib/pgq_nb") if root else tmp_path / "xdg" / "pgq_nb")
    monkeypatch.delenv("XDG_DATA_HOME")
    per_user = Path.home() / ".local" / "share" / "pgq_nb"
    assert default_home() == (Path("/var/lib/pgq_nb") if root else per_user)


def test_child_for_tests_is_fast_and_stops_with_open_sessions(home: Path) -> None:
    dsn, process = start_child_for_tests(home)
    try:
        assert Path(f"/proc/{process.pid}/stat").read_text().rpartition(")")[2].split()[1] == str(
            os.getpid()
        )

        async def check_and_stop() -> None:
            conn = await asyncpg.connect(dsn)
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                assert await conn.fetchval(f"SHOW {setting}") == "off"
            process.terminate()  # with a session still open
            await asyncio.to_thread(process.wait, 10)
            await conn.close()

        asyncio.run(check_and_stop())
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_child_for_tests_dies_with_its_parent(home: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _CHILD_THEN_SLEEP, str(home)],
        env=_python_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert pm.is_postmaster_of(pid, home / "data")
        parent.kill()  # SIGKILL: no cleanup code runs in the parent
        parent.wait()
        assert pm.wait_exit(pid, 5), "the server outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        stop_any_server(home)
