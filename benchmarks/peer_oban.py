"""oban-py (the ``oban`` package): Oban's Python port. It needs Python 3.12 or newer.

This harness runs on the project's Python 3.11, where oban-py does not install, so the
``peers`` scenario skips it with a note. On 3.12 or newer it is still skipped, with a note
saying so, until its runner is written and checked against a real run (its worker loop and
bulk insert, as for the other peers): a figure from an unchecked runner would mislead.
"""

from __future__ import annotations

from typing import Any

from benchmarks.peers import Outcome


class ObanPeer:
    name = "oban-py"
    package = "oban"
    min_python = (3, 12)
    candidates = ()
    concurrency = 0
    unsupported = (
        "oban-py: its runner is not written yet (the harness was built on Python 3.11, where "
        "it does not install): skipped"
    )

    def settings(self) -> dict[str, Any]:
        return {}

    async def drain(self, dsn: str, n: int, cap: float) -> Outcome:
        raise NotImplementedError(self.unsupported)

    async def enqueue(self, dsn: str, n: int) -> Outcome:
        raise NotImplementedError(self.unsupported)


PEER = ObanPeer()
