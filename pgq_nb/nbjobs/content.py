"""A notebook to run as a job: read, checked, stored once per content, and the payload naming it.

:func:`prepare` reads and checks everything before anything is written (the path, that it is a
notebook, its kernel, the parameters); :func:`notebook_job_payload` stores the content (once per
sha256: ``INSERT ... ON CONFLICT DO NOTHING``) and returns the entrypoint and payload to enqueue,
on the caller's connection, so a caller's transaction (``q.enqueue_notebook``, a schedule made of
a notebook) writes the content and the job together or not at all.

The content is stored with its outputs and execution counts cleared and its keys sorted: the
hash names the code and its metadata, not the outputs it last showed, so re-enqueueing an
unchanged notebook stores nothing new.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from pgq_nb.errors import InvalidInputError, PayloadError, article
from pgq_nb.nbjobs import parameters as params

#: The built-in entrypoint that runs notebooks (served by ``q.serve_notebooks()``).
ENTRYPOINT = "pgq_nb.notebook"
#: The largest notebook (as stored, outputs cleared) that can be enqueued: 16 MiB.
NOTEBOOK_LIMIT = 16 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class PreparedNotebook:
    """A checked notebook: its stored form, its hash, and the payload of its job."""

    sha256: str
    path: str
    content: str
    payload: dict[str, Any]


def _read(path: object) -> tuple[str, dict[str, Any]]:
    if not isinstance(path, str | os.PathLike):
        raise InvalidInputError(
            f"the notebook path must be a str or a Path, not {type(path).__name__}"
        )
    file = Path(path)
    shown = os.fspath(path)
    if "\x00" in shown:
        raise InvalidInputError(
            f"the notebook path {shown!r} holds a NUL character; give a file path"
        )
    where = file if file.is_absolute() else Path.cwd() / file
    if not file.exists():
        raise InvalidInputError(
            f"notebook {shown!r} does not exist (looked for {where}); give its path relative "
            "to this process's working directory, or an absolute path"
        )
    if not file.is_file():
        raise InvalidInputError(f"notebook {shown!r} is not a file ({where}); give an .ipynb file")
    if file.stat().st_size > 4 * NOTEBOOK_LIMIT:
        raise InvalidInputError(
            f"notebook {shown!r} is {file.stat().st_size:,} bytes; clear its outputs (Edit > "
            "Clear All Outputs) and save it, then enqueue it again"
        )
    try:
        nb = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(
            f"{shown!r} is not a notebook: it is not JSON ({exc}); give an .ipynb file saved "
            "by Jupyter"
        ) from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise InvalidInputError(
            f"{shown!r} is not a notebook: it has no list of cells; give an .ipynb file saved "
            "by Jupyter"
        )
    version = nb.get("nbformat")
    if not isinstance(version, int) or version < 4:
        raise InvalidInputError(
            f"{shown!r} is a notebook of format {version!r}; pgq_nb runs format 4 (open it "
            "in Jupyter and save it to upgrade it)"
        )
    for i, cell in enumerate(nb["cells"]):
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            raise InvalidInputError(
                f"{shown!r} is not a notebook: cell {i + 1} is not a code, markdown or raw "
                "cell; open it in Jupyter and save it again"
            )
    return shown, nb


def check_parameters(parameters: object) -> dict[str, Any]:
    """``parameters`` as a dict of JSON values with Python names, or a clear error."""
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise InvalidInputError(
            f"parameters must be a dict of name to value, not {type(parameters).__name__}"
        )
    for name, value in parameters.items():
        params.check_name(name)
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            kind = type(value).__name__
            why = (
                "holds NaN or an infinity"
                if isinstance(exc, ValueError)
                else f"is {article(kind)}, which is not JSON"
            )
            raise PayloadError(
                f"parameter {name!r} {why}: pass JSON values (str, int, float, bool, None, "
                "lists and dicts of them); for example a date as date.isoformat(), parsed "
                "again in the notebook"
            ) from None
    return dict(parameters)


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def kernel_of(nb: dict[str, Any], kernel_name: str | None, shown: str, check: bool = True) -> str:
    """The kernel to run ``nb`` with: ``kernel_name``, else the notebook's own; it must be a
    Python kernel (parameters are injected as Python)."""
    meta = _dict(nb.get("metadata"))
    spec = _dict(meta.get("kernelspec"))
    name = kernel_name if kernel_name is not None else spec.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError(
            f"notebook {shown!r} names no kernel (its metadata has no kernelspec); pass "
            "kernel_name='python3' (or the name of another Python kernel: `jupyter kernelspec "
            "list` shows them)"
        )
    info = _dict(meta.get("language_info"))
    language = spec.get("language") or info.get("name")
    if kernel_name is None and isinstance(language, str) and language.lower() != "python":
        raise InvalidInputError(
            f"notebook {shown!r} is written in {language}; pgq_nb runs Python notebooks only "
            "(its parameters are injected as Python)"
        )
    if check:
        check_kernel_installed(name)
    return name


def check_kernel_installed(name: str) -> None:
    """Refuse a kernel this machine does not have, when jupyter_client is here to tell (a
    machine that only enqueues may lack it; the worker checks again)."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager
    except ImportError:
        return
    known = KernelSpecManager().find_kernel_specs()
    if name not in known:
        raise InvalidInputError(
            f"no Jupyter kernel named {name!r} is installed (installed: {sorted(known)}); pass "
            "kernel_name= one of them, or install it (`python -m ipykernel install --user "
            f"--name {name}`); if only the workers have it, enqueue with check_kernel=False"
        )


def check_timeout(timeout: object) -> float | None:
    seconds = timeout.total_seconds() if isinstance(timeout, dt.timedelta) else timeout
    if seconds is None:
        return None
    if (
        not isinstance(seconds, int | float)
        or isinstance(seconds, bool)
        or not math.isfinite(seconds)
        or seconds <= 0
    ):
        raise InvalidInputError("timeout must be a positive number of seconds, a timedelta or None")
    return float(seconds)


def check_cwd(cwd: object) -> str | None:
    if cwd is None:
        return None
    if not isinstance(cwd, str | os.PathLike):
        raise InvalidInputError(
            f"cwd must be an absolute directory path on the workers (or None for a private "
            f"temporary directory), not {cwd!r}"
        )
    if not Path(cwd).is_absolute():
        raise InvalidInputError(
            f"cwd must be an absolute directory path on the workers (or None for a private "
            f"temporary directory), not {os.fspath(cwd)!r}: the notebook's path is read here, "
            "relative to this process's directory, but cwd is where the kernel runs, on a "
            "worker that may be another machine or started elsewhere; if the workers have it "
            f"at the same place, give cwd={str(Path(cwd).absolute())!r}"
        )
    return os.fspath(cwd)


def stored_form(nb: dict[str, Any]) -> str:
    """The notebook as stored and hashed: outputs and execution counts cleared, sources as one
    string (a notebook file may split them in lines), keys sorted."""
    cells = []
    for cell in nb["cells"]:
        cell = dict(cell)
        if isinstance(cell.get("source"), list):
            cell["source"] = "".join(str(line) for line in cell["source"])
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        cells.append(cell)
    return json.dumps({**nb, "cells": cells}, sort_keys=True, ensure_ascii=False, indent=1)


def prepare(
    path: str | os.PathLike[str],
    parameters: dict[str, Any] | None = None,
    *,
    kernel_name: str | None = None,
    timeout: float | dt.timedelta | None = None,
    cwd: str | os.PathLike[str] | None = None,
    check_kernel: bool = True,
) -> PreparedNotebook:
    """Read and check a notebook and its options; nothing is written. Blocking (reads a file).
    ``check_kernel=False`` skips the check that this machine has the kernel (when only the
    workers have it)."""
    values = check_parameters(parameters)
    if kernel_name is not None and not isinstance(kernel_name, str):
        raise InvalidInputError(f"kernel_name must be a str, not {type(kernel_name).__name__}")
    seconds = check_timeout(timeout)
    directory = check_cwd(cwd)
    shown, nb = _read(path)
    kernel = kernel_of(nb, kernel_name, shown, check_kernel)
    content = stored_form(nb)
    data = content.encode("utf-8")
    if len(data) > NOTEBOOK_LIMIT:
        raise InvalidInputError(
            f"notebook {shown!r} is {len(data):,} bytes without its outputs; a notebook job may "
            f"be at most {NOTEBOOK_LIMIT:,}: keep data in files or tables, not in the notebook"
        )
    sha = hashlib.sha256(data).hexdigest()
    payload = {
        "notebook": sha,
        "path": shown,
        "name": Path(shown).stem,
        "parameters": values,
        "kernel": kernel,
        "timeout": seconds,
        "cwd": directory,
    }
    return PreparedNotebook(sha, shown, content, payload)


async def store(conn: Any, queries: dict[str, str], prepared: PreparedNotebook) -> None:
    """Write the notebook's content (nothing when that content is stored already)."""
    await conn.execute(queries["store_notebook"], prepared.sha256, prepared.path, prepared.content)


async def notebook_job_payload(
    conn: Any,
    queries: dict[str, str],
    path: str | os.PathLike[str],
    parameters: dict[str, Any] | None = None,
    *,
    kernel_name: str | None = None,
    timeout: float | dt.timedelta | None = None,
    cwd: str | os.PathLike[str] | None = None,
    check_kernel: bool = True,
) -> tuple[str, dict[str, Any]]:
    """Check the notebook, store its content on ``conn`` and return ``(entrypoint, payload)``
    to enqueue (or to schedule): the payload names the content by its sha256, so every run of
    it, on any worker, runs exactly that version. Run it inside the transaction that writes the
    job, so that both are written or neither."""
    prepared = await asyncio.to_thread(
        prepare,
        path,
        parameters,
        kernel_name=kernel_name,
        timeout=timeout,
        cwd=cwd,
        check_kernel=check_kernel,
    )
    await store(conn, queries, prepared)
    return ENTRYPOINT, prepared.payload
