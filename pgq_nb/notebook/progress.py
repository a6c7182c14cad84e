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

    def close(self, summary: str | None = None) -> Any: ...


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self, summary: str | None = None) -> None:
        pass


class _Noted:
    """A shown bar that, in a notebook, ends with a line of plain text: a widget's state is
    not in a saved notebook (nbclient, nbconvert, a notebook opened without its kernel shows
    the widget's first text, ``0%``), the line is."""

    def __init__(self, shown: Any, description: str, unit: str) -> None:
        self.shown, self.description, self.unit = shown, description, unit

    def update(self, n: int) -> None:
        self.shown.update(n)

    def close(self, summary: str | None = None) -> None:
        self.shown.close()
        if not in_notebook():  # a terminal's bar stays on screen as it ended
            return
        if summary is None:
            done, total = int(self.shown.n), int(self.shown.total or 0)
            summary = f"{self.description}: {done:,} of {total:,} {self.unit}"
        from IPython.display import display

        display({"text/plain": summary}, raw=True)  # type: ignore[no-untyped-call]


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
    *,
    scaled: bool = True,
    noted: bool = False,
) -> Bar:
    """A tqdm.auto bar of ``total`` (or one that does nothing, when not :func:`wanted`).
    ``scaled`` shows counts with k/M suffixes (as decimals: ``0.00/288``), else as whole
    numbers; ``noted`` makes ``close(summary)`` write ``summary`` (default: how many of the
    total were done) as plain text under a notebook's bar, so that a saved notebook shows the
    outcome."""
    if not wanted(progress, total, min_total):
        return _NoBar()
    from tqdm.auto import tqdm

    shown = tqdm(total=int(total), desc=description, unit=unit, unit_scale=scaled, leave=True)
    if noted:
        return _Noted(shown, description, unit)
    plain: Bar = shown
    return plain
