"""What a notebook run may store: outputs capped as they arrive, records taken out of them.

A notebook can print or display without bound (50 prints of 1 MiB, a 2-million-row frame's
HTML); the runner keeps its outputs in the worker's memory, then stores them twice (the
executed notebook, its HTML). So every output is capped as nbclient receives it
(:func:`cap_outputs`, before it is kept):

- one output (a stream message, one mimetype of a display) keeps at most :data:`OUTPUT_LIMIT`
  characters: text is cut with a visible note, other data (an image, HTML) is dropped for a
  note in its ``text/plain``;
- once the run's outputs reach :data:`OUTPUTS_LIMIT` characters, the next output becomes one
  note saying so and later ones are dropped;
- a ``pgq_nb.record`` output is taken out as it arrives: its value is kept once (in the
  run's recorded values), and the executed notebook keeps only a small marker with its
  ``text/plain`` line. ``pgq_nb.record`` itself refuses values over :data:`RECORD_LIMIT`.

The rendered HTML over :data:`HTML_LIMIT` is replaced by a short page saying so
(:func:`capped_html`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

#: Characters one output (a stream message, one mimetype of a display) keeps.
OUTPUT_LIMIT = 1_000_000
#: Characters of outputs one run keeps in its executed notebook.
OUTPUTS_LIMIT = 10_000_000
#: Characters of the rendered HTML stored.
HTML_LIMIT = 10_000_000
#: Characters of one recorded value, as JSON.
RECORD_LIMIT = 10_000_000
MIMETYPE = "application/vnd.pgq-nb.record+json"  # records.MIMETYPE (no import: no cycle)


def _size(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_size(v) for v in value)
    return len(json.dumps(value, default=str))


def _cut(text: str, limit: int = OUTPUT_LIMIT) -> str:
    return (
        text[:limit] + f"\n[pgq_nb: output truncated: {len(text):,} characters, the first "
        f"{limit:,} kept]\n"
    )


def _cap_data(data: dict[str, Any]) -> None:
    """Cap each mimetype of a display's data, in place."""
    notes = []
    for mime in list(data):
        size = _size(data[mime])
        if size <= OUTPUT_LIMIT:
            continue
        if mime == "text/plain":
            text = data[mime] if isinstance(data[mime], str) else "".join(data[mime])
            data[mime] = _cut(text)
        else:
            del data[mime]
            notes.append(
                f"[pgq_nb: the {mime} output of {size:,} characters was not kept (over "
                f"{OUTPUT_LIMIT:,} per output)]"
            )
    if notes:
        text = data.get("text/plain", "")
        text = text if isinstance(text, str) else "".join(text)
        data["text/plain"] = "\n".join([text, *notes] if text else notes)


class OutputBudget:
    """The outputs one run keeps: capped in place as they arrive, records taken out."""

    def __init__(self) -> None:
        self.used = 0
        self.full = False
        #: The values recorded, by name, in the order first recorded (a later one replaces).
        self.records: dict[str, Any] = {}

    def _record(self, data: dict[str, Any]) -> None:
        found = data.get(MIMETYPE)
        if isinstance(found, str):  # (an older nbformat may keep JSON as text)
            try:
                found = json.loads(found)
            except ValueError:
                found = None
        if not isinstance(found, dict) or not isinstance(found.get("name"), str):
            return
        name, value = found["name"], found.get("value")
        if _size(value) > RECORD_LIMIT:
            data[MIMETYPE] = {"name": name, "not_kept": f"over {RECORD_LIMIT:,} characters"}
            return
        self.records[name] = value
        data[MIMETYPE] = {"name": name, "kept": "in the run's recorded values"}

    def take(self, out: dict[str, Any]) -> bool:
        """Cap ``out`` in place; False: drop it (the run's outputs are full)."""
        kind = out.get("output_type")
        if kind == "stream" and _size(out.get("text", "")) > OUTPUT_LIMIT:
            out["text"] = _cut(str(out["text"]))
        elif kind == "error" and _size(out.get("traceback", [])) > OUTPUT_LIMIT:
            out["traceback"] = [_cut("\n".join(map(str, out["traceback"])))]
        elif isinstance(out.get("data"), dict):
            self._record(out["data"])
            _cap_data(out["data"])
        size = _size({k: v for k, v in out.items() if k in ("text", "traceback", "data")})
        if self.full:
            return False
        if self.used + size <= OUTPUTS_LIMIT:
            self.used += size
            return True
        self.full = True
        out.clear()
        out.update(
            output_type="stream",
            name="stderr",
            text=f"[pgq_nb: this run's outputs reached {OUTPUTS_LIMIT:,} characters: the "
            "rest of its outputs were not kept]\n",
        )
        return True


def cap_outputs(client: Any, budget: OutputBudget) -> None:
    """Have nbclient ``client`` pass every output it keeps through ``budget``."""
    output: Callable[..., Any] = client.output

    def capped(outs: list[Any], msg: Any, display_id: Any, cell_index: int) -> Any:
        out = output(outs, msg, display_id, cell_index)
        if out is None or budget.take(out):
            return out
        if display_id is None and outs and outs[-1] is out:
            outs.pop()  # (one with a display id keeps its place, emptied: it may be updated)
            return None
        out.clear()
        out.update(output_type="stream", name="stderr", text="")
        return out

    client.output = capped


def capped_html(body: str | None) -> str | None:
    """``body``, or a short page saying it was too large to keep."""
    if body is None or len(body) <= HTML_LIMIT:
        return body
    return (
        "<!DOCTYPE html><html><body><p>The rendered notebook was "
        f"{len(body):,} characters, over the {HTML_LIMIT:,} kept: open the executed notebook "
        "instead (<code>q.notebook_output(job_id).save('run.ipynb')</code>).</p></body></html>"
    )
