"""How messages are worded: "a"/"an" before a type's name, and "did you mean" after an unknown
name (table tests of the two helpers in pgq_nb.errors, and the messages that use them); and
the test suite's own: a skipped test says why."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pgq_nb.errors import InvalidInputError, PayloadError, article, did_you_mean
from pgq_nb.notebook import encode
from pgq_nb.schedule import database, syntax
from tests.conftest import REPO


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("object", "an object"),
        ("Interval", "an Interval"),
        ("int", "an int"),
        ("Ellipsis", "an Ellipsis"),
        ("ndarray", "an ndarray"),
        ("str", "a str"),
        ("set", "a set"),
        ("DataFrame", "a DataFrame"),
        ("Timestamp", "a Timestamp"),
        ("UUID", "a UUID"),
        ("uint8", "a uint8"),
        ("NoneType", "a NoneType"),
        ("", "a "),
    ],
)
def test_article_is_the_one_the_word_is_said_with(word: str, expected: str) -> None:
    assert article(word) == expected


@pytest.mark.parametrize(
    ("name", "known", "expected"),
    [
        ("transfrom", ["extract", "transform", "load"], " (did you mean 'transform'?)"),
        ("Score", ["score", "scores", "report"], " (did you mean 'score' or 'scores'?)"),
        ("europe/oslo", ["Europe/Oslo", "UTC"], " (did you mean 'Europe/Oslo'?)"),
        ("zzz", ["extract", "transform"], ""),
        ("anything", [], ""),
    ],
)
def test_did_you_mean_names_the_close_known_names(
    name: str, known: list[str], expected: str
) -> None:
    assert did_you_mean(name, known) == expected


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (object(), "an object has no JSON form"),
        (pd.Interval(0, 1), "an Interval has no JSON form"),
        (object(), "df['c'].astype(str)"),
        # astype(str) would store "b'ab'": bytes are decoded (or base64-encoded)
        (b"ab", "df['c'].str.decode('utf-8') for text, or base64 for binary data"),
    ],
)
def test_a_column_value_without_json_form_is_named_with_its_article(
    value: object, said: str
) -> None:
    frame = pd.DataFrame({"c": pd.Series([value], dtype=object)})
    with pytest.raises(PayloadError) as raised:
        encode.payloads(frame, ["c"])
    assert said in str(raised.value)


def test_a_wrong_schedule_spec_is_named_with_its_article() -> None:
    with pytest.raises(InvalidInputError, match=r"specs\[0\] is an int, not a ScheduleSpec"):
        asyncio.run(database.register(None, {}, [1]))  # type: ignore[list-item]


def test_an_unknown_time_zone_still_gets_a_did_you_mean() -> None:
    with pytest.raises(InvalidInputError, match=r"did you mean 'Europe/Oslo'"):
        syntax.zone_info("Europe/Olso")


def test_a_skipped_test_says_why_in_the_default_output(tmp_path: Path) -> None:
    # the project's pytest settings, on a test file of this test's own
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n\n"
        "def test_needs_something() -> None:\n"
        "    pytest.skip('needs something; install it to run this')\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(REPO / "pyproject.toml"), str(tmp_path)],
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SKIPPED [1]" in done.stdout, done.stdout
    assert "needs something; install it to run this" in done.stdout, done.stdout
