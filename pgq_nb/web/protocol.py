"""uvicorn's h11 protocol with a deadline for each request's line and headers.

uvicorn has none: a client that opens a connection and sends one header line every few seconds
holds it for ever, and a thousand such clients starve the server (slowloris). Here a connection
that has not sent a whole request head within HEADER_TIMEOUT_S of opening, or of its previous
answer, is closed. (uvicorn's own keep-alive timeout ends at the first byte of the next
request.) Beyond a LAN, a reverse proxy in front does this and more.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol

#: Seconds a client has to send a request's line and headers.
HEADER_TIMEOUT_S = 10.0


class HeaderTimeoutProtocol(H11Protocol):
    """:class:`H11Protocol` that closes connections slow to send a request head."""

    header_timeout = HEADER_TIMEOUT_S
    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._head_deadline = self.loop.call_later(self.header_timeout, self._head_too_slow)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        waiting = self.cycle is None or self.cycle.response_complete  # no new request read
        if waiting and not self.transport.is_closing():
            self.transport.close()
