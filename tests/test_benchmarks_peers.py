"""The benchmark harness a sceptic accepts (#22, item 3): transports, tuned vs tuned, peers.

Pure decisions (which transport a URL uses, the rotation of who goes first, the best of a
sweep, the table's shape) are table tests. Each peer installed here (``pip install -e
'.[peers]'``) runs a small drain and bulk enqueue on the test server, over TCP, through its own
worker loop and API, and must have finished every job by its own tables; one not installed is
skipped with the command that installs it. One run of ``python -m benchmarks --only peers``
checks the wiring end to end.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from benchmarks import peers, report, scenario_drain, scenario_peers, transport
from benchmarks.common import Row, sweep_order

REPO = Path(__file__).resolve().parent.parent
INSTALLABLE = ("procrastinate", "DBOS", "Chancy", "oban-py")  # oban-py: Python 3.12+


@pytest.mark.parametrize(
    ("dsn", "kind"),
    [
        ("postgresql://u:p@127.0.0.1:5432/db", "tcp"),
        ("postgresql://u@db.example.org/db", "tcp"),
        ("postgresql://u:p@/postgres?host=/tmp/pgq_nb/sock&port=5432", "socket"),
        ("postgresql://u@/db?host=%2Fvar%2Frun%2Fpostgresql", "socket"),
        ("postgresql:///db", "socket"),  # no host at all: libpq's default socket
        ("postgresql://u@/db?host=localhost", "tcp"),
    ],
)
def test_a_dsn_says_which_transport_it_uses(dsn: str, kind: str) -> None:
    assert transport.kind(dsn) == kind


@pytest.mark.parametrize(
    ("choice", "dsn", "expected"),
    [
        ("both", None, ["tcp", "socket"]),  # TCP first: the headline
        ("tcp", None, ["tcp"]),
        ("socket", None, ["socket"]),
        ("both", "postgresql://u@127.0.0.1/db", ["tcp"]),
        ("socket", "postgresql://u@/db?host=/run/pg", ["socket"]),
    ],
)
def test_the_transports_to_run(choice: str, dsn: str | None, expected: list[str]) -> None:
    assert transport.wanted(choice, dsn) == expected


def test_a_transport_the_dsn_cannot_give_is_a_clear_error() -> None:
    with pytest.raises(transport.TransportError) as caught:
        transport.wanted("socket", "postgresql://u@127.0.0.1/db")
    message = str(caught.value)
    assert "--dsn reaches the server over the tcp" in message
    assert "host=/var/run/postgresql" in message  # what to pass instead
    with pytest.raises(transport.TransportError, match="must be one of both, tcp, socket"):
        transport.wanted("udp", None)


def test_every_system_goes_first_in_turn() -> None:
    systems = ["pgq_nb", "PgQueuer", "procrastinate", "DBOS", "Chancy"]
    firsts = [scenario_peers.order(systems, r)[0] for r in range(5)]
    assert firsts == systems
    assert sorted(scenario_peers.order(systems, 7)) == sorted(systems)


def test_the_sweep_takes_the_fastest_candidate() -> None:
    assert scenario_drain.best({"10": 6_582.0, "100": 15_096.0, "500": 17_829.0}) == "500"
    assert scenario_drain.best({"32/32": 9.0, "128/128": 9.0}) == "32/32"  # first of equals


@pytest.mark.parametrize(
    ("candidates", "rounds", "expected"),
    [
        (3, 1, [0, 1, 2]),
        (3, 2, [0, 1, 2, 2, 1, 0]),  # the second round backwards: no candidate always last
        (2, 3, [0, 1, 1, 0, 0, 1]),
        (0, 2, []),
    ],
)
def test_a_sweep_runs_its_rounds_forwards_then_backwards(
    candidates: int, rounds: int, expected: list[int]
) -> None:
    assert sweep_order(candidates, rounds) == expected


def test_the_table_shows_tuned_vs_tuned_first_with_a_column_per_peer() -> None:
    defaults = Row(
        scenario="drain 50,000, defaults",
        unit="jobs/s",
        higher_is_better=True,
        pgq_nb=[100.0],
        pgqueuer=[50.0],
        transport="tcp",
    )
    tuned = Row(
        scenario="drain 50,000, tuned vs tuned",
        unit="jobs/s",
        higher_is_better=True,
        pgq_nb=[300.0, 310.0, 290.0],
        pgqueuer=[200.0, 100.0, 250.0],
        transport="socket",
        headline=True,
    )
    with_peers = Row(
        scenario="peers: drain 10,000 jobs",
        unit="jobs/s",
        higher_is_better=True,
        pgq_nb=[9_000.0],
        pgqueuer=[6_000.0],
        others={"procrastinate": [300.0], "Chancy": [1_200.0, 1_400.0, 1_300.0]},
        transport="tcp",
    )
    lines = report.table([defaults, with_peers, tuned]).splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert head == ["scenario", "pgq_nb", "PgQueuer", "procrastinate", "Chancy", "ratio", "target"]
    assert "drain 50,000, tuned vs tuned (socket)" in lines[2]
    assert "300 jobs/s" in lines[2] and "200 jobs/s" in lines[2] and "1.50x" in lines[2]
    assert "1,300 jobs/s" in lines[4]  # the median of Chancy's three
    assert "drain 50,000, defaults (tcp)" in lines[3]


def test_oban_is_skipped_below_python_3_12_and_an_unknown_peer_is_an_error() -> None:
    if sys.version_info < (3, 12):
        why = peers.missing("oban-py")
        assert why is not None
        assert "needs Python 3.12 or newer" in why
    with pytest.raises(ValueError, match="expected one of procrastinate, DBOS, Chancy"):
        peers.missing("celery")


def _tcp(dsn: str) -> str:
    """The same server and role over TCP on 127.0.0.1 (the embedded server listens there)."""
    parts = urllib.parse.urlsplit(dsn)
    if transport.kind(dsn) == transport.TCP:
        return dsn
    port = urllib.parse.parse_qs(parts.query).get("port", ["5432"])[0]
    auth = parts.netloc.rsplit("@", 1)[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{auth}@127.0.0.1:{port}", query=""))


@pytest.mark.parametrize("name", INSTALLABLE)
def test_each_installed_peer_finishes_every_job_by_its_own_count(name: str, admin_dsn: str) -> None:
    why = peers.missing(name)
    if why is not None:
        pytest.skip(why)
    peer = peers.load(name)
    n = 300

    async def both() -> tuple[peers.Outcome, peers.Outcome]:
        slug = name.lower().replace("-", "_")
        async with peers.empty_database(_tcp(admin_dsn), f"test_peer_{slug}_drain") as db:
            drained = await peer.drain(db, n, cap=120)
        async with peers.empty_database(_tcp(admin_dsn), f"test_peer_{slug}_enqueue") as db:
            queued = await peer.enqueue(db, n)
        return drained, queued

    drained, queued = asyncio.run(both())
    assert drained.note == ""  # not capped
    assert (drained.finished, drained.expected) == (n, n), drained.check()
    assert drained.rate > 0
    assert (queued.finished, queued.expected) == (n, n), queued.check()
    assert set(peer.settings()) >= {"enqueue", "finished"}


def test_the_peers_scenario_end_to_end(admin_dsn: str, tmp_path: Path) -> None:
    """``python -m benchmarks --only peers`` over TCP: the table, the settings, the checks."""
    # the quickest peer first (Chancy drains fastest here); --no-sweep keeps the run short
    runnable = [name for name in ("Chancy", *INSTALLABLE) if peers.missing(name) is None]
    pytest.importorskip("pgqueuer", reason="PgQueuer is not installed: pip install -e '.[bench]'")
    if not runnable:
        pytest.skip(f"no peer is installed: {peers.INSTALL_HINT}")
    out = tmp_path / "peers.json"
    args = ["--quick", "--repeats", "1", "--no-sweep", "--only", "peers", "--peer", runnable[0]]
    args += ["--dsn", _tcp(admin_dsn), "--json", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "over tcp" in done.stdout
    assert "| peers: drain 2,000 jobs (tcp)" in done.stdout
    assert f"{runnable[0]} 2,000 of 2,000 finished (ok)" in done.stdout
    facts = json.loads(out.read_text())
    assert facts["meta"]["transports"] == ["tcp"]
    assert facts["meta"]["python"] and facts["meta"]["postgres"]
    drain = facts["rows"][0]
    assert drain["transport"] == "tcp"
    assert set(drain["settings"]) == {"pgq_nb", "PgQueuer", runnable[0]}
    assert drain["checks"][runnable[0]] == "2,000 of 2,000 finished (ok)"
    assert len(drain["others"][runnable[0]]) == 1
