"""A TCP proxy in front of the test Postgres, to make the database unreachable on demand: a
worker or a pool connects through it, then the test cuts it (every connection closed, new ones
refused) or stalls it (connections stay open, nothing more passes)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from urllib.parse import parse_qs, quote, urlsplit


class DbProxy:
    """Forwards 127.0.0.1:``port`` to the server of ``dsn``; :attr:`dsn` goes through it."""

    def __init__(self, dsn: str) -> None:
        url = urlsplit(dsn)
        query = parse_qs(url.query)
        host = query.get("host", [url.hostname or "127.0.0.1"])[0]
        port = int(query.get("port", [url.port or 5432])[0])
        self._upstream: str | tuple[str, int] = (
            f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
        )
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        auth = f"{quote(url.username or '', safe='')}:{quote(url.password or '', safe='')}"
        self.dsn = f"postgresql://{auth}@127.0.0.1:{self.port}{url.path or '/postgres'}"
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.stalled = threading.Event()
        self.cut_off = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _connect_upstream(self) -> socket.socket:
        if isinstance(self._upstream, str):
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self._upstream)
            return upstream
        return socket.create_connection(self._upstream)

    def _accept(self) -> None:
        while not self.cut_off.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.cut_off.is_set():
                client.close()
                return
            upstream = self._connect_upstream()
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = source.recv(65536)
                if not data:
                    break
                while self.stalled.is_set() and not self.cut_off.is_set():
                    time.sleep(0.05)  # hold what was read: the other side waits for it
                if self.cut_off.is_set():
                    break
                sink.sendall(data)
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def stall(self) -> None:
        """Keep every connection open, and pass nothing more (a server that hangs)."""
        self.stalled.set()

    def cut(self) -> None:
        """Close every connection and refuse new ones (a server gone)."""
        self.cut_off.set()
        self._listener.close()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self.cut()
