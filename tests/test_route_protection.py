"""Every route of the app refuses an anonymous request, and a key of the wrong scope, except
the short list of public routes below: a route added without protection fails here."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
from fastapi import FastAPI
from starlette.routing import Mount

from tests.web_support import new_api_key, running_app
from winback.store.apikeys import Scope
from winback.web.app import create_app
from winback.workspace import Workspace

#: The public routes, each with why it needs no sign-in.
PUBLIC: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "liveness probe for load balancers and `winback serve` checks",
    ("GET", "/o/{token}.gif"): "open pixel: the signed token is the credential",
    ("GET", "/c/{token}"): "click link: the signed token is the credential",
    ("GET", "/u/{token}"): "unsubscribe page: the signed token is the credential",
    ("POST", "/u/{token}"): "one-click unsubscribe (RFC 8058): the signed token",
    ("GET", "/f/{token}"): "feedback page: the signed token is the credential",
    ("POST", "/f/{token}"): "feedback answer: the signed token is the credential",
    ("POST", "/webhooks/shopify"): "verifies the shop's HMAC signature itself",
    ("POST", "/webhooks/woocommerce"): "verifies the shop's HMAC signature itself",
    ("GET", "/login"): "the sign-in form",
    ("POST", "/login"): "signing in (its own CSRF token, throttled)",
    ("POST", "/logout"): "signing out (the session's CSRF token when there is a session)",
}
#: Mounted folders open to everyone: the stylesheet, htmx, Swagger UI (no data).
PUBLIC_MOUNTS = {"/static"}
#: The event API and provider reports: the ``events`` scope, nothing else.
EVENTS_ROUTES = {
    ("POST", "/api/v1/events"),
    ("POST", "/api/v1/events/batch"),
    ("POST", "/api/v1/feedback-reports"),
    ("POST", "/api/v1/feedback-reports/raw"),
}
#: Open to any valid key or user, whatever its scope: the API's description.
ANY_PRINCIPAL = {("GET", "/openapi.json")}
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


def routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, path template) of every route the app answers, the included routers'
    routes flattened; mounts as ("MOUNT", path)."""
    try:
        from fastapi.routing import iter_route_contexts  # FastAPI keeps routers nested

        found = [(c.path, c.methods, c.original_route) for c in iter_route_contexts(app.routes)]
    except ImportError:
        found = [(r.path, getattr(r, "methods", None), r) for r in app.routes]  # type: ignore[attr-defined]
    for path, methods, route in found:
        assert path is not None
        if isinstance(route, Mount):
            yield "MOUNT", path
            continue
        for method in sorted(methods or ()):
            if method != "HEAD":
                yield method, path


def _url(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", path)


def _refused_anonymous(method: str, path: str, answer: httpx.Response) -> bool:
    if answer.status_code in (401, 403):
        return True
    if path.startswith("/api/"):
        return False  # an API answers 401, never a redirect
    return answer.status_code == 303 and answer.headers["location"].startswith("/login?next=")


def test_every_route_refuses_an_anonymous_request_and_a_key_of_the_wrong_scope(
    sqlite_workspace: Workspace,
) -> None:
    app = create_app(sqlite_workspace)
    found = list(routes(app))
    assert len(found) > 30 and ("GET", "/overview") in found  # the walk sees the routers
    events_key = new_api_key(sqlite_workspace, "shop", Scope.EVENTS)
    read_key = new_api_key(sqlite_workspace, "reader", Scope.READ)
    manage_key = new_api_key(sqlite_workspace, "admin", Scope.MANAGE)
    unprotected: list[str] = []
    wrong_scope: list[str] = []
    with running_app(app) as base, httpx.Client(base_url=base) as client:
        for method, path in found:
            if method == "MOUNT":
                assert path in PUBLIC_MOUNTS, f"mount {path} is not in PUBLIC_MOUNTS"
                continue
            if (method, path) in PUBLIC:
                continue
            url = _url(path)
            answer = client.request(method, url)
            if not _refused_anonymous(method, path, answer):
                unprotected.append(f"{method} {path}: {answer.status_code}")
            if (method, path) in ANY_PRINCIPAL:
                continue
            if (method, path) in EVENTS_ROUTES:
                refusing = [read_key, manage_key]
            else:
                refusing = [events_key] + ([read_key] if method in UNSAFE else [])
            for key in refusing:
                answer = client.request(method, url, headers={"Authorization": f"Bearer {key}"})
                if answer.status_code != 403:
                    wrong_scope.append(f"{method} {path} with {key[:8]}: {answer.status_code}")
    assert not unprotected, "routes answering an anonymous request:\n" + "\n".join(unprotected)
    assert not wrong_scope, "routes not refusing a key of another scope:\n" + "\n".join(wrong_scope)
    # The allowlist names only routes that exist (a stale entry would hide nothing, but lies).
    assert set(PUBLIC) <= set(found)
