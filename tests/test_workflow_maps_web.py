"""The web dashboard's workflow page shows the steps a wf.map_over made, each at its place."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette", reason="pgq_nb[web] is not installed (pip install 'pgq_nb[web]')")

import pgq_nb
from tests.test_web import client


def test_the_workflow_page_shows_steps_made_at_run_time(q: pgq_nb.Queue) -> None:
    q.entrypoint("regions")(lambda job: ["north", "south"])
    q.entrypoint("cities")(lambda job: [f"{job.data}-a", f"{job.data}-b"])
    q.entrypoint("visit")(lambda job: job.data)
    wf = q.workflow("nested")
    wf.map_over(wf.map_over(wf.step("regions"), "cities"), "visit")
    run = wf.submit()
    q.run_until_idle()
    assert run.wait(timeout=30, progress=False) == "succeeded"
    with client(q) as web:
        page = web.get(f"/workflows/{run.id}").text
    assert page.count("data-step-status=") == 1 + 2 + 4
    for place in ("cities[0]", "cities[1]", "visit[0.0]", "visit[0.1]", "visit[1.0]", "visit[1.1]"):
        assert place in page
    status = run.status()
    visits = status[status["step"] == "visit"]
    assert sorted(visits["path"].tolist()) == [[0, 0], [0, 1], [1, 0], [1, 1]]
