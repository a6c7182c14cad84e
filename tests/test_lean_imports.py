"""The core stays lean: `import pgq_nb` and a `pgq-nb worker` process never load the notebook
stack (pandas, widgets, IPython, tqdm, matplotlib), which only pgq_nb.notebook imports, on
first use of a DataFrame method."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pgq_nb
from tests.conftest import APPS, REPO, start_worker_process

NOTEBOOK_STACK = ["pandas", "ipywidgets", "IPython", "tqdm", "matplotlib", "pgq_nb.notebook"]
#: the metrics extra: loaded by `pgq-nb worker --metrics-port` only (and by pgq-nb web)
METRICS = ["prometheus_client", "pgq_nb.metrics"]
#: loaded only by a worker that runs handlers in processes (processes=N, executor="process")
PROCESS_STACK = ["loky", "cloudpickle", "pgq_nb.process_pool"]
#: loaded only by a worker given a Dask cluster (dask=client, pgq-nb worker --dask)
DASK_STACK = ["dask", "distributed", "pgq_nb.dask_executor"]

PROBE_APP = '''
"""Writes the worker process's sys.modules to LEAN_PROBE_OUT when its job runs."""
import json
import os
import sys

import pgq_nb

q = pgq_nb.connect()


@q.entrypoint("lean_probe")
def probe(job: pgq_nb.Job) -> None:
    out = os.environ["LEAN_PROBE_OUT"]
    with open(out + ".tmp", "w") as f:
        json.dump(sorted(sys.modules), f)
    os.replace(out + ".tmp", out)
'''


def _loaded_after(code: str) -> list[str]:
    """The notebook-stack modules in sys.modules after running ``code`` in a new interpreter."""
    probe = (
        f"{code}\nimport json, sys\n"
        f"print(json.dumps([m for m in {[*NOTEBOOK_STACK, *METRICS, *DASK_STACK]!r} "
        "if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_import_pgq_nb_loads_no_notebook_stack() -> None:
    modules = "pgq_nb, pgq_nb.views, pgq_nb.facade, pgq_nb.cli, pgq_nb.schedule.api"
    assert _loaded_after(f"import {modules}, pgq_nb.schedule.runner, pgq_nb.workflow_build") == []


def test_the_probe_sees_the_notebook_stack_once_it_is_used() -> None:
    loaded = _loaded_after("import pgq_nb.notebook.frames")
    assert "pandas" in loaded and "pgq_nb.notebook" in loaded


def test_a_worker_process_loads_no_notebook_stack(
    q: pgq_nb.Queue, installed: str, tmp_path: Path
) -> None:
    (tmp_path / "lean_probe_app.py").write_text(PROBE_APP)
    out = tmp_path / "modules.json"
    q.entrypoint("lean_probe")(lambda job: None)  # known here, run by the worker process
    job_id = q.enqueue("lean_probe")
    process = start_worker_process(
        installed,
        "lean_probe_app:q",
        LEAN_PROBE_OUT=str(out),
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(APPS)]),
    )
    try:
        deadline = time.monotonic() + 60
        while not out.exists():
            assert process.poll() is None, f"the worker exited early ({process.returncode})"
            assert time.monotonic() < deadline, "the worker did not run the probe job in 60 s"
            time.sleep(0.1)
        assert q.wait([job_id], timeout=30) == {job_id: "succeeded"}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    modules = set(json.loads(out.read_text()))
    assert "pgq_nb.worker" in modules  # it is the worker's own sys.modules
    unwanted = [*NOTEBOOK_STACK, *METRICS, *PROCESS_STACK, *DASK_STACK]
    assert [m for m in unwanted if m in modules] == []
