"""``q.notebook_output(job_id)``: a notebook job's executed notebook, shown inline in Jupyter.

The rendered HTML is put in an ``<iframe srcdoc=...>`` with ``sandbox="allow-scripts"`` (no
``allow-same-origin``): its scripts run (MathJax, widgets' static views) in an opaque origin of
their own, so neither they nor its styles reach the page that shows it, its cookies or its
Jupyter token. A notebook whose job has not run yet shows where its job is.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import json
from typing import Any

from pgq_nb.nbjobs.content import ENTRYPOINT

#: HTML longer than this is not embedded in the output shown (each display would copy it into
#: the notebook showing it): it says how to save it instead.
INLINE_LIMIT = 2_000_000


@dataclasses.dataclass(frozen=True)
class NotebookOutput:
    """The last attempt of a notebook job: ``ipynb`` (the executed notebook as JSON text),
    ``html`` (rendered), ``recorded`` (what ``pgq_nb.record`` recorded), and how it ended.
    Displayed in Jupyter, it shows the executed notebook in a sandboxed frame."""

    job_id: int
    status: str | None
    path: str
    ran: bool
    ok: bool | None = None
    error: str | None = None
    attempt: int | None = None
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    recorded: dict[str, Any] = dataclasses.field(default_factory=dict)
    cells: int | None = None
    cells_run: int | None = None
    started: dt.datetime | None = None
    duration_s: float | None = None
    ipynb: str | None = dataclasses.field(default=None, repr=False)
    html: str | None = dataclasses.field(default=None, repr=False)

    def notebook(self) -> dict[str, Any] | None:
        """The executed notebook as a dict (nbformat 4 JSON), or None before its first run."""
        return None if self.ipynb is None else dict(json.loads(self.ipynb))

    def save(self, path: str) -> None:
        """Write the executed notebook (``.ipynb``) or its HTML (``.html``) to ``path``."""
        text = self.html if path.endswith((".html", ".htm")) else self.ipynb
        if text is None:
            raise ValueError(f"job {self.job_id} has no {'HTML' if self.ipynb else 'output'} yet")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)

    def _header(self) -> str:
        if not self.ran:
            return (
                f"<b>notebook job {self.job_id}</b> ({html.escape(self.path)}): "
                f"{html.escape(str(self.status))}, not run yet"
            )
        state = "ran" if self.ok else "failed"
        cells = f"{self.cells_run} of {self.cells} cells"
        took = f"{self.duration_s:.1f} s" if self.duration_s is not None else ""
        line = (
            f"<b>notebook job {self.job_id}</b> ({html.escape(self.path)}), attempt "
            f"{self.attempt}: {state}, {cells}, {took}; job {html.escape(str(self.status))}"
        )
        if self.error:
            line += f"<br><code>{html.escape(self.error.splitlines()[0])}</code>"
        return line

    def _repr_html_(self) -> str:
        header = f"<div>{self._header()}</div>"
        if self.html is None:
            return header
        if len(self.html) > INLINE_LIMIT:
            return header + (
                f"<p>The executed notebook's HTML is {len(self.html):,} characters, too large "
                f"to show inline (over {INLINE_LIMIT:,}): <code>.save('run.html')</code> and "
                "open that file, or <code>.save('run.ipynb')</code>.</p>"
            )
        frame = (
            f'<iframe sandbox="allow-scripts" srcdoc="{html.escape(self.html, quote=True)}" '
            'style="width:100%;height:600px;border:1px solid #ccc" '
            f'title="notebook job {self.job_id}"></iframe>'
        )
        return header + frame

    def __repr__(self) -> str:
        return f"<NotebookOutput job {self.job_id} {self.path!r} status={self.status}>"


def output_hint(entrypoint: str, job_id: int) -> str:
    """For the dashboard: where a notebook job's executed notebook is ("" for other jobs)."""
    if entrypoint != ENTRYPOINT:
        return ""
    return (
        f'<span style="color:#666" data-notebook-job="{int(job_id)}">executed notebook: '
        f"<code>q.notebook_output({int(job_id)})</code></span>"
    )


def from_row(job_id: int, status: str | None, path: str, row: Any) -> NotebookOutput:
    """The output of ``row`` (query ``notebook_output``), or one of a job not run yet."""
    if row is None:
        return NotebookOutput(job_id=job_id, status=status, path=path, ran=False)
    return NotebookOutput(
        job_id=job_id,
        status=row["status"],
        path=row["path"],
        ran=True,
        ok=row["ok"],
        error=row["error"],
        attempt=row["attempt"],
        parameters=json.loads(row["parameters"]),
        recorded=json.loads(row["recorded"]),
        cells=row["cells"],
        cells_run=row["cells_run"],
        started=row["started"],
        duration_s=row["duration_s"],
        ipynb=row["executed"],
        html=row["html"],
    )
