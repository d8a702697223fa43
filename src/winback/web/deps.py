"""What route handlers share: the workspace, page rendering, API-key authentication."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from winback.workspace import Workspace

_bearer = HTTPBearer(auto_error=False, description="An API key from `winback api-keys create`.")


def get_workspace(request: Request) -> Workspace:
    workspace: Workspace = request.app.state.workspace
    return workspace


WorkspaceDep = Annotated[Workspace, Depends(get_workspace)]


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


def api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The name of the API key in ``Authorization: Bearer <key>``; 401 otherwise."""
    key = credentials.credentials if credentials is not None else ""
    name = get_workspace(request).delivery.verify_api_key(key) if key else None
    if name is None:
        raise HTTPException(
            status_code=401,
            detail="missing or invalid API key (send Authorization: Bearer <key>; create one "
            "with `winback api-keys create NAME`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return name


ApiKeyDep = Annotated[str, Depends(api_key)]
