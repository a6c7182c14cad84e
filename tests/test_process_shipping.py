"""How attempts reach a worker's processes (issue #17): the handler's pickle is sent to a
process once, not with every attempt, while a handler still sees the notebook's globals as
they are now; an error's traceback shows the handler's own lines.

Real processes and the real Postgres of the fixtures.
"""

from __future__ import annotations

import os
from typing import Any

import pgq_nb

#: How many times this module's copy (in a process) rebuilt a :class:`Counted` handler.
UNPICKLED = [0]


def _rebuild() -> Counted:
    UNPICKLED[0] += 1
    return Counted()


class Counted:
    """A handler that counts how often a process unpickled it (sent by reference: a process
    imports this module)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, ())

    def __call__(self, job: pgq_nb.Job) -> dict[str, int]:
        return {"pid": os.getpid(), "unpickled": UNPICKLED[0]}


def test_a_process_unpickles_the_handler_once_not_for_every_attempt(q: pgq_nb.Queue) -> None:
    q.entrypoint("counted")(Counted())
    ids = q.enqueue(["counted"] * 6)
    stats = q.run_until_idle(processes=1)
    assert stats.succeeded == 6
    results = [q.get_job(i).result for i in ids]
    assert len({r["pid"] for r in results}) == 1 and results[0]["pid"] != os.getpid()
    assert [r["unpickled"] for r in results] == [1] * 6  # each attempt, before: 1, 2, ... 6


def test_a_handler_sees_the_notebooks_globals_as_they_are_at_each_attempt(
    q: pgq_nb.Queue,
) -> None:
    settings = {"factor": 2}  # a cell's variable, changed in a later cell

    q.entrypoint("scaled")(lambda job: job.data * settings["factor"])
    w = q.start_worker(processes=1)
    try:
        first = q.enqueue(["scaled"] * 3, [1, 2, 3])
        assert set(q.wait(first, timeout=60).values()) == {"succeeded"}
        settings["factor"] = 10
        later = q.enqueue(["scaled"] * 3, [1, 2, 3])
        assert set(q.wait(later, timeout=60).values()) == {"succeeded"}
    finally:
        w.stop(timeout=60)
    assert [q.get_job(i).result for i in first] == [2, 4, 6]
    assert [q.get_job(i).result for i in later] == [10, 20, 30]


def test_an_error_in_a_process_keeps_the_handlers_traceback(q: pgq_nb.Queue) -> None:
    def refuses(job: pgq_nb.Job) -> None:
        raise ValueError(f"no thanks to {job.data}")

    q.entrypoint("refuses", retry=pgq_nb.RetryPolicy(max_attempts=1))(refuses)
    q.entrypoint("fine")(lambda job: job.data + 1)
    bad = q.enqueue("refuses", 7)
    good = q.enqueue(["fine"] * 3, [1, 2, 3])
    stats = q.run_until_idle(processes=1)
    assert stats.failed == 1 and stats.succeeded == 3
    info = q.get_job(bad)
    assert info.error == "ValueError: no thanks to 7", info.error
    trace = info.traceback or ""
    assert ", in refuses\n" in trace, trace  # the handler's frame, from its process
    assert [q.get_job(i).result for i in good] == [2, 3, 4]  # the same process goes on


def test_large_payloads_and_results_cross_whole(q: pgq_nb.Queue) -> None:
    q.entrypoint("echo", executor="process")(lambda job: {"text": job.data["text"] * 2})
    text = "0123456789abcdef" * 250_000  # 4 MB each way and back doubled: many socket buffers
    ids = q.enqueue(["echo"] * 2, [{"text": text}, {"text": text[::-1]}])
    stats = q.run_until_idle()
    assert stats.succeeded == 2
    assert [q.get_job(i).result["text"] for i in ids] == [text * 2, text[::-1] * 2]
