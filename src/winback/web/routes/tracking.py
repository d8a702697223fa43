"""Open pixel and click redirect."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from winback.delivery.links.tracking import PIXEL_GIF
from winback.web.deps import WorkspaceDep, not_found

router = APIRouter(tags=["tracking"], include_in_schema=False)


@router.get("/o/{token}.gif")
def open_pixel(token: str, request: Request, workspace: WorkspaceDep) -> Response:
    if not workspace.delivery.tracker.open(token, request.headers.get("user-agent", "")):
        return not_found()
    return Response(
        PIXEL_GIF,
        media_type="image/gif",
        headers={"Cache-Control": "no-store, no-cache, must-revalidate, private"},
    )


@router.get("/c/{token}")
def click(token: str, request: Request, workspace: WorkspaceDep) -> Response:
    url = workspace.delivery.tracker.click(token, request.headers.get("user-agent", ""))
    if url is None:
        return not_found()
    return RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})
