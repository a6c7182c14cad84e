"""The ``pgq-nb`` command without a command: it lists the commands, one line each.

Real processes (``python -m pgq_nb.cli``); nothing here needs a database.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Any

import pytest

from pgq_nb import cli
from tests.conftest import REPO


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="80")
    return subprocess.run(
        [sys.executable, "-m", "pgq_nb.cli", *args],
        env=env,
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[str, Any]]:
    """A parser's commands: name -> (one-line help, its own parser)."""
    found = {}
    for action in parser._actions:  # argparse offers no public listing of subcommands
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: str(choice.help) for choice in action._choices_actions}
            found.update({name: (helps[name], sub) for name, sub in action.choices.items()})
    return found


@pytest.mark.parametrize("args", [(), ("db",)], ids=["pgq-nb", "pgq-nb db"])
def test_no_command_lists_the_commands_one_line_each(args: tuple[str, ...]) -> None:
    parser = cli.build_parser()
    for name in args:
        parser = _subcommands(parser)[name][1]
    commands = {name: text for name, (text, _) in _subcommands(parser).items()}
    assert commands
    done = _run(*args)
    # a usage error (like git's), so that `pgq-nb "$cmd"` with an empty $cmd is no success;
    # but the help goes to stdout, in full, not argparse's one-line complaint
    assert done.returncode == 2, done
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[0].startswith("usage: pgq-nb")
    for name, text in commands.items():
        line = next((x for x in lines if x.split()[:1] == [name]), None)
        assert line is not None, f"{name} is not listed:\n{done.stdout}"
        assert line.split(None, 1)[1] == text, f"{name}'s help is not on its line:\n{done.stdout}"


def test_help_still_exits_zero_and_a_wrong_command_is_refused() -> None:
    helped = _run("--help")
    assert helped.returncode == 0
    assert "worker" in helped.stdout
    assert "pgq-nb COMMAND --help" in helped.stdout
    wrong = _run("wrokers")
    assert wrong.returncode == 2
    assert "invalid choice" in wrong.stderr
