"""Who is asking and what they may do: a signed-in dashboard user (session cookie) or an API
key (``Authorization: Bearer``), each a :class:`Principal` with scopes.

Routes state what they need with the dependencies below: :data:`ReadDep` / :data:`ManageDep`
for the management API (401 when anonymous, 403 when the scope is missing),
:data:`DashboardUserDep` for dashboard pages (an anonymous browser is sent to ``/login``),
and :data:`CsrfDep` on every form POST of the dashboard."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request

from winback.web.deps import bearer_key, key_name


class Scope(StrEnum):
    """What an API key may do. A signed-in user has every scope."""

    EVENTS = "events"  # the event API and provider reports
    READ = "read"  # read through the management API
    MANAGE = "manage"  # change through the management API (implies read)


#: What each scope grants, the scope itself included.
GRANTS: dict[Scope, frozenset[Scope]] = {
    Scope.EVENTS: frozenset({Scope.EVENTS}),
    Scope.READ: frozenset({Scope.READ}),
    Scope.MANAGE: frozenset({Scope.READ, Scope.MANAGE}),
}


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


async def session_user(request: Request) -> Principal | None:
    """The user signed in with the request's session cookie, if any."""
    return None


async def key_principal(request: Request) -> Principal | None:
    """The API key of ``Authorization: Bearer <key>`` (401 when it is given and wrong)."""
    key = bearer_key(request)
    if not key:
        return None
    name = await key_name(request, key)
    return Principal("key", name, frozenset(Scope))


async def principal(request: Request) -> Principal | None:
    """The session's user, else the bearer key's principal, else None (anonymous)."""
    return await session_user(request) or await key_principal(request)


def require(scope: Scope) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency answering the principal allowed ``scope``: 401 when anonymous, 403 when
    the principal lacks it."""

    async def dependency(request: Request) -> Principal:
        who = await principal(request)
        if who is None:
            raise HTTPException(
                status_code=401,
                detail="sign in or send an API key (Authorization: Bearer <key>)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not who.allows(scope):
            raise HTTPException(
                status_code=403, detail=f"this API key lacks the {scope.value!r} scope"
            )
        return who

    return dependency


ReadDep = Annotated[Principal, Depends(require(Scope.READ))]
ManageDep = Annotated[Principal, Depends(require(Scope.MANAGE))]


async def dashboard_user(request: Request) -> Principal:
    """The principal of a dashboard page: a signed-in user, or an API key with the read
    scope. An anonymous request is sent to ``/login`` (see :class:`LoginRequired`)."""
    who = await principal(request)
    if who is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target)
    if not who.allows(Scope.READ):
        raise HTTPException(status_code=403, detail="this API key lacks the 'read' scope")
    return who


DashboardUserDep = Annotated[Principal, Depends(dashboard_user)]


def csrf_token(request: Request) -> str:
    """The CSRF token of the request's session, for the hidden ``csrf_token`` field of a
    form and the ``X-CSRF-Token`` header of htmx requests."""
    return ""


async def csrf_protect(request: Request) -> None:
    """Refuse (403) a form POST of a signed-in user without the session's CSRF token."""


CsrfDep = Annotated[None, Depends(csrf_protect)]
