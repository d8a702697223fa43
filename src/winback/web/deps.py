"""What route handlers share: the workspace, page rendering, API-key authentication."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from winback.store.apikeys import Scope, VerifiedKey
from winback.web.apikeys import KeyRing
from winback.workspace import Workspace

_bearer = HTTPBearer(auto_error=False, description="An API key from `winback api-keys create`.")


def get_workspace(request: Request) -> Workspace:
    workspace: Workspace = request.app.state.workspace
    return workspace


WorkspaceDep = Annotated[Workspace, Depends(get_workspace)]


async def _workspace_in_loop(request: Request) -> Workspace:
    return get_workspace(request)


#: The workspace for ``async def`` routes (no hop to the thread pool).
AsyncWorkspaceDep = Annotated[Workspace, Depends(_workspace_in_loop)]


class ErrorPublic(BaseModel):
    """The body of an API error: what went wrong, for the caller."""

    detail: str


#: The answer every API-key protected route documents.
UNAUTHORIZED: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorPublic, "description": "Missing or invalid API key."},
}


def not_found() -> Response:
    """The one answer to every bad token: no detail about why."""
    return Response("Not found\n", status_code=404, media_type="text/plain")


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    workspace = get_workspace(request)
    context.setdefault(
        "shop", {"name": workspace.settings.shop_name, "url": workspace.settings.shop_url}
    )
    response: Response = request.app.state.templates.TemplateResponse(
        request, template, context, status_code=status_code
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The name of the API key in ``Authorization: Bearer <key>``, which must have the
    ``events`` scope (the event API and provider reports); 401 otherwise, 403 for a key of
    another scope. A key verified in the last few seconds is answered from memory, in the
    event loop; otherwise the store is read in the thread pool. Nothing is written."""
    return await key_name(request, credentials.credentials if credentials is not None else "")


def bearer_key(request: Request) -> str:
    """The key of ``Authorization: Bearer <key>`` as :data:`_bearer` reads it ("" when the
    header is missing or of another scheme)."""
    authorization = request.headers.get("authorization")
    if not authorization:
        return ""
    scheme, _, key = authorization.partition(" ")
    return key.strip() if scheme.lower() == "bearer" else ""


async def verified_key(request: Request, key: str) -> VerifiedKey:
    """The API key ``key`` with its scope; 401 when it is missing, unknown or revoked."""
    found: VerifiedKey | None = None
    if key:
        keyring: KeyRing = request.app.state.keyring
        found = keyring.cached_key(key)
        if found is None:
            found = await run_in_threadpool(keyring.verify_key, key)
    if found is None:
        raise HTTPException(
            status_code=401,
            detail="missing or invalid API key (send Authorization: Bearer <key>; create one "
            "with `winback api-keys create NAME`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return found


def missing_scope(scope: Scope) -> HTTPException:
    """The 403 of a key without ``scope``."""
    return HTTPException(
        status_code=403,
        detail=f"this API key lacks the {scope.value!r} scope (see `winback api-keys create "
        "--scope`)",
    )


async def key_name(request: Request, key: str) -> str:
    """The name of the API key ``key`` with the ``events`` scope (see :func:`api_key`):
    401 when it is not a valid key, 403 when its scope is another."""
    found = await verified_key(request, key)
    if Scope.EVENTS not in found.scopes:
        raise missing_scope(Scope.EVENTS)
    return found.name


ApiKeyDep = Annotated[str, Depends(api_key)]
