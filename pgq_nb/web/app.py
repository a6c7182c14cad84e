"""The Starlette application of ``pgq-nb web``: pages (GET), actions (POST, with a CSRF token,
absent in read-only mode), the login, ``/healthz``, ``/metrics`` and the page script. Every
route but ``/healthz``, the login and the script is wrapped by :meth:`Guarded.page`
(``guard.py``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from pgq_nb.errors import ConfigurationError, did_you_mean
from pgq_nb.web import data, html, pages
from pgq_nb.web.auth import SESSION_COOKIE, Session, local_path
from pgq_nb.web.config import WebConfig
from pgq_nb.web.guard import Guarded, Refused, SecurityHeaders, int_param, job_id, problem
from pgq_nb.web.health import HealthCheck
from pgq_nb.web.throttle import LoginThrottle

if TYPE_CHECKING:
    from pgq_nb.queue import AsyncQueue

log = logging.getLogger("pgq_nb.web")
MAX_LIMIT = 500
#: The longest entrypoint or schedule name a form may carry.
MAX_NAME = 200


class Web(Guarded):
    """The routes of one dashboard."""

    def __init__(self, aio: AsyncQueue, config: WebConfig) -> None:
        super().__init__(aio, config)
        self.health = HealthCheck(aio.store.dsn, aio.queries["web_ping"])
        self.throttle = LoginThrottle()

    # -- pages ------------------------------------------------------------------------------

    async def overview(self, request: Request, session: Session) -> Response:
        ov = await data.overview(self.aio)
        return self.render(request, pages.overview(self.context(request, session), ov))

    async def failures(self, request: Request, session: Session) -> Response:
        params = request.query_params
        limit = int_param(params.get("limit"), "limit", default=50, low=1, high=MAX_LIMIT)
        entrypoint = params.get("entrypoint") or None
        rows = await data.failures(self.aio, entrypoint, limit)
        by_ep = await data.failed_by_entrypoint(self.aio)
        ov_now = (await data.fetch(self.aio, "server_now"))[0]["now"]
        ctx = self.context(request, session)
        return self.render(request, pages.failures(ctx, rows, by_ep, entrypoint, limit, ov_now))

    async def schedules(self, request: Request, session: Session) -> Response:
        rows, total, now = await data.schedules(self.aio)
        return self.render(
            request, pages.schedules(self.context(request, session), rows, total, now)
        )

    async def workflows(self, request: Request, session: Session) -> Response:
        limit = int_param(
            request.query_params.get("limit"), "limit", default=50, low=1, high=MAX_LIMIT
        )
        runs = await data.workflow_runs(self.aio, limit)
        now = (await data.fetch(self.aio, "server_now"))[0]["now"]
        return self.render(request, pages.workflows(self.context(request, session), runs, now))

    async def workflow_run(self, request: Request, session: Session) -> Response:
        run_id = job_id(request.path_params["run"], "a workflow run id")
        run = await data.workflow_run(self.aio, run_id)
        if run is None:
            raise Refused(404, "Not found", f"no workflow run with id {run_id}")
        now = (await data.fetch(self.aio, "server_now"))[0]["now"]
        timeline = await data.workflow_timeline(self.aio, run_id)
        ctx = self.context(request, session)
        return self.render(request, pages.workflow_run(ctx, run, now, timeline=timeline))

    async def job(self, request: Request, session: Session) -> Response:
        info = await self.aio.get_job(job_id(request.path_params["job"]))
        now = (await data.fetch(self.aio, "server_now"))[0]["now"]
        return self.render(request, pages.job(self.context(request, session), info, now))

    async def search(self, request: Request, session: Session) -> Response:
        wanted = request.query_params.get("id", "").strip().lstrip("#")
        info = await self.aio.get_job(job_id(wanted))
        return RedirectResponse(f"/jobs/{info.id}", status_code=303)

    async def metrics(self, request: Request, session: Session) -> Response:
        try:
            from pgq_nb.metrics import render
        except (ImportError, ConfigurationError):  # pgq_nb.metrics says which
            raise Refused(
                404,
                "No metrics",
                "the Prometheus metrics need the prometheus_client package, which is not "
                "installed: install pgq_nb[metrics] (pip install 'pgq_nb[metrics]')",
            ) from None
        # render awaits its queries on the pgq_nb loop, which owns the store's pool
        body, content_type = await render(self.aio.store)
        return Response(body, media_type=content_type)

    # -- actions (POST; not routed in read-only mode) ---------------------------------------

    def field(self, request: Request, name: str) -> str:
        values: list[str] = request.state.form.get(name, [])
        if len(values) != 1 or not values[0]:
            raise Refused(400, "Bad form", f"the form lacks its {name!r} field; reload the page")
        if len(values[0]) > MAX_NAME:
            raise Refused(
                400,
                "Bad form",
                f"the form's {name!r} is {len(values[0]):,} characters; the dashboard's names "
                f"are at most {MAX_NAME}: reload the page",
            )
        return values[0]

    async def requeue(self, request: Request, session: Session) -> Response:
        form: dict[str, list[str]] = request.state.form
        if form.get("ids"):
            ids = [job_id(v) for v in form["ids"]]
            n = await self.aio.requeue_failed(ids=ids)
            return self.done(request, f"requeued {n} of {len(ids)} selected jobs", "/failures")
        if form.get("entrypoint"):
            entrypoint = self.field(request, "entrypoint")
            n = await self.aio.requeue_failed(entrypoint=entrypoint)
            return self.done(request, f"requeued {n} failed jobs of {entrypoint}", "/failures")
        raise Refused(
            400,
            "Nothing selected",
            "select failed jobs to requeue (tick their boxes), "
            "or use an entrypoint's “Requeue all”",
        )

    async def pause(self, request: Request, session: Session) -> Response:
        entrypoint = self.field(request, "entrypoint")
        known = await data.entrypoints(self.aio)
        if entrypoint not in known:
            raise Refused(
                404,
                "Not found",
                f"no entrypoint named {entrypoint!r}{did_you_mean(entrypoint, known)}: only "
                "entrypoints a queue or a worker registered, or that have jobs, can be paused "
                "or resumed. Nothing was changed; reload the page",
            )
        paused = request.url.path.endswith("/pause")
        await (self.aio.pause if paused else self.aio.resume)(entrypoint)
        return self.done(request, f"{'paused' if paused else 'resumed'} {entrypoint}", "/")

    async def cancel(self, request: Request, session: Session) -> Response:
        wanted = job_id(request.path_params["job"])
        outcome = (await self.aio.cancel(wanted))[wanted]
        if outcome == "not found":
            raise Refused(404, "Not found", f"no job with id {wanted}")
        return self.done(request, f"job {wanted}: {outcome}", f"/jobs/{wanted}")

    async def schedule(self, request: Request, session: Session) -> Response:
        name = self.field(request, "name")
        verb = request.url.path.rsplit("/", 1)[1]
        if verb == "pause":
            await self.aio.pause_schedule(name)
            message = f"paused schedule {name}"
        elif verb == "resume":
            tick = await self.aio.resume_schedule(name)
            message = f"resumed schedule {name}; next tick {tick:%Y-%m-%d %H:%M:%S} UTC"
        else:
            job = await self.aio.run_schedule_now(name)
            message = f"queued a run of {name} now: job {job}"
        return self.done(request, message, "/schedules")

    async def run_action(self, request: Request, session: Session) -> Response:
        run_id = job_id(request.path_params["run"], "a workflow run id")
        run = await self.aio.workflow_run(run_id)
        if request.url.path.endswith("/cancel"):
            n = await run.cancel()
            message = f"workflow run {run_id}: {n} steps cancelled or told to stop"
        else:
            n = await run.retry()
            message = f"workflow run {run_id}: {n} steps requeued"
        return self.done(request, message, f"/workflows/{run_id}")

    # -- login ------------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        if not self.auth.login_required:
            return RedirectResponse("/", status_code=303)
        next_path = local_path(request.query_params.get("next"))
        return HTMLResponse(html.login_page(None, next_path))

    async def login(self, request: Request) -> Response:
        if not self.auth.login_required:
            return RedirectResponse("/", status_code=303)
        try:
            form = await self.form(request)
        except Refused as refused:
            return problem(refused.status, refused.title, refused.message)
        next_path = local_path(form.get("next", ["/"])[0])
        client = request.client.host if request.client else "unknown"
        wait = self.throttle.wait_s(client, time.monotonic())
        if wait > 0:
            return HTMLResponse(
                html.login_page(
                    f"too many wrong tokens from {client}: try again in {math.ceil(wait)} s",
                    next_path,
                ),
                status_code=429,
                headers={"retry-after": str(math.ceil(wait))},
            )
        if not self.auth.token_matches(form.get("token", [""])[0]):
            logged = self.throttle.failed(client, time.monotonic())
            if logged is not None:
                log.warning(
                    "%d login(s) with a wrong token from %s (logged at most once a minute)",
                    logged,
                    client,
                )
            return HTMLResponse(
                html.login_page(
                    "wrong token: use the secret this dashboard was started with", next_path
                ),
                status_code=401,
            )
        self.throttle.succeeded(client)
        response = RedirectResponse(next_path, status_code=303)
        self.set_session(request, response, self.auth.new_session(authed=True))
        return response

    async def logout(self, request: Request, session: Session) -> Response:
        self.auth.revoke(session)
        response = RedirectResponse("/login" if self.auth.login_required else "/", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # -- unguarded --------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        trouble = await self.health.problem()
        if trouble is not None:
            return JSONResponse({"status": "unavailable", "database": trouble}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})

    async def live_js(self, request: Request) -> Response:
        return Response(
            self.script, media_type="text/javascript", headers={"cache-control": "max-age=300"}
        )


def create_app(aio: AsyncQueue, config: WebConfig) -> ASGIApp:
    """The dashboard of ``aio`` as an ASGI application."""
    web = Web(aio, config)
    routes = [
        Route("/healthz", web.healthz),
        Route("/static/live.js", web.live_js),
        Route("/login", web.login_form, methods=["GET"]),
        Route("/login", web.login, methods=["POST"]),
        Route("/logout", web.page(web.logout, post=True), methods=["POST"]),
        Route("/", web.page(web.overview)),
        Route("/failures", web.page(web.failures)),
        Route("/schedules", web.page(web.schedules)),
        Route("/workflows", web.page(web.workflows)),
        Route("/workflows/{run}", web.page(web.workflow_run)),
        Route("/jobs/{job}", web.page(web.job)),
        Route("/search", web.page(web.search)),
        Route("/metrics", web.page(web.metrics, bounded=False)),  # bounded by its own timeout
    ]
    if not config.read_only:
        routes += [
            Route("/failures/requeue", web.page(web.requeue, post=True), methods=["POST"]),
            Route("/entrypoints/pause", web.page(web.pause, post=True), methods=["POST"]),
            Route("/entrypoints/resume", web.page(web.pause, post=True), methods=["POST"]),
            Route("/jobs/{job}/cancel", web.page(web.cancel, post=True), methods=["POST"]),
            Route("/schedules/pause", web.page(web.schedule, post=True), methods=["POST"]),
            Route("/schedules/resume", web.page(web.schedule, post=True), methods=["POST"]),
            Route("/schedules/run", web.page(web.schedule, post=True), methods=["POST"]),
            Route("/workflows/{run}/cancel", web.page(web.run_action, post=True), methods=["POST"]),
            Route("/workflows/{run}/retry", web.page(web.run_action, post=True), methods=["POST"]),
        ]

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        if status == 405:
            return problem(
                405,
                "Method not allowed",
                "this address does not take that method"
                + (" (the dashboard runs --read-only: no actions)" if config.read_only else ""),
            )
        return problem(404, "Not found", f"nothing at {request.url.path}; start from /")

    async def server_error(request: Request, exc: Exception) -> Response:
        return problem(
            500,
            "Server error",
            "the dashboard failed on this request; nothing more is known here: the "
            "pgq-nb web log has the error. Reload the page; if it fails again, report it",
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        web.health.close()

    app = Starlette(
        routes=routes,
        exception_handlers={404: not_found, 405: not_found, 500: server_error},
        lifespan=lifespan,
    )
    # outside Starlette's error middleware, so that a 500 answer has the headers too
    return SecurityHeaders(app)
