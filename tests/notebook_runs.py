"""Running the notebooks in notebooks/, and reading what they showed.

Shared by tests/test_notebooks.py and tests/store_notebook_outputs.py (which stores them with
their outputs). A notebook runs top to bottom in a fresh kernel (nbclient), its working
directory notebooks/ as in Jupyter, with ``PGQ_NB_DSN`` naming the server. Each notebook
connects to a schema of its own, named in its first code cell, and starts it afresh, so it
shows the same numbers on every run.

A code cell tagged ``varies`` shows what differs from run to run (clock times, durations, rates,
the server's address, widget ids); its numbers are not compared, only the kinds of its outputs.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
NAMES = (
    "01_quickstart",
    "02_scheduled_reports",
    "03_workflows",
    "04_monitoring",
    "05_schedule_a_report",
    "06_dynamic_pipelines",
)
#: The schema each notebook keeps its jobs in (and resets): never the default queue's
SCHEMAS = {
    "01_quickstart": "pgq_nb_quickstart",
    "02_scheduled_reports": "pgq_nb_reports",
    "03_workflows": "pgq_nb_workflows",
    "04_monitoring": "pgq_nb_monitoring",
    "05_schedule_a_report": "pgq_nb_report_notebooks",
    "06_dynamic_pipelines": "pgq_nb_dynamic",
}
VARIES = "varies"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
LAYOUT = ("@jupyter-widgets/base", "LayoutModel")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def path(name: str) -> Path:
    return NOTEBOOKS / f"{name}.ipynb"


def read(name: str) -> Any:
    """The notebook as stored (a NotebookNode)."""
    return nbformat.read(path(name), as_version=4)  # type: ignore[no-untyped-call]


def execute(name: str, dsn: str, env: dict[str, str] | None = None) -> tuple[Any, float]:
    """Run the stored notebook top to bottom in a fresh kernel against ``dsn`` (with ``env``
    added to the kernel's environment); return it with its outputs, and the seconds the run
    took (kernel start included). Raises CellExecutionError, naming the cell, if any cell
    raised."""
    nb = read(name)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},  # cwd notebooks/, as in Jupyter
        record_timing=False,
        store_widget_state=True,
    )
    kernel_env = dict(os.environ, **(env or {}), PGQ_NB_DSN=dsn)
    kernel_env.pop("PGQ_NB_HOME", None)
    start = time.perf_counter()
    client.execute(env=kernel_env)
    return nb, time.perf_counter() - start


def code_cells(nb: Any) -> list[Any]:
    return [c for c in nb.cells if c.cell_type == "code"]


def varies(cell: Any) -> bool:
    return VARIES in cell.get("metadata", {}).get("tags", [])


def shown_text(cell: Any) -> str:
    """What a code cell printed to stdout and the text/plain of what it displayed."""
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream" and out.name == "stdout":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.append(out.data.get("text/plain", ""))
    return "\n".join(parts)


def numbers(nb: Any) -> dict[str, list[str]]:
    """The numbers every code cell not tagged ``varies`` showed, by cell id."""
    return {c.id: _NUMBER.findall(shown_text(c)) for c in code_cells(nb) if not varies(c)}


def shape(nb: Any) -> dict[str, list[str]]:
    """Each code cell's outputs, by kind: ``stream:stdout``, ``execute_result:text/html,...``."""
    kinds: dict[str, list[str]] = {}
    for cell in code_cells(nb):
        kinds[cell.id] = [
            f"stream:{out.name}"
            if out.output_type == "stream"
            else f"{out.output_type}:{','.join(sorted(out.get('data', {})))}"
            for out in cell.outputs
        ]
    return kinds


#: What the throw-away server's home is shown as in stored outputs: the default home of a user
#: (a stored notebook names no directory of the machine that ran it)
SHOWN_HOME = "~/.local/share/pgq_nb"


def storable(nb: Any, home: Path | None = None) -> str:
    """The executed notebook as it is stored: nothing that changes between identical runs
    besides the outputs themselves (no timings, no interpreter version), and the widget model
    ids numbered in order of appearance, so a refresh changes only what it must. The server's
    ``home``, where an output names it (the queue's address), is shown as SHOWN_HOME."""
    states = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    models = list(states)
    if not models:
        nb.metadata.pop("widgets", None)
    for model in states.values():
        model["state"] = _without_defaults(model)
    nb.metadata["language_info"] = {"name": "python"}
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    raw = json.dumps(nb)
    if home is not None:
        raw = raw.replace(json.dumps(str(home))[1:-1], SHOWN_HOME)
    for number, model in enumerate(models, start=1):  # uuid4 hex: nothing else looks like one
        raw = raw.replace(model, f"{number:032x}")
    renumbered = nbformat.reads(raw, as_version=4)  # type: ignore[no-untyped-call]
    nbformat.validate(renumbered)
    text: str = nbformat.writes(renumbered)  # type: ignore[no-untyped-call]
    return text


def _without_defaults(model: dict[str, Any]) -> dict[str, Any]:
    """A widget model's state, minus a layout's unset attributes: most of a dashboard's models
    are layouts with every attribute unset (None), which is also what the front end assumes for
    an attribute left out, as ipywidgets' own embedding does (``drop_defaults``). Other models
    keep every value (some defaults differ between Python and the front end)."""
    state: dict[str, Any] = model["state"]
    if (model.get("model_module"), model.get("model_name")) != LAYOUT:
        return state
    return {k: v for k, v in state.items() if v is not None}


def write(name: str, nb: Any, home: Path | None = None) -> None:
    path(name).write_text(storable(nb, home), encoding="utf-8")
