"""The progress bars (enqueue_df, q.wait, run.wait): ``tqdm.auto``, by default shown only in
a notebook, for work of at least ``min_total`` units.

tqdm is imported only when a bar is shown. A bar created on the pgq_nb loop thread appears in
the cell that made the call: the coroutine runs in a copy of that cell's context, where
ipykernel keeps the cell's output target.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol

#: Frames at least this long get a bar by default (in a notebook).
DEFAULT_MIN_ROWS = 10_000


class Bar(Protocol):
    def update(self, n: int) -> Any: ...

    def close(self) -> Any: ...


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def in_notebook() -> bool:
    """True inside a running Jupyter kernel. Cheap: never imports IPython itself."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    get_ipython = getattr(ipython, "get_ipython", None)
    shell = get_ipython() if callable(get_ipython) else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def wanted(progress: bool | None, total: int, min_total: int = DEFAULT_MIN_ROWS) -> bool:
    """Whether to show a bar: ``progress`` if given, else in a notebook for a total of at
    least ``min_total``."""
    if progress is not None:
        return bool(progress)
    return total >= min_total and in_notebook()


def bar(
    progress: bool | None,
    total: int,
    description: str,
    unit: str = "rows",
    min_total: int = DEFAULT_MIN_ROWS,
) -> Bar:
    """A tqdm.auto bar of ``total`` (or one that does nothing, when not :func:`wanted`)."""
    if not wanted(progress, total, min_total):
        return _NoBar()
    from tqdm.auto import tqdm

    shown: Bar = tqdm(total=total, desc=description, unit=unit, unit_scale=True, leave=True)
    return shown
