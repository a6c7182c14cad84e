"""``/metrics`` and ``/healthz`` of ``pgq-nb worker --metrics-port``: a tiny HTTP/1.1 server on
the worker's own event loop (no web framework in a worker process).

It answers GET (and HEAD) of two paths, one request per connection, and nothing else: there
are no actions, and nothing it shows is a payload or a result, only names and counts. It binds
127.0.0.1 unless ``--metrics-host`` names another address (Prometheus scrapes from another
machine); then anyone who can reach the port can read entrypoint and schedule names and the
counts, which the worker says in its log when it starts.

Slow clients cannot starve it: a client has 2 s to send its whole request head (then 408 and
closed), one client address holds at most 4 connections at once (more are closed at once), 16
in all. A scrape's text is formatted in a thread, off the worker's loop.

``/healthz`` answers 200 while the worker's loop runs (it is answered on that loop: a blocked
loop does not answer at all), it is registered and not stopping, and its last heartbeat went
through within the heartbeat timeout; 503 otherwise. The body is one line saying which.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket

from prometheus_client import ProcessCollector
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from pgq_nb.errors import ConfigurationError
from pgq_nb.metrics import CONTENT_TYPE, QueueCollector
from pgq_nb.metrics_worker import MeteredWorker, WorkerMetrics
from pgq_nb.store import Backend

logger = logging.getLogger("pgq_nb.metrics")

#: Seconds a client gets to send its whole request head (request line and headers); then it
#: is answered 408 and closed. Prometheus and a health check send theirs at once: a client
#: that trickles it holds a connection for no longer than this.
REQUEST_TIMEOUT_S = 2.0
#: Seconds one connection may last in all (a scrape waits for the one before it).
CONNECTION_TIMEOUT_S = 60.0
#: The longest request line and header line.
LINE_LIMIT = 8192
MAX_HEADERS = 100
#: Connections served at once; one more is closed at once (a scraper and a health check need
#: a few; a client that opens hundreds must not take the worker's file descriptors).
MAX_CONNECTIONS = 16
#: Connections served at once to one client address; one more from it is closed at once, so
#: that one client cannot take every connection and leave none for /healthz and the scrapes.
MAX_PER_CLIENT = 4

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


def metered_worker(queue: Backend, **options: object) -> MeteredWorker:
    """A worker of ``queue`` (Worker's options) that records its metrics in a registry of its
    own, with the process's CPU and memory (``process_*``)."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    return MeteredWorker(queue, metrics=WorkerMetrics(registry), **options)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MetricsServer:
    """Serves one worker's ``/metrics`` (the queue's and the process's) and ``/healthz``."""

    def __init__(self, worker: MeteredWorker) -> None:
        self.worker = worker
        self.registry = worker.metrics.registry
        self.queue = QueueCollector(worker.store)
        self.registry.register(self.queue)
        self._scrape = asyncio.Lock()  # one scrape reads the database at a time
        self._open = 0
        self._clients: dict[str, int] = {}  # connections open per client address
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port``; a port in use is a ConfigurationError."""
        try:
            self.server = await asyncio.start_server(self._serve, host, port, limit=LINE_LIMIT)
        except socket.gaierror as exc:
            raise ConfigurationError(
                f"cannot serve metrics on {host}:{port}: the host {host!r} cannot be resolved "
                f"({exc.strerror or exc}); give --metrics-host an address of this machine, e.g. "
                "127.0.0.1 (the default) or 0.0.0.0 for every interface"
            ) from None
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise ConfigurationError(
                    f"cannot serve metrics on {host}:{port}: {host!r} is not an address of this "
                    "machine; give --metrics-host an address of this machine, e.g. 127.0.0.1 "
                    "(the default) or 0.0.0.0 for every interface"
                ) from None
            raise ConfigurationError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; pick a free "
                "port with --metrics-port, or stop what listens there"
            ) from None
        where = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
        logger.info("serving metrics", extra={"metrics": f"{where}/metrics"})
        if not is_loopback(host):
            logger.warning(
                "metrics and health are served on a non-loopback address: anyone who can reach "
                "it reads entrypoint and schedule names and job counts (no payloads, no "
                "actions); firewall it to your Prometheus",
                extra={"address": where},
            )

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if self._open >= MAX_CONNECTIONS or self._clients.get(client, 0) >= MAX_PER_CLIENT:
            writer.transport.abort()  # at once: nothing buffered waits for a reader
            return
        self._open += 1
        self._clients[client] = self._clients.get(client, 0) + 1
        try:
            async with asyncio.timeout(CONNECTION_TIMEOUT_S):
                await self._answer(reader, writer)
        except TimeoutError:
            pass  # a client that does not read its answer
        finally:
            self._open -= 1
            self._clients[client] -= 1
            if not self._clients[client]:
                del self._clients[client]
            writer.close()
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    await writer.wait_closed()
            except TimeoutError:
                writer.transport.abort()  # a client that does not read what is left
            except (ConnectionError, OSError):
                pass

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    method, path = await _read_request(reader)
            except TimeoutError:
                await _respond(writer, 408, "the request was not sent in time\n")
                return
            except _BadRequest as exc:
                await _respond(writer, exc.status, f"{exc}\n")
                return
            if method not in ("GET", "HEAD"):
                await _respond(
                    writer, 405, "only GET and HEAD are served here\n", allow="GET, HEAD"
                )
                return
            head = method == "HEAD"
            if path == "/metrics":
                async with self._scrape:
                    await self.queue.read()
                    # formatted in a thread: a big exposition (thousands of series) must not
                    # stall the worker's claims, heartbeats and /healthz on this loop
                    body = await asyncio.to_thread(generate_latest, self.registry)
                await _respond(writer, 200, body, content_type=CONTENT_TYPE, head=head)
            elif path == "/healthz":
                healthy, why = self.worker.health()
                await _respond(writer, 200 if healthy else 503, why + "\n", head=head)
            else:
                await _respond(writer, 404, "not found: this server has /metrics and /healthz\n")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client left


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise _BadRequest(431, "request line or header too long") from None
    except asyncio.IncompleteReadError:
        raise _BadRequest(400, "incomplete request") from None


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str]:
    """The method and path of one request; its headers are read and ignored."""
    parts = (await _read_line(reader)).decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise _BadRequest(400, "not an HTTP request line")
    for _ in range(MAX_HEADERS):
        if (await _read_line(reader)) in (b"\r\n", b"\n"):
            return parts[0], parts[1].split("?", 1)[0]
    raise _BadRequest(431, "too many header lines")


async def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes | str,
    *,
    content_type: str = "text/plain; charset=utf-8",
    head: bool = False,
    allow: str | None = None,
) -> None:
    data = body.encode() if isinstance(body, str) else body
    lines = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(data)}",
        "Cache-Control: no-store",
        "X-Content-Type-Options: nosniff",
        "Connection: close",
    ]
    if allow:
        lines.append(f"Allow: {allow}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if not head:
        writer.write(data)
    await writer.drain()
