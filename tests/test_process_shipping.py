"""How attempts reach a worker's processes (issue #17): a handler sees the notebook's globals
as they are at each attempt; an error's traceback shows the handler's own lines; payloads and
results of megabytes cross whole.

Real processes and the real Postgres of the fixtures.
"""

from __future__ import annotations

import pgq_nb


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
