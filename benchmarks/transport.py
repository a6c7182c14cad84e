"""How the benchmark reaches Postgres: over TCP on 127.0.0.1 or over the unix socket.

TCP is the headline: workers on other machines reach the server that way, and each round
trip costs more there, which is what a batching queue saves. The unix socket is the best case
(a notebook on the server's own machine). pgq_nb's embedded server listens on both
(``listen_addresses = '127.0.0.1'`` and its socket directory), so ``--transport both`` runs
every side-by-side scenario twice on one server, with nothing started besides it. With
``--dsn`` the URL decides: a ``host=/some/dir`` (or no host) is the socket, anything else TCP.
"""

from __future__ import annotations

import urllib.parse

TCP = "tcp"
SOCKET = "socket"
CHOICES = ("both", TCP, SOCKET)


class TransportError(ValueError):
    """A --transport that the given server cannot be reached over."""


def kind(dsn: str) -> str:
    """``"socket"`` if the postgresql:// URL ``dsn`` names a unix-socket directory, else TCP."""
    parts = urllib.parse.urlsplit(dsn)
    hosts = urllib.parse.parse_qs(parts.query).get("host", [])
    host = hosts[-1] if hosts else (parts.hostname or "")
    return SOCKET if host == "" or host.startswith("/") else TCP


def wanted(choice: str, dsn: str | None) -> list[str]:
    """The transports to run, headline first; with ``dsn``, only the one it uses.

    >>> wanted("both", None)
    ['tcp', 'socket']
    """
    if choice not in CHOICES:
        raise TransportError(f"--transport must be one of {', '.join(CHOICES)}, not {choice!r}")
    if dsn is None:
        return [TCP, SOCKET] if choice == "both" else [choice]
    have = kind(dsn)
    if choice in ("both", have):
        return [have]
    other = (
        "host=127.0.0.1 (postgresql://user@127.0.0.1:5432/db)"
        if choice == TCP
        else "a socket directory (postgresql://user@/db?host=/var/run/postgresql)"
    )
    raise TransportError(
        f"--transport {choice} was asked, but --dsn reaches the server over the {have}; "
        f"pass a --dsn with {other}, or leave --transport out to use the --dsn's own."
    )
