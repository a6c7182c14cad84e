"""The live dashboard: ``dash = q.dashboard()``, an ipywidgets view that keeps itself current.

Refreshing runs as one task on the pgq_nb loop thread, not on the kernel's loop: a cell that
blocks the kernel (``q.run_until_idle()``, a long computation) does not stop the updates
(measured: 15 updates in 3 s from the loop thread, 1 from a kernel-loop task). Widget values
are set from that thread; ipywidgets sends each change as a comm message, which ipykernel
accepts from any thread.

- At most one refresh is in flight: the periodic one, ``refresh_now()`` and the refresh after
  a button's action share one lock.
- A failing refresh (database down, schema dropped) shows an error line over the last data
  and the next refresh runs on schedule; the line goes when a refresh succeeds.
- ``dash.stop()`` or closing the widget ends the task. While every displayed view of it has
  been removed (its output cleared, the notebook closed), it stays idle and reads nothing.
- Button actions run on the loop too, so a click never blocks the kernel; ``dash.last_action``
  is the concurrent future of the latest one.
- Displaying it refreshes once first (waiting at most ``DISPLAY_WAIT_S``, never on the loop
  thread), from the displaying cell, so the widget state a notebook saves (nbclient,
  nbconvert, papermill, JupyterLab's "save widget state") holds the tables as displayed; the
  bundle displayed also carries them as static ``text/html`` (dashboard_static) for frontends
  that render no widgets, like GitHub's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import logging
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from pgq_nb import runtime
from pgq_nb.errors import InvalidInputError
from pgq_nb.notebook.charts import async_queue
from pgq_nb.notebook.dashboard_data import Snapshot, SnapshotReader
from pgq_nb.notebook.dashboard_html import clock, esc, muted
from pgq_nb.notebook.dashboard_static import snapshot_html, totals
from pgq_nb.notebook.dashboard_tabs import FailuresTab, OverviewTab, SchedulesTab, WorkflowsTab

if TYPE_CHECKING:
    from pgq_nb.facade import Queue
    from pgq_nb.queue import AsyncQueue

logger = logging.getLogger(__name__)

TAB_TITLES = ("Overview", "Failures", "Schedules", "Workflows")
WORKFLOW_ROWS = 10
#: How long displaying a dashboard waits for its first data before showing "loading…"
DISPLAY_WAIT_S = 5.0


class Dashboard(widgets.VBox):  # type: ignore[misc]  # ipywidgets has no type information
    """A live view of one queue: Overview, Failures, Schedules and Workflows tabs.

    Make one with ``q.dashboard(refresh=2.0)`` and display it (the last expression of a cell).
    ``refreshes`` counts finished refresh cycles, ``snapshot`` is the data shown, ``last_error``
    the latest refresh error (None once a refresh succeeds).
    """

    def __init__(self, aio: AsyncQueue, *, refresh_s: float = 2.0, start: bool = True) -> None:
        self.queue = aio
        self.refresh_s = float(refresh_s)
        self.timeout_s = max(10.0, 5 * self.refresh_s)
        self.reader = SnapshotReader(aio, workflows=WORKFLOW_ROWS)
        self.refreshes = 0
        self.failed_refreshes = 0
        self.snapshot: Snapshot | None = None
        self.last_error: str | None = None
        self.last_action: concurrent.futures.Future[str] | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._stopped = threading.Event()
        self._finished = threading.Event()
        self._finished.set()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._views_seen = False

        self.header = widgets.HTML()
        self.error_line = widgets.HTML()
        self.message_line = widgets.HTML()
        self.overview = OverviewTab()
        self.failures = FailuresTab()
        self.schedules = SchedulesTab()
        self.workflows = WorkflowsTab(WORKFLOW_ROWS)
        self.tabs = widgets.Tab(
            children=[t.widget for t in (self.overview, self.failures, self.schedules)]
            + [self.workflows.widget]
        )
        self.tabs.titles = TAB_TITLES
        super().__init__(
            children=[self.header, self.error_line, self.message_line, self.tabs],
            _view_count=0,  # the frontend counts displayed views (see _views_changed)
        )
        self.observe(self._views_changed, names="_view_count")
        self._wire_buttons()
        self._show_header()
        if start:
            self.start()

    # -- refreshing -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the refresh task is alive."""
        return not self._finished.is_set()

    def start(self) -> None:
        """Start refreshing every ``refresh_s`` seconds (done on creation by default)."""
        if self.running:
            return
        self._loop = runtime.loop()
        self._stopped.clear()
        self._finished.clear()
        asyncio.run_coroutine_threadsafe(self._run(), self._loop)
        self._show_header()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop refreshing; returns once no refresh runs any more (the widget stays, showing
        its last data; ``start()`` resumes)."""
        self._stopped.set()
        if sys.is_finalizing():  # Widget.__del__ at exit: the loop thread is gone already
            return
        if self._on_live_loop(self._cancel_task):
            # a task not started yet sees the flag and ends; a running one is cancelled at its
            # next await (a query in flight is cancelled on the server too)
            if not runtime.in_loop_thread():
                self._finished.wait(timeout)
        else:
            self._finished.set()  # no loop, so no task
        self._show_header()

    def close(self) -> None:
        """Stop refreshing and close the widget and every widget in it."""
        self.stop()
        if sys.is_finalizing():
            return
        for child in _descendants(self):
            child.close()
        super().close()

    def refresh_now(self, timeout: float | None = None) -> None:
        """Refresh once now and wait for it (after a refresh already running, if any)."""
        wait = self.timeout_s * 2 if timeout is None else timeout
        runtime.run_sync(self._refresh_within(wait), "Dashboard.refresh_now()")

    async def _refresh_within(self, seconds: float) -> None:
        async with asyncio.timeout(seconds):  # not wait_for: see DESIGN.md, Notebooks
            await self._refresh()

    def _on_live_loop(self, callback: Callable[[], Any]) -> bool:
        """Run ``callback`` soon on the loop the task was started on, if that still runs
        (never start a loop for it: close() also runs from Widget.__del__)."""
        loop = self._loop
        if loop is None or not loop.is_running():
            return False
        try:
            loop.call_soon_threadsafe(callback)
        except RuntimeError:  # closed meanwhile
            return False
        return True

    def _cancel_task(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def _views_changed(self, change: Any) -> None:
        if (change["new"] or 0) > 0:
            self._views_seen = True
            self._on_live_loop(self._wake.set)  # catch up at once
        self._show_header()

    def _idle(self) -> bool:
        """True while every view the frontend displayed has gone."""
        return self._views_seen and self._view_count == 0

    async def _run(self) -> None:
        self._task = asyncio.current_task()
        try:
            while not self._stopped.is_set():
                self._wake.clear()
                if not self._idle():
                    await self._refresh()
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the
                # cancellation of stop() when it coincides with a wake-up
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.refresh_s):
                        await self._wake.wait()
        finally:
            self._task = None
            self._finished.set()

    async def _refresh(self) -> None:
        async with self._lock:
            try:
                async with asyncio.timeout(self.timeout_s):
                    snapshot = await self.reader.read()
                self._render(snapshot)
            except Exception as exc:  # shown in the widget; the next refresh runs anyway
                self._show_error(exc)
            else:
                self.snapshot = snapshot
                self.last_error = None
                self.error_line.value = ""
            self.refreshes += 1
            self._show_header()

    def _render(self, snap: Snapshot) -> None:
        self.overview.update(snap)
        self.failures.update(snap)
        self.schedules.update(snap)
        self.workflows.update(snap)
        failed = sum(snap.failed_by_entrypoint().values())
        running = snap.workflows_running  # all of them, not only the newest listed
        self.tabs.titles = (
            "Overview",
            f"Failures ({failed:,})" if failed else "Failures",
            f"Schedules ({snap.schedules_total:,})" if snap.schedules_total else "Schedules",
            f"Workflows ({running} running)" if running else "Workflows",
        )

    def _show_error(self, exc: BaseException) -> None:
        self.failed_refreshes += 1
        text = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        if text != self.last_error:
            logger.warning("dashboard refresh failed", extra={"error": text})
        self.last_error = text
        shown = self.snapshot.now if self.snapshot is not None else None
        stale = f"showing data from {clock(shown, shown)}; " if shown else ""
        self.error_line.value = (
            '<div class="pgq-error" style="color:#c62828">⚠ refresh failed at '
            f"{dt.datetime.now():%H:%M:%S}: {esc(text)} "
            + muted(f"({stale}retrying every {self.refresh_s:g} s)")
            + "</div>"
        )

    def _show_header(self) -> None:
        snap = self.snapshot
        parts = [f"<b>pgq_nb</b> {muted('schema')} {esc(self.queue.schema)}"]
        if snap is not None:
            parts += totals(snap)
            parts.append(muted(f"updated {clock(snap.now, snap.now)}"))
        elif self.last_error is None and self.running:
            parts.append(muted("loading…"))
        if self._stopped.is_set():
            parts.append(muted("stopped (dash.start() resumes)"))
        elif self._idle():
            parts.append(muted("idle while not displayed"))
        else:
            parts.append(muted(f"refresh every {self.refresh_s:g} s"))
        self.header.value = '<div class="pgq-header">' + " · ".join(parts) + "</div>"

    # -- displaying ----------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The widget view, and the data as static HTML for frontends that show no widgets
        (refreshed first: see the module's docstring)."""
        if self.running and not runtime.in_loop_thread():
            runtime.run_sync(self._refresh_for_display(), "displaying the dashboard")
        else:
            self._send_all_state()
        bundle: dict[str, Any] = super()._repr_mimebundle_(**kwargs)
        bundle["text/html"] = snapshot_html(self.queue.schema, self.snapshot, error=self.last_error)
        return bundle

    async def _refresh_for_display(self) -> None:
        """Refresh now, then send the state of every widget in the dashboard again.

        This runs in a copy of the displaying thread's context, so what it sends belongs to
        the displaying cell: a notebook runner such as nbclient keeps a cell's widget messages
        only. The refresh task's own messages belong to the cell that started it, and a value
        that has not changed since would not be sent again: hence the full state.
        """
        with contextlib.suppress(TimeoutError):  # slow: the header says loading…
            async with asyncio.timeout(min(DISPLAY_WAIT_S, self.timeout_s)):
                await self._refresh()
        self._send_all_state()

    def _send_all_state(self) -> None:
        for widget in [self, *_descendants(self)]:
            widget.send_state()
            if isinstance(getattr(widget, "layout", None), widgets.Layout):
                widget.layout.send_state()

    # -- actions --------------------------------------------------------------------------

    def _wire_buttons(self) -> None:
        f, s = self.failures, self.schedules
        f.requeue_selected.on_click(lambda _: self._requeue_selected())
        f.requeue_all.on_click(lambda _: self._requeue_entrypoint())
        s.pause.on_click(lambda _: self._schedule_action("pause"))
        s.resume.on_click(lambda _: self._schedule_action("resume"))
        s.run_now.on_click(lambda _: self._schedule_action("run_now"))

    def _requeue_selected(self) -> None:
        ids = self.failures.selected_ids()
        if not ids:
            return

        async def requeue() -> str:
            n = await self.queue.requeue_failed(ids=ids)
            return f"requeued {n} of {len(ids)} selected job{'s' if len(ids) != 1 else ''}"

        self._act(requeue)

    def _requeue_entrypoint(self) -> None:
        entrypoint = self.failures.entrypoint.value
        if entrypoint is None:  # never requeue_failed(entrypoint=None): that means all
            return

        async def requeue() -> str:
            n = await self.queue.requeue_failed(entrypoint=entrypoint)
            return f"requeued {n} failed job{'s' if n != 1 else ''} of {entrypoint!r}"

        self._act(requeue)

    def _schedule_action(self, action: str) -> None:
        name = self.schedules.pick.value
        if name is None:
            return
        methods: dict[str, Callable[[str], Awaitable[Any]]] = {
            "pause": self.queue.pause_schedule,
            "resume": self.queue.resume_schedule,
            "run_now": self.queue.run_schedule_now,
        }

        async def call() -> str:
            await methods[action](name)
            return f"{action.replace('_', ' ')}: schedule {name!r}"

        self._act(call)

    def _act(self, action: Callable[[], Coroutine[Any, Any, str]]) -> None:
        self._set_busy(True)
        self.message_line.value = muted("working…")
        self.last_action = asyncio.run_coroutine_threadsafe(self._action(action), runtime.loop())

    async def _action(self, action: Callable[[], Coroutine[Any, Any, str]]) -> str:
        try:
            message = await action()
        except Exception as exc:
            self.message_line.value = (
                f'<span style="color:#c62828">⚠ {esc(type(exc).__name__)}: {esc(exc)}</span>'
            )
            raise
        else:
            self.message_line.value = f"✓ {esc(message)}"
            return message
        finally:
            self._set_busy(False)
            await self._refresh()

    def _set_busy(self, busy: bool) -> None:
        for tab in (self.failures, self.schedules):
            tab.busy = busy
            tab.sync_buttons()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return (
            f"<pgq_nb Dashboard schema={self.queue.schema!r} {state} "
            f"refreshes={self.refreshes} error={self.last_error!r}>"
        )


def _descendants(widget: Any) -> list[Any]:
    found = []
    for child in getattr(widget, "children", ()):
        found.append(child)
        found.extend(_descendants(child))
    return found


def dashboard(q: Queue | AsyncQueue, refresh: float | dt.timedelta = 2.0) -> Dashboard:
    """A live dashboard of ``q``, refreshed every ``refresh`` seconds from the pgq_nb loop
    thread; display it, and ``dash.stop()`` (or close it) when done."""
    seconds = refresh.total_seconds() if isinstance(refresh, dt.timedelta) else refresh
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0.1:
        raise InvalidInputError(f"refresh={refresh!r} must be at least 0.1 seconds")
    return Dashboard(async_queue(q), refresh_s=float(seconds))
