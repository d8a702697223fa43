"""Who is asking and what they may do: a signed-in dashboard user (session cookie) or an API
key (``Authorization: Bearer``), each a :class:`Principal` with scopes.

Routes state what they need with the dependencies below: :data:`ReadDep` / :data:`ManageDep`
for the management API (401 when anonymous, 403 when the scope is missing),
:data:`DashboardUserDep` for dashboard pages (an anonymous browser is sent to ``/login``),
and :data:`CsrfDep` on every form POST of the dashboard. A request with
``Authorization: Bearer`` is authenticated by that key alone; otherwise by the session
cookie, and then a POST, PUT, PATCH or DELETE must carry the session's CSRF token: every
dependency here checks it as soon as it finds the session (:func:`principal`), so a route
protected by any of them cannot forget it. Which scopes a key's scope implies:
:data:`GRANTS`."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from winback.accounts import Session
from winback.store.apikeys import GRANTS, Scope
from winback.web.deps import bearer_key, missing_scope, verified_key
from winback.web.sessions import SESSION_COOKIE, SessionRing, SessionSigner

__all__ = [
    "GRANTS",
    "CsrfDep",
    "DashboardUserDep",
    "LoginRequired",
    "ManageDep",
    "Principal",
    "ReadDep",
    "Scope",
    "csrf_protect",
    "csrf_token",
    "dashboard_user",
    "principal",
    "require",
    "session_user",
]

#: The methods that change something: a session-authenticated request with one of them must
#: carry the session's CSRF token.
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Where the CSRF token may come from: this header (htmx, scripts) or this form field.
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


@dataclass(frozen=True)
class Principal:
    """The user or API key behind a request."""

    kind: Literal["user", "key"]
    name: str
    scopes: frozenset[Scope]

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes


class LoginRequired(Exception):
    """An anonymous browser asked for a dashboard page: it is sent to the login form."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url

    def location(self) -> str:
        return "/login?next=" + quote(self.next_url, safe="/")


def signer(request: Request) -> SessionSigner | None:
    """The app's cookie signer; None when the workspace has no ``secret_key`` (then nobody
    can sign in)."""
    found: SessionSigner | None = request.app.state.session_signer
    return found


async def current_session(request: Request) -> Session | None:
    """The open session of the request's cookie, if any (looked up once per request)."""
    if hasattr(request.state, "session"):
        cached: Session | None = request.state.session
        return cached
    session: Session | None = None
    token: str | None = None
    sign = signer(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    if sign is not None and cookie:
        token = sign.token(cookie)
        if token is not None:
            ring: SessionRing = request.app.state.sessions
            known, session = ring.cached(token)
            if not known:
                session = await run_in_threadpool(ring.lookup, token)
    request.state.session = session
    request.state.session_token = token if session is not None else None
    return session


async def session_user(request: Request) -> Principal | None:
    """The user signed in with the request's session cookie, if any. A signed-in user has
    every scope."""
    session = await current_session(request)
    if session is None:
        return None
    return Principal("user", session.user, frozenset(Scope))


async def key_principal(request: Request) -> Principal | None:
    """The API key of ``Authorization: Bearer <key>`` (401 when it is given and wrong)."""
    key = bearer_key(request)
    if not key:
        return None
    found = await verified_key(request, key)
    return Principal("key", found.name, found.scopes)


async def principal(request: Request) -> Principal | None:
    """The bearer key's principal when the request sends ``Authorization: Bearer``, else
    the session's user, else None (anonymous). A session-authenticated request that changes
    something must carry the session's CSRF token (403 otherwise); a key-authenticated one
    needs none (a browser never adds the header on its own)."""
    if bearer_key(request):
        return await key_principal(request)
    who = await session_user(request)
    if who is not None:
        await csrf_protect(request)
    return who


def require(scope: Scope) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency answering the principal allowed ``scope``: 401 when anonymous, 403 when
    the principal lacks it."""

    async def dependency(request: Request) -> Principal:
        who = await signed_in(request)
        if not who.allows(scope):
            raise missing_scope(scope)
        return who

    return dependency


async def signed_in(request: Request) -> Principal:
    """Any principal, whatever its scopes: a signed-in user or a valid API key (401 when
    anonymous)."""
    who = await principal(request)
    if who is None:
        raise HTTPException(
            status_code=401,
            detail="sign in or send an API key (Authorization: Bearer <key>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return who


ReadDep = Annotated[Principal, Depends(require(Scope.READ))]
ManageDep = Annotated[Principal, Depends(require(Scope.MANAGE))]


async def dashboard_user(request: Request) -> Principal:
    """The principal of a dashboard page: a signed-in user, or an API key with the read
    scope (the manage scope for a POST, PUT, PATCH or DELETE: a page's action changes
    something). An anonymous request is sent to ``/login`` (see :class:`LoginRequired`)."""
    who = await principal(request)
    if who is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target)
    needed = Scope.MANAGE if request.method in UNSAFE_METHODS else Scope.READ
    if not who.allows(needed):
        raise missing_scope(needed)
    return who


DashboardUserDep = Annotated[Principal, Depends(dashboard_user)]


def csrf_token(request: Request) -> str:
    """The CSRF token of the request's session, for the hidden ``csrf_token`` field of a
    form and the ``X-CSRF-Token`` header of htmx requests ("" without a session: a request
    authenticated by an API key needs none). Valid once the request's principal is known
    (the page's dependencies have run)."""
    token: str | None = getattr(request.state, "session_token", None)
    sign = signer(request)
    if token is None or sign is None:
        return ""
    return sign.csrf(token)


async def _sent_csrf(request: Request) -> str:
    sent = request.headers.get(CSRF_HEADER)
    if sent is not None:
        return sent
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in _FORM_TYPES:
        value = (await request.form()).get(CSRF_FIELD)
        return value if isinstance(value, str) else ""
    return ""


async def csrf_protect(request: Request) -> None:
    """Refuse (403) a POST, PUT, PATCH or DELETE authenticated by the session cookie that
    does not carry the session's CSRF token (form field ``csrf_token`` or header
    ``X-CSRF-Token``). Requests with ``Authorization: Bearer`` and anonymous ones pass
    here (the route's own dependency decides about them)."""
    if request.method not in UNSAFE_METHODS or bearer_key(request):
        return
    if getattr(request.state, "csrf_checked", False):
        return
    if await current_session(request) is None:
        return
    expected = csrf_token(request)
    sent = await _sent_csrf(request)
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise HTTPException(
            status_code=403,
            detail="missing or wrong CSRF token: reload the page and try again",
        )
    request.state.csrf_checked = True


CsrfDep = Annotated[None, Depends(csrf_protect)]
