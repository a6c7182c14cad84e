"""The Starlette application of ``pgq-nb web``: pages (GET), actions (POST, with a CSRF token,
absent in read-only mode), the login, ``/healthz``, ``/metrics`` and the page script.

Every request but ``/healthz`` and the script passes :meth:`Web.guard` first: the Host check
(no secret: loopback names only), the login (a session cookie or ``Authorization: Bearer``),
and for a POST the CSRF token and the Origin. A refused request changes nothing and gets a
page saying why and what to do.
"""

from __future__ import annotations

import importlib.resources
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from pgq_nb import runtime
from pgq_nb.errors import InvalidInputError, JobNotFoundError
from pgq_nb.web import data, html, pages
from pgq_nb.web.auth import (
    FLASH_COOKIE,
    SESSION_COOKIE,
    SESSION_MAX_AGE_S,
    Auth,
    Session,
    host_allowed,
    same_origin,
)
from pgq_nb.web.config import WebConfig

if TYPE_CHECKING:
    from pgq_nb.queue import AsyncQueue

log = logging.getLogger("pgq_nb.web")
Handler = Callable[[Request, Session], Awaitable[Response]]
MAX_FORM_BYTES = 256 * 1024
MAX_LIMIT = 500


class Refused(Exception):
    """A request refused with ``status`` and a message saying what to do."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


def problem(status: int, title: str, message: str) -> HTMLResponse:
    return HTMLResponse(html.problem_page(status, title, message), status_code=status)


def int_param(value: str | None, name: str, *, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise Refused(
            400,
            "Bad request",
            f"{name} must be a whole number from {low} to {high}, not {value[:40]!r}",
        )
    return number


def job_id(value: str) -> int:
    value = value.strip()
    if not value.isdigit() or len(value) > 19 or int(value) > 2**63 - 1:
        raise Refused(400, "Bad request", f"a job id is a whole number, not {value[:40]!r}")
    return int(value)


class Web:
    """The routes of one dashboard: a queue, its configuration, its signer."""

    def __init__(self, aio: AsyncQueue, config: WebConfig) -> None:
        self.aio = aio
        self.config = config
        self.auth = Auth(config)
        self.script = (
            importlib.resources.files("pgq_nb.web").joinpath("static/live.js").read_bytes()
        )

    # -- the guard --------------------------------------------------------------------------

    def page(
        self, handler: Handler, *, post: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return await self.guard(request, handler, post=post)
            except Refused as refused:
                return problem(refused.status, refused.title, refused.message)
            except JobNotFoundError as exc:
                return problem(404, "Not found", str(exc))
            except InvalidInputError as exc:
                return problem(400, "Bad request", str(exc))

        return endpoint

    async def guard(self, request: Request, handler: Handler, *, post: bool) -> Response:
        if not host_allowed(self.config, request.headers.get("host")):
            raise Refused(
                400,
                "Host not allowed",
                "this dashboard runs without a token, so it answers only "
                "requests for localhost or a loopback address; open it as http://127.0.0.1:PORT/"
                " (or start it with PGQ_NB_WEB_TOKEN to serve other names)",
            )
        bearer = self.auth.bearer(request.headers.get("authorization"))
        if bearer is False:
            raise Refused(
                401,
                "Wrong token",
                "the Authorization header does not carry this "
                "dashboard's token; send `Authorization: Bearer <token>`",
            )
        session = self.auth.session(request.cookies)
        if self.auth.login_required and not bearer and not (session and session.authed):
            if post or request.method != "GET":
                raise Refused(
                    401,
                    "Log in first",
                    "this action needs the dashboard's token: "
                    "log in at /login, or send `Authorization: Bearer <token>`",
                )
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        fresh = session is None
        if session is None:
            session = self.auth.new_session(authed=bool(bearer) or not self.auth.login_required)
        if post:
            if not bearer and not same_origin(
                request.headers.get("origin"), request.url.scheme, request.headers.get("host")
            ):
                raise Refused(
                    403,
                    "Cross-site request refused",
                    "the form was sent from another site; use the dashboard's own pages",
                )
            form = await self.form(request)
            if not bearer and not self.auth.csrf_ok(
                None if fresh else session, form.get("csrf", [""])[0]
            ):
                raise Refused(
                    403,
                    "Form expired or tampered with",
                    "the form's security token does not match this session (it may be from "
                    "before a restart or a new login): reload the page and try again. Nothing "
                    "was changed.",
                )
        response = await handler(request, session)
        if fresh and not bearer:
            self.set_session(request, response, session)
        return response

    async def form(self, request: Request) -> dict[str, list[str]]:
        """The URL-encoded form of a POST, as lists of values; anything else is refused."""
        if request.headers.get("content-type", "").split(";")[0].strip() != (
            "application/x-www-form-urlencoded"
        ):
            raise Refused(
                415,
                "Unsupported form",
                "actions take an HTML form (application/x-www-form-urlencoded)",
            )
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise Refused(
                    413, "Form too large", f"a form may be at most {MAX_FORM_BYTES:,} bytes"
                )
        try:
            pairs = parse_qsl(
                body.decode("utf-8"),
                keep_blank_values=True,
                max_num_fields=5000,
                strict_parsing=bool(body),
            )
        except (UnicodeDecodeError, ValueError):
            raise Refused(400, "Bad form", "the form could not be read; reload the page") from None
        out: dict[str, list[str]] = {}
        for key, value in pairs:
            out.setdefault(key, []).append(value)
        request.state.form = out
        return out

    def set_session(self, request: Request, response: Response, session: Session) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            self.auth.cookie(session),
            max_age=SESSION_MAX_AGE_S,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    def context(self, request: Request, session: Session) -> html.Context:
        flash = None
        if request.headers.get("x-pgq-live") is None:
            flash = self.auth.unsign(request.cookies.get(FLASH_COOKIE))
        return html.Context(
            path=request.url.path,
            csrf=self.auth.csrf_token(session),
            read_only=self.config.read_only,
            hide_payloads=self.config.hide_payloads,
            login_required=self.auth.login_required,
            refresh_ms=int(self.config.refresh_s * 1000),
            flash=flash,
        )

    def render(self, request: Request, text: str) -> HTMLResponse:
        response = HTMLResponse(text, headers={"cache-control": "no-store"})
        if request.cookies.get(FLASH_COOKIE) and request.headers.get("x-pgq-live") is None:
            response.delete_cookie(FLASH_COOKIE, path="/")
        return response

    def done(self, request: Request, message: str, back: str) -> Response:
        """After an action: back to the page it came from, with what happened."""
        response = RedirectResponse(
            back if back.startswith("/") and not back.startswith("//") else "/", status_code=303
        )
        response.set_cookie(
            FLASH_COOKIE,
            self.auth.sign(message),
            max_age=60,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

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
        run_id = job_id(request.path_params["run"])
        run = await data.workflow_run(self.aio, run_id)
        if run is None:
            raise Refused(404, "Not found", f"no workflow run with id {run_id}")
        now = (await data.fetch(self.aio, "server_now"))[0]["now"]
        return self.render(request, pages.workflow_run(self.context(request, session), run, now))

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
            from pgq_nb import metrics  # type: ignore[attr-defined,unused-ignore]
        except ImportError:
            metrics = None
        try:
            if metrics is None:
                raise ImportError("pgq_nb.metrics")
            # on the pgq_nb loop, which owns the store's pool (the contract: render(store))
            body, content_type = await runtime.run_here(metrics.render(self.aio.store))
        except ImportError as exc:
            raise Refused(
                404,
                "No metrics",
                f"the Prometheus metrics need prometheus_client ({exc}): install pgq_nb[metrics]",
            ) from None
        return Response(body, media_type=content_type)

    # -- actions (POST; not routed in read-only mode) ---------------------------------------

    def field(self, request: Request, name: str) -> str:
        values: list[str] = request.state.form.get(name, [])
        if len(values) != 1 or not values[0]:
            raise Refused(400, "Bad form", f"the form lacks its {name!r} field; reload the page")
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
        run_id = job_id(request.path_params["run"])
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
        next_path = request.query_params.get("next", "/")
        return HTMLResponse(html.login_page(None, next_path))

    async def login(self, request: Request) -> Response:
        if not self.auth.login_required:
            return RedirectResponse("/", status_code=303)
        try:
            form = await self.form(request)
        except Refused as refused:
            return problem(refused.status, refused.title, refused.message)
        next_path = form.get("next", ["/"])[0]
        if not next_path.startswith("/") or next_path.startswith("//"):
            next_path = "/"
        if not self.auth.token_matches(form.get("token", [""])[0]):
            log.warning("a login with a wrong token", extra={"client": request.client})
            return HTMLResponse(
                html.login_page(
                    "wrong token: use the secret this dashboard was started with", next_path
                ),
                status_code=401,
            )
        response = RedirectResponse(next_path, status_code=303)
        self.set_session(request, response, self.auth.new_session(authed=True))
        return response

    async def logout(self, request: Request, session: Session) -> Response:
        response = RedirectResponse("/login" if self.auth.login_required else "/", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # -- unguarded --------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        try:
            await data.ping(self.aio)
        except Exception as exc:  # any failure is unhealthy
            return JSONResponse(
                {"status": "unavailable", "database": type(exc).__name__}, status_code=503
            )
        return JSONResponse({"status": "ok", "database": "ok"})

    async def live_js(self, request: Request) -> Response:
        return Response(
            self.script, media_type="text/javascript", headers={"cache-control": "max-age=300"}
        )


def create_app(aio: AsyncQueue, config: WebConfig) -> Starlette:
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
        Route("/metrics", web.page(web.metrics)),
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

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
