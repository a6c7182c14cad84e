"""``pgq-nb web --token-file``: the secret is read only from a private file reached through
directories nobody else can change (pgq_nb.web.config.read_token_file). A directory another
user may write lets that user swap the file, or a symlink on the way, between a check and the
open; a symlinked directory leading somewhere safe is fine (a home on another disk)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pgq_nb.errors import ConfigurationError
from pgq_nb.web.config import read_token_file

TOKEN = "c2VjcmV0LXRva2VuLWZvci10ZXN0cw"


def _secret(directory: Path) -> Path:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = directory / "token"
    secret.write_text(TOKEN + "\n")
    secret.chmod(0o600)
    return secret


def test_a_token_file_in_a_directory_others_may_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    secret = _secret(shared)
    assert read_token_file(secret) == TOKEN
    shared.chmod(0o777)  # anyone may rename entries here: the file could be swapped
    with pytest.raises(ConfigurationError, match=r"other users may change.*only you can write"):
        read_token_file(secret)
    shared.chmod(0o1777)  # sticky, as /tmp: others cannot replace our entries
    assert read_token_file(secret) == TOKEN


def test_a_directory_above_it_that_others_may_write_is_refused_too(tmp_path: Path) -> None:
    secret = _secret(tmp_path / "open" / "mine")
    (tmp_path / "open").chmod(0o777)  # mine could be renamed away and replaced
    with pytest.raises(ConfigurationError, match=r"reached through .*open"):
        read_token_file(secret)


def test_a_symlinked_directory_is_judged_by_where_it_leads(tmp_path: Path) -> None:
    safe = _secret(tmp_path / "real")
    (tmp_path / "via").symlink_to(tmp_path / "real", target_is_directory=True)
    assert read_token_file(tmp_path / "via" / "token") == TOKEN  # a home on another disk
    open_dir = tmp_path / "elsewhere"
    _secret(open_dir)
    open_dir.chmod(0o777)
    (tmp_path / "pointer").symlink_to(open_dir, target_is_directory=True)
    with pytest.raises(ConfigurationError, match="other users may change"):
        read_token_file(tmp_path / "pointer" / "token")
    assert safe.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another user")
def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    secret = _secret(theirs)
    os.chown(theirs, 65534, 65534)  # nobody's: they could replace the file
    with pytest.raises(ConfigurationError, match="owner uid 65534"):
        read_token_file(secret)
