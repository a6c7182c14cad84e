"""A worker module for the schedules-as-data tests: `pgq-nb worker region_app:q`. It has one
plain entrypoint and no schedule; the test process adds schedules of it while it runs."""

from __future__ import annotations

import pgq_nb

q = pgq_nb.connect()


@q.entrypoint("region_report")
def region_report(job: pgq_nb.Job) -> dict[str, object]:
    """What a scheduled tick's job carries: its schedule, fire time and payload."""
    assert job.fire_time is not None
    return {
        "schedule": job.schedule_name,
        "fire_time": job.fire_time.isoformat(),
        "region": job.data["region"],
    }
