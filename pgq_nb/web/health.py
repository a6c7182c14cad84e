"""``/healthz``: whether the database answers, within a short time, on a connection of its own.

Not through the queue's pool: when a lock or a burst of slow pages holds every pool slot, the
check must still answer (and say "ok" if the server does). One connection, opened on first use
on the web server's loop and kept; one check at a time, the others share its answer for a
second (a flood of probes opens no connections); a check that fails or runs out of time drops
the connection, so the next one starts afresh.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

#: How long /healthz waits for the database.
HEALTH_TIMEOUT_S = 2.0
#: How long an answer is shared with the probes that come after it.
SHARED_FOR_S = 1.0


class HealthCheck:
    """The database check of one dashboard (``dsn``)."""

    def __init__(self, dsn: str, query: str, *, timeout: float = HEALTH_TIMEOUT_S) -> None:
        self.dsn, self.query = dsn, query
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()
        self._conn: Any = None
        self._answer: tuple[float, str | None] = (-SHARED_FOR_S, None)

    async def problem(self) -> str | None:
        """None when the database answered ``web_ping`` within the timeout; else what went wrong
        (the error's type, never its text: /healthz needs no login)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a connection and a lock serve only the loop they began on
            self._loop, self._lock, self._conn = loop, asyncio.Lock(), None
        try:
            async with asyncio.timeout(self.timeout):
                async with self._lock:
                    at, answer = self._answer
                    if time.monotonic() - at < SHARED_FOR_S:
                        return answer
                    answer = await self._check()
                    self._answer = (time.monotonic(), answer)
                    return answer
        except TimeoutError:
            return f"no answer within {self.timeout:g} s"

    async def _check(self) -> str | None:
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(
                    self.dsn,
                    timeout=self.timeout,
                    server_settings={
                        "application_name": "pgq_nb web /healthz",
                        "statement_timeout": str(int(self.timeout * 1000)),
                    },
                )
            await self._conn.fetchval(self.query)
        except BaseException as exc:  # a timeout's cancel too: the connection is not reused
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.terminate()
            if isinstance(exc, Exception):
                return type(exc).__name__
            raise
        return None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
