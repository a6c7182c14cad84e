"""``pgq_nb.record(name, value)``, called in a notebook that runs as a job: the value is shown
as an output of the mimetype ``application/vnd.pgq-nb.record+json``, which the runner collects
from the executed notebook (see :mod:`pgq_nb.nbjobs.records`); ``q.notebook_runs()`` returns the
values across runs. Outside a kernel (a plain script) it only checks the value."""

from __future__ import annotations

from typing import Any

from pgq_nb.nbjobs.records import bundle


def record(name: str, value: Any) -> Any:
    """Record ``value`` under ``name`` for ``q.notebook_runs()``; returns ``value``."""
    data = bundle(name, value)
    from IPython import get_ipython
    from IPython.display import publish_display_data

    if get_ipython() is not None:
        publish_display_data(data)  # type: ignore[no-untyped-call]
    return value
