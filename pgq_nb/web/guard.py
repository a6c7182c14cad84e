"""The guard every request but ``/healthz`` and the script passes (:meth:`Guarded.guard`):
the Host check (no secret: loopback names only), the login (a session cookie or
``Authorization: Bearer``), and for a POST the CSRF token and the Origin; with the security
headers of every answer, the form reader and the checks of numbers in URLs. A refused request
changes nothing and gets a page saying why and what to do (:class:`Refused`).
"""

from __future__ import annotations

import asyncio
import importlib.resources
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pgq_nb.errors import DatabaseUnavailableError, InvalidInputError, JobNotFoundError
from pgq_nb.web import html
from pgq_nb.web.auth import (
    FLASH_COOKIE,
    SESSION_COOKIE,
    SESSION_MAX_AGE_S,
    Auth,
    Session,
    host_allowed,
    local_path,
    same_origin,
)
from pgq_nb.web.config import WebConfig

if TYPE_CHECKING:
    from pgq_nb.queue import AsyncQueue

log = logging.getLogger("pgq_nb.web")
Handler = Callable[[Request, Session], Awaitable[Response]]
MAX_FORM_BYTES = 256 * 1024
#: Headers a reverse proxy adds: without a token, such a request is refused (the proxy's own
#: Host, often 127.0.0.1, would pass the loopback check and open the dashboard to everyone).
PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip")


#: Sent with every answer: no framing (clickjacking), scripts only from this site (an
#: escaping slip could not run one), forms post only here, no MIME sniffing.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        b"img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeaders:
    """ASGI middleware adding SECURITY_HEADERS to every HTTP answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, with_headers)


class Refused(Exception):
    """A request refused with ``status`` and a message saying what to do."""

    def __init__(
        self, status: int, title: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message
        self.headers = headers


def problem(
    status: int, title: str, message: str, headers: dict[str, str] | None = None
) -> HTMLResponse:
    return HTMLResponse(
        html.problem_page(status, title, message), status_code=status, headers=headers
    )


def int_param(value: str | None, name: str, *, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    digits = value.strip().removeprefix("-")
    number = int(value) if digits.isascii() and digits.isdigit() and len(digits) < 10 else None
    if number is None or not low <= number <= high:
        raise Refused(
            400,
            "Bad request",
            f"{name} must be a whole number from {low} to {high}, not {value[:40]!r}",
        )
    return number


def wants_html(request: Request) -> bool:
    """Whether a request comes from a browser (which is sent to the login form): one that
    accepts HTML, or the pages' own live updates. Others (Prometheus, curl) get a 401."""
    return "text/html" in request.headers.get("accept", "") or "x-pgq-live" in request.headers


def refuse_nul(pairs: Iterable[tuple[str, str]]) -> None:
    """Refuses a query or form with a NUL character, which no text in Postgres may hold."""
    for key, value in pairs:
        if "\x00" in key or "\x00" in value:
            raise Refused(
                400,
                "Bad request",
                f"{key[:40]!r} holds a NUL character (%00), which no name or value here may "
                "contain; remove it",
            )


def job_id(value: str, what: str = "a job id") -> int:
    value = value.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 19 or int(value) > 2**63 - 1:
        raise Refused(400, "Bad request", f"{what} is a whole number, not {value[:40]!r}")
    return int(value)


class Guarded:
    """The guard and the helpers every route uses: one dashboard's queue, configuration and
    signer."""

    def __init__(self, aio: AsyncQueue, config: WebConfig) -> None:
        self.aio = aio
        self.config = config
        self.auth = Auth(config)
        self.script = (
            importlib.resources.files("pgq_nb.web").joinpath("static/live.js").read_bytes()
        )

    # -- the guard --------------------------------------------------------------------------

    def page(
        self, handler: Handler, *, post: bool = False, bounded: bool = True
    ) -> Callable[[Request], Awaitable[Response]]:
        """The route of ``handler`` behind the guard; with ``bounded``, its reads get
        ``config.read_timeout_s`` (an action three times that) and a 503 page after it."""

        async def endpoint(request: Request) -> Response:
            try:
                return await self.guard(request, handler, post=post, bounded=bounded)
            except Refused as refused:
                return problem(refused.status, refused.title, refused.message, refused.headers)
            except JobNotFoundError as exc:
                return problem(404, "Not found", str(exc))
            except InvalidInputError as exc:
                return problem(400, "Bad request", str(exc))
            except DatabaseUnavailableError as exc:
                return problem(
                    503, "Database not answering", f"the database is not answering: {exc}"
                )

        return endpoint

    async def bounded(
        self, handler: Handler, request: Request, session: Session, *, post: bool
    ) -> Response:
        """``handler``'s answer, or a 503 page when the database does not answer in time."""
        limit = self.config.read_timeout_s * (3 if post else 1)
        try:
            async with asyncio.timeout(limit):
                return await handler(request, session)
        except TimeoutError:
            raise Refused(
                503,
                "Database not answering",
                f"the database is not answering: no answer within {limit:g} s (a long lock on "
                "a pgq_nb table, or an overloaded or stopped server). "
                + (
                    "The action may or may not have been done: reload the page to see."
                    if post
                    else "Reload the page in a while; /healthz says whether the database "
                    "answers at all."
                ),
            ) from None

    async def guard(
        self, request: Request, handler: Handler, *, post: bool, bounded: bool = True
    ) -> Response:
        refuse_nul(request.query_params.multi_items())
        if not host_allowed(self.config, request.headers.get("host")):
            raise Refused(
                400,
                "Host not allowed",
                "this dashboard runs without a token, so it answers only "
                "requests for localhost or a loopback address; open it as http://127.0.0.1:PORT/"
                " (or start it with PGQ_NB_WEB_TOKEN to serve other names)",
            )
        if self.config.token is None and any(h in request.headers for h in PROXY_HEADERS):
            raise Refused(
                403,
                "A proxy needs a token",
                "this dashboard runs without a token (for this machine only), but the request "
                "came through a proxy (it has a Forwarded or X-Forwarded-* header), so anyone "
                "who reaches the proxy would get in: start pgq-nb web with PGQ_NB_WEB_TOKEN or "
                "--token-file, and have the proxy pass the browser's Host (nginx: "
                "proxy_set_header Host $host)",
            )
        bearer = self.auth.bearer(request.headers.get("authorization"))
        if bearer is False:
            raise Refused(
                401,
                "Wrong token",
                "the Authorization header does not carry this "
                "dashboard's token; send `Authorization: Bearer <token>`",
                {"www-authenticate": 'Bearer realm="pgq_nb", error="invalid_token"'},
            )
        session = self.auth.session(request.cookies)
        if self.auth.login_required and not bearer and not (session and session.authed):
            if post or request.method != "GET" or not wants_html(request):
                raise Refused(
                    401,
                    "Log in first",
                    f"{'this action' if post else 'this page'} needs the dashboard's token: "
                    "log in at /login, or send `Authorization: Bearer <token>` (Prometheus: "
                    "authorization: {credentials_file: PATH} in its scrape config)",
                    {"www-authenticate": 'Bearer realm="pgq_nb"'},
                )
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        fresh = session is None
        if session is None:
            session = self.auth.new_session(authed=bool(bearer) or not self.auth.login_required)
        if post:
            if not bearer and not same_origin(
                request.headers.get("origin"), request.headers.get("host")
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
        if bounded:
            response = await self.bounded(handler, request, session, post=post)
        else:
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
        refuse_nul(pairs)
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
        response = RedirectResponse(local_path(back), status_code=303)
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
