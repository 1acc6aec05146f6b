"""Who may see the ops page: an admin bearer key, or a browser session from the login form.

- ``GET /admin/login``: the form (browsers: ``Accept: text/html``). It sets a short-lived
  login cookie holding a random nonce that the form repeats in a hidden field.
- ``POST /admin/login``: form fields ``key`` and ``csrf``. The nonce must match the login
  cookie and the key must be an admin key; then a session starts and the browser gets
  ``costroute_ops=<random token>`` (never the key) and a 303 to ``/admin``.
- ``POST /admin/logout``: ends the session (field ``csrf`` = the session's own token).

Cookies are ``HttpOnly; Secure; SameSite=Strict; Path=/admin``. SameSite=Strict keeps
them off every cross-site request, and each POST form also carries a token the server
checks, so another site can neither read the page nor act through it (CSRF). Chromium
(checked with 156) treats ``http://127.0.0.1`` and ``http://localhost`` as secure
contexts, so ``Secure`` cookies work there over plain HTTP; on any other host the page
must be served over HTTPS (or behind a TLS-terminating proxy) or the browser drops them.

Sessions live in the store (``Sessions``, table ``ops_sessions``), so any replica serves
any signed-in browser and a restart logs nobody out. Only a sha256 of each session token
is kept, with the key's name (never the key); the key is looked up in the configuration
at each request, so removing or demoting it ends its sessions.

Without an ``Authorization`` header and a session, an API client (no ``text/html`` in
``Accept``) gets the OpenAI error envelope (401, or 403 for a non-admin key), like every
other ``/admin`` route; a browser is sent to the login form instead.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from html import escape
from importlib import resources
from string import Template
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from proxy.auth import Authenticator, require_admin
from proxy.context import Caller, Services
from proxy.errors import BadRequest, Forbidden, PayloadTooLarge, ProxyError, Unauthorized, render
from proxy.store import leases as store
from proxy.store.db import Database

log = logging.getLogger(__name__)

SESSION_COOKIE = "costroute_ops"
LOGIN_COOKIE = "costroute_login"
COOKIE_PATH = "/admin"
SESSION_TTL_S = 8 * 3600
LOGIN_TTL_S = 15 * 60
MAX_SESSIONS = 1024
MAX_FORM_BYTES = 8 * 1024
_HEADERS = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


@dataclass(frozen=True, slots=True)
class Session:
    caller: Caller
    csrf: str
    expires_ms: int


class Sessions:
    """Server-side sessions in the store, by sha256(token); the oldest go first beyond
    ``limit``, and expired ones are pruned as new ones start."""

    def __init__(self, db: Database, ttl_s: int = SESSION_TTL_S, limit: int = MAX_SESSIONS):
        self._db = db
        self._ttl_ms = ttl_s * 1000
        self._limit = limit

    async def create(self, caller: Caller, now_ms: int) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        session = Session(caller, secrets.token_urlsafe(32), now_ms + self._ttl_ms)
        await store.prune_sessions(self._db, now_ms=now_ms)
        await store.add_session(
            self._db, _digest(token), key_name=caller.name, csrf=session.csrf,
            expires_ms=session.expires_ms, limit=self._limit,
        )  # fmt: skip
        return token, session

    async def get(self, token: str | None, now_ms: int, auth: Authenticator) -> Session | None:
        if not token:
            return None
        found = await store.get_session(self._db, _digest(token), now_ms=now_ms)
        if found is None:
            return None
        key_name, csrf, expires_ms = found
        caller = auth.by_name(key_name)
        if caller is None:
            return None
        return Session(caller, csrf, expires_ms)

    async def end(self, token: str | None) -> None:
        if token:
            await store.end_session(self._db, _digest(token))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def sessions_of(services: Services) -> Sessions:
    sessions: Sessions = services.extras.setdefault("ops_sessions", Sessions(services.db))
    return sessions


def _now_ms(services: Services) -> int:
    return int(services.clock.now() * 1000)


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


@dataclass(frozen=True, slots=True)
class PageAuth:
    caller: Caller
    session: Session | None  # None: authenticated by header (or an open proxy)


async def authenticate_page(request: Request, services: Services) -> PageAuth:
    """Bearer header if sent (or no keys configured), else the session cookie; then
    admin only. Raises ``Unauthorized`` / ``Forbidden``."""
    auth = services.extras["auth"]
    header = request.headers.get("authorization")
    if header is not None or auth.open:
        caller: Caller = auth.authenticate(header)
        session = None
    else:
        session = await sessions_of(services).get(
            request.cookies.get(SESSION_COOKIE), _now_ms(services), auth
        )
        if session is None:
            raise Unauthorized(
                "Log in at /admin/login, or send 'Authorization: Bearer <admin key>'."
            )
        caller = session.caller
    require_admin(caller)
    return PageAuth(caller, session)


# --- HTML --------------------------------------------------------------------------------


@functools.cache
def template(name: str) -> Template:
    return Template(resources.files("proxy").joinpath("data", name).read_text("utf-8"))


def html_page(title: str, body: str, *, status: int = 200) -> HTMLResponse:
    """``body`` must already be escaped. Scripts are forbidden outright; the one inline
    style block carries a per-response nonce."""
    nonce = secrets.token_urlsafe(16)
    page = template("ops_base.html").substitute(title=title, body=body, nonce=nonce)
    csp = (
        f"default-src 'none'; style-src 'nonce-{nonce}'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    return HTMLResponse(
        page, status_code=status, headers={**_HEADERS, "content-security-policy": csp}
    )


def _set_cookie(response: Response, name: str, value: str, max_age: int, path: str) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path=path, secure=True, httponly=True, samesite="strict"
    )


def _login_form(message: str = "", *, status: int = 200) -> HTMLResponse:
    nonce = secrets.token_urlsafe(32)
    error = f'<p class="error" role="alert">{escape(message)}</p>' if message else ""
    body = template("ops_login.html").substitute(csrf=nonce, error=error)
    response = html_page("costroute ops: log in", body, status=status)
    _set_cookie(response, LOGIN_COOKIE, nonce, LOGIN_TTL_S, f"{COOKIE_PATH}/login")
    return response


def _redirect(to: str) -> RedirectResponse:
    return RedirectResponse(to, status_code=303, headers=_HEADERS)


async def read_form(request: Request) -> dict[str, str]:
    """A small urlencoded form (first value of each field); the size is capped."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise PayloadTooLarge(f"Forms are limited to {MAX_FORM_BYTES} bytes.")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())


# --- handlers ----------------------------------------------------------------------------


async def login_form(request: Request, services: Services) -> Response:
    """The login form for browsers; a caller already authenticated goes to the page."""
    auth = services.extras["auth"]
    if request.headers.get("authorization") is not None or auth.open:
        await authenticate_page(request, services)
        return _redirect(COOKIE_PATH)
    token = request.cookies.get(SESSION_COOKIE)
    if await sessions_of(services).get(token, _now_ms(services), auth) is not None:
        return _redirect(COOKIE_PATH)
    if not wants_html(request):
        raise Unauthorized(
            "The login form is for browsers; API clients send 'Authorization: Bearer <key>'."
        )
    return _login_form()


async def login(request: Request, services: Services) -> Response:
    """Check the form's admin key and token, then start a session."""
    if request.headers.get("authorization") is not None:
        await authenticate_page(request, services)
        raise BadRequest("Already authenticated by the Authorization header; no session needed.")
    html = wants_html(request)
    form = await read_form(request)
    key = form.get("key", "").strip()
    if not key:
        if html:
            return _login_form("Enter an admin key.", status=401)
        raise Unauthorized("No key given: send the form field 'key'.")
    if not same(form.get("csrf"), request.cookies.get(LOGIN_COOKIE)):
        if html:
            return _login_form("The form expired. Please try again.", status=403)
        raise Forbidden("The login form token is missing or stale.", code="csrf_failed")
    try:
        caller: Caller = services.extras["auth"].authenticate(f"Bearer {key}")
        require_admin(caller)
    except ProxyError as exc:
        log.warning("ops login refused: %s", exc.code)
        if html:
            words = "That key is not an admin key." if exc.status == 403 else "Incorrect key."
            return _login_form(words, status=exc.status)
        raise
    token, _ = await sessions_of(services).create(caller, _now_ms(services))
    log.info("ops login: key %s", caller.name)
    response = _redirect(COOKIE_PATH)
    _set_cookie(response, SESSION_COOKIE, token, SESSION_TTL_S, COOKIE_PATH)
    response.delete_cookie(LOGIN_COOKIE, path=f"{COOKIE_PATH}/login")
    return response


async def logout(request: Request, services: Services) -> Response:
    """End the ops page session (form field ``csrf``: the session's token)."""
    page = await authenticate_page(request, services)
    if page.session is None:
        raise BadRequest("Nothing to log out: this request has no session cookie.")
    form = await read_form(request)
    if not same(form.get("csrf"), page.session.csrf):
        raise Forbidden("The logout form token is missing or stale.", code="csrf_failed")
    await sessions_of(services).end(request.cookies.get(SESSION_COOKIE))
    response = _redirect(f"{COOKIE_PATH}/login")
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response


PageHandler = Callable[[Request, Services], Awaitable[Response]]


def page_endpoint(handler: PageHandler) -> Callable[[Request], Awaitable[Response]]:
    """Errors as HTML for browsers (a 401 sends them to the login form), as the OpenAI
    envelope for everyone else."""

    async def endpoint(request: Request) -> Response:
        services: Services = request.app.state.services
        try:
            return await handler(request, services)
        except ProxyError as exc:
            return _error(request, exc)
        except Exception:
            log.exception("unexpected error on %s %s", request.method, request.url.path)
            return _error(request, ProxyError("The ops page hit an unexpected error."))

    return endpoint


def _error(request: Request, exc: ProxyError) -> Response:
    if not wants_html(request):
        return render(exc)
    if isinstance(exc, Unauthorized):
        return _redirect(f"{COOKIE_PATH}/login")
    link = '<a href="/admin/login">Log in</a>' if exc.status == 403 else '<a href="/admin">Back</a>'
    body = f'<main><p class="error" role="alert">{escape(exc.message)}</p><p>{link}</p></main>'

    return html_page("costroute ops: error", body, status=exc.status)
