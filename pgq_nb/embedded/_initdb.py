"""Creating the embedded server's data directory (initdb), for :mod:`pgq_nb.embedded.server`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pgq_nb.embedded._home import HomeFiles, include_pg_conf, write_pg_conf
from pgq_nb.embedded._layout import HOME_WAY_OUT, check_reachable, usable_bin_dir
from pgq_nb.embedded._roles import SUPERUSER
from pgq_nb.embedded._safefs import make_dir, refuse, replace_file
from pgq_nb.embedded._system import ServerUser, log_size, log_tail, rotate_log, run_logged
from pgq_nb.errors import EmbeddedServerError


def initdb(
    home: Path, data_dir: Path, log_file: Path, files: HomeFiles, user: ServerUser, *, sync: bool
) -> None:
    """Create the data directory ``data_dir`` of ``home``: initdb into ``data.initdb/``, then
    rename it to ``data/`` (``files``: the home's files; initdb's output goes to ``log_file``).

    An interrupted initialisation thus never leaves a half-made ``data/`` behind.
    """
    bins = usable_bin_dir(user)
    check_reachable(home, user, "the home", HOME_WAY_OUT)
    secret = files.ensure_secret()
    rotate_log(log_file)
    if os.path.lexists(data_dir):
        try:
            data_dir.rmdir()
        except OSError:
            raise EmbeddedServerError(
                f"{data_dir} exists but is not a PostgreSQL data directory (it has no "
                "PG_VERSION). Move it away, or set PGQ_NB_HOME to a new directory."
            ) from None
    staging = home / "data.initdb"
    shutil.rmtree(staging, ignore_errors=True)
    if not make_dir(staging, 0o700, **user.owner()):
        raise refuse(staging, "it cannot be removed", f"Remove it (rm -r {staging}).")
    offset = log_size(log_file)
    pwfile = home / f".pwfile-{os.getpid()}"  # initdb runs as the server user
    try:
        replace_file(pwfile, secret, **user.owner())
        cmd = [str(bins / "initdb"), "-D", str(staging), "-U", SUPERUSER]
        cmd += ["-A", "scram-sha-256", f"--pwfile={pwfile}", "--locale=C", "--encoding=UTF8"]
        cmd += ["--no-instructions"] if sync else ["--no-instructions", "--no-sync"]
        code = run_logged(cmd, user, log_file, timeout=120)
    finally:
        pwfile.unlink(missing_ok=True)
    if code != 0:
        raise EmbeddedServerError(
            f"initdb failed (exit code {code}) for {data_dir}. Last lines of its output:"
            f"\n{log_tail(log_file, offset, [secret])}\nFull log: {log_file}"
        )
    include_pg_conf(staging, user)
    settings = files.new_settings()
    write_pg_conf(staging, settings, user)
    staging.rename(data_dir)
    files.save_settings(settings)
    if sync:
        fd = os.open(home, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
