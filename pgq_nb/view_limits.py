"""How many rows a view shows by default, and the warning when that cap leaves rows out.

A view that lists jobs (``q.jobs``, ``q.history``, ``q.failed``) or runs (``q.workflows``)
stops at a default number of rows, so that a notebook cell never pulls a million rows by
accident. It never does so silently: when the default cap leaves rows out, the view warns
:class:`ViewTruncated` with how many rows it shows, how many matched, and how to get the rest
(``limit=None``, a narrower ``since=``, or a count with ``q.stats(since=...)``). A ``limit``
passed by the caller is what they asked for, and is not warned about.

The defaults are :class:`DefaultLimit` values: plain ints to read and to pass on, but a view
can tell them from a number the caller chose (``limit=10_000`` passed by hand is an ``int``).
No pandas here: the core's signatures (``pgq_nb.views``) use these defaults.
"""

from __future__ import annotations


class DefaultLimit(int):
    """A view's default row cap; an int that says it was not chosen by the caller."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"{int(self):_}"


#: q.jobs() shows the oldest 1,000 live jobs unless told otherwise.
JOBS_LIMIT = DefaultLimit(1_000)
#: q.history() shows the newest 10,000 finished jobs unless told otherwise.
HISTORY_LIMIT = DefaultLimit(10_000)
#: q.failed() shows the newest 1,000 failed jobs unless told otherwise.
FAILED_LIMIT = DefaultLimit(1_000)
#: q.workflows() shows the newest 50 runs unless told otherwise.
WORKFLOWS_LIMIT = DefaultLimit(50)
#: When the count of what a default cap left out has to walk history (a ``since=`` range),
#: it stops after this many rows and says "more than".
COUNT_CAP = 1_000_000


class ViewTruncated(UserWarning):
    """A view's default row cap left matching rows out (see the message for the rest)."""

    def __init__(self, message: str, *, shown: int, total: int, exact: bool = True) -> None:
        super().__init__(message)
        #: rows the view returned
        self.shown = shown
        #: rows that matched (at least this many when ``exact`` is False)
        self.total = total
        self.exact = exact

    @property
    def left_out(self) -> int:
        """Rows that matched but were not returned (at least this many if not ``exact``)."""
        return self.total - self.shown


def is_default(limit: object) -> bool:
    """Whether ``limit`` is a view's default cap rather than a number the caller passed."""
    return isinstance(limit, DefaultLimit)


def truncated_message(
    view: str,
    *,
    shown: int,
    total: int,
    exact: bool = True,
    what: str = "rows",
    which: str = "newest",
    narrower: str = "since=...",
    count_with: str = "",
) -> str:
    """The message of :class:`ViewTruncated`: ``view`` (e.g. ``"q.history()"``) shows the
    ``which`` ``shown`` of ``total`` ``what`` (``exact`` False: of more than ``total``), how
    many it left out, and the ways to the rest: ``limit=None``, ``narrower`` (a filter that
    matches fewer) and ``count_with`` (an aggregate that counts them all), when given."""
    of = f"{total:,}" if exact else f"more than {total:,}"
    left = f"{total - shown:,}" if exact else f"more than {total - shown:,}"
    ways = ["pass limit=None for all of them"]
    if narrower:
        ways.append(f"{narrower} for fewer")
    if count_with:
        ways.append(f"count them with {count_with}")
    listed = ways[0] if len(ways) == 1 else f"{', '.join(ways[:-1])}, or {ways[-1]}"
    return f"{view} shows the {which} {shown:,} of {of} {what} ({left} left out): {listed}"
