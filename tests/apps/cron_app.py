"""A worker module for the schedule tests: `pgq-nb worker cron_app:q`."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pgq_nb

q = pgq_nb.connect()
_log = (Path(os.environ["RUN_LOG_DIR"]) / f"ticks-{os.getpid()}.log").open("a", buffering=1)


@q.schedule("every_second", "* * * * * *")
async def every_second(schedule: pgq_nb.Schedule) -> None:
    """Records the tick it ran and how late it started."""
    late = time.time() - schedule.fire_time.timestamp()
    _log.write(f"{schedule.fire_time.isoformat()} {late:.4f} {os.getpid()}\n")
