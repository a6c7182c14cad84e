"""The login's brake on guessing: per client address, after FREE_FAILURES wrong tokens each
further attempt must wait (1 s, then twice as long after each failure, at most MAX_WAIT_S)
and is refused with 429 until then, the token unchecked; a right token clears the count.
Warnings about wrong tokens are logged at most once a minute per client. Pure: the clock is
an argument; no Starlette.
"""

from __future__ import annotations

import dataclasses

FREE_FAILURES = 5
FIRST_WAIT_S = 1.0
MAX_WAIT_S = 30.0
#: A client whose last failure is this old starts afresh.
FORGET_AFTER_S = 15 * 60.0
LOG_EVERY_S = 60.0
#: Clients remembered at most (the oldest are dropped beyond).
MAX_CLIENTS = 10_000


@dataclasses.dataclass
class _Client:
    failures: int = 0
    last_failure: float = 0.0
    last_logged: float | None = None
    unlogged: int = 0


class LoginThrottle:
    def __init__(self) -> None:
        self._clients: dict[str, _Client] = {}

    def wait_s(self, client: str, now: float) -> float:
        """Seconds ``client`` must wait before its next login attempt (0: it may try now)."""
        state = self._clients.get(client)
        if state is None or state.failures < FREE_FAILURES:
            return 0.0
        if now - state.last_failure > FORGET_AFTER_S:
            del self._clients[client]
            return 0.0
        delay: float = min(MAX_WAIT_S, FIRST_WAIT_S * 2.0 ** (state.failures - FREE_FAILURES))
        return max(0.0, state.last_failure + delay - now)

    def failed(self, client: str, now: float) -> int | None:
        """Counts a wrong token; returns how many failures to log now (this one and those not
        logged since the last warning), or None when this one is not to be logged."""
        state = self._clients.pop(client, None) or _Client()
        if now - state.last_failure > FORGET_AFTER_S:
            state.failures = 0
        state.failures += 1
        state.last_failure = now
        state.unlogged += 1
        self._clients[client] = state  # the newest at the end
        while len(self._clients) > MAX_CLIENTS:
            del self._clients[next(iter(self._clients))]
        if state.last_logged is not None and now - state.last_logged < LOG_EVERY_S:
            return None
        state.last_logged, logged, state.unlogged = now, state.unlogged, 0
        return logged

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)
