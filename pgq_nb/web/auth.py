"""Who may see and do what: signed cookies, the token, CSRF tokens, the Host check.

A session is a cookie signed with HMAC-SHA256 (id, issue time, logged in or not); nothing is
kept on the server. With a secret the signing key is derived from it, so sessions survive a
restart and die when the secret changes; without one (loopback only) the key is random per
process and every visitor gets a session, which carries the CSRF token of its forms. Every
POST needs that token (or an ``Authorization: Bearer`` header, which a browser never adds by
itself), and a browser's ``Origin``, when sent, must be this site. Comparisons of secrets are
constant-time. Pure functions of their inputs and the key; no Starlette.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

from pgq_nb.web.config import WebConfig, is_loopback

SESSION_COOKIE = "pgq_nb_session"
FLASH_COOKIE = "pgq_nb_flash"
#: A session (a login) lasts this long.
SESSION_MAX_AGE_S = 12 * 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclasses.dataclass(frozen=True)
class Session:
    """A browser's session: its id, when it was issued, and whether it logged in."""

    sid: str
    issued: int
    authed: bool


class Auth:
    """Signs and checks the cookies and tokens of one ``pgq-nb web`` process."""

    def __init__(self, config: WebConfig, *, now: float | None = None) -> None:
        self.config = config
        token = config.token
        self._key = (
            secrets.token_bytes(32)
            if token is None
            else hmac.new(token.encode(), b"pgq_nb web session key", hashlib.sha256).digest()
        )
        self._token_digest = None if token is None else hashlib.sha256(token.encode()).digest()
        #: sessions logged out, by id, with when they were issued (kept until they expire)
        self._revoked: dict[str, int] = {}

    @property
    def login_required(self) -> bool:
        return self.config.token is not None

    # -- signing ----------------------------------------------------------------------------

    def sign(self, value: str) -> str:
        mac = hmac.new(self._key, value.encode(), hashlib.sha256).digest()
        return f"{value}.{_b64(mac)}"

    def unsign(self, signed: str | None) -> str | None:
        """The value of a signed string, or None when it was not signed by this key."""
        if not signed or len(signed) > 4096 or "." not in signed:
            return None
        value, _, mac = signed.rpartition(".")
        expected = self.sign(value).rpartition(".")[2]
        return value if hmac.compare_digest(mac.encode(), expected.encode()) else None

    # -- sessions ---------------------------------------------------------------------------

    def new_session(self, *, authed: bool) -> Session:
        return Session(sid=_b64(secrets.token_bytes(18)), issued=int(time.time()), authed=authed)

    def cookie(self, session: Session) -> str:
        return self.sign(f"v1:{session.sid}:{session.issued}:{int(session.authed)}")

    def session(self, cookies: Mapping[str, str]) -> Session | None:
        """The session of a request's cookies; None if missing, forged, expired or from
        another key (another secret, or a restart without one)."""
        value = self.unsign(cookies.get(SESSION_COOKIE))
        if value is None:
            return None
        parts = value.split(":")
        if len(parts) != 4 or parts[0] != "v1" or parts[3] not in ("0", "1"):
            return None
        try:
            issued = int(parts[2])
        except ValueError:
            return None
        if not 0 <= time.time() - issued <= SESSION_MAX_AGE_S or parts[1] in self._revoked:
            return None
        authed = parts[3] == "1" or not self.login_required
        return Session(sid=parts[1], issued=issued, authed=authed)

    def revoke(self, session: Session) -> None:
        """Ends ``session`` in this process (a logout): its cookie opens nothing any more.
        Revocations are kept until the session would have expired anyway."""
        now = time.time()
        for sid, issued in list(self._revoked.items()):
            if now - issued > SESSION_MAX_AGE_S:
                del self._revoked[sid]
        self._revoked[session.sid] = session.issued

    # -- the secret -------------------------------------------------------------------------

    def token_matches(self, candidate: str | None) -> bool:
        """Constant-time: whether ``candidate`` is the secret (False when there is none)."""
        if self._token_digest is None or candidate is None:
            return False
        digest = hashlib.sha256(candidate.strip().encode("utf-8", "replace")).digest()
        return hmac.compare_digest(digest, self._token_digest)

    def bearer(self, authorization: str | None) -> bool | None:
        """Whether an ``Authorization: Bearer`` header carries the secret; None without one,
        or without a secret (another scheme, such as a reverse proxy's Basic login, is not
        ours to judge)."""
        if authorization is None or self._token_digest is None:
            return None
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self.token_matches(credentials)

    # -- CSRF -------------------------------------------------------------------------------

    def csrf_token(self, session: Session) -> str:
        mac = hmac.new(self._key, f"csrf:{session.sid}".encode(), hashlib.sha256).digest()
        return _b64(mac)

    def csrf_ok(self, session: Session | None, submitted: str | None) -> bool:
        if session is None or not submitted:
            return False
        return hmac.compare_digest(submitted.encode(), self.csrf_token(session).encode())


def host_allowed(config: WebConfig, host_header: str | None) -> bool:
    """Without a secret, only requests that name a loopback host are served: a web page
    elsewhere cannot reach the dashboard through a DNS name that points at 127.0.0.1 (DNS
    rebinding). With a secret, any Host is fine (the cookie and token protect it)."""
    if config.token is not None:
        return True
    if not host_header:
        return False
    host = urlsplit(f"//{host_header}").hostname
    return host is not None and is_loopback(host)


def local_path(target: str | None) -> str:
    """``target`` if it is a path on this site ("/failures?limit=5"), else "/": never another
    site (``//evil.example``, ``/\\evil.example``, which browsers read as ``//``), so a link
    to the login cannot send the browser elsewhere after it."""
    if (
        not target
        or not target.startswith("/")
        or target[1:2] in ("/", "\\")
        or "\\" in target
        or any(ord(c) < 32 or ord(c) == 127 for c in target)
    ):
        return "/"
    return target


def same_origin(origin: str | None, host_header: str | None) -> bool:
    """Whether a browser's ``Origin`` header (when it sent one) names this site's host and
    port. The scheme is not compared: behind a proxy that ends TLS, the browser's https is
    plain http here."""
    if origin is None:
        return True
    if not host_header:
        return False
    return urlsplit(origin).netloc.lower() == host_header.lower()
