"""Unsubscribe: ``POST /u/{token}`` is the RFC 8058 one-click target of the
List-Unsubscribe-Post header (and of the page's button); ``GET /u/{token}`` only shows a page
with a confirm button, so link scanners that fetch URLs never unsubscribe anyone."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from winback.web.deps import WorkspaceDep, not_found, page

router = APIRouter(tags=["unsubscribe"], include_in_schema=False)


def _mask(email: str | None) -> str:
    if not email or "@" not in email:
        return "your address"
    local, domain = email.split("@", 1)
    return f"{local[:2]}{'*' * max(1, len(local) - 2)}@{domain}"


@router.get("/u/{token}")
def unsubscribe_page(token: str, request: Request, workspace: WorkspaceDep) -> Response:
    ref = workspace.delivery.tracker.resolve("u", token)
    if ref is None:
        return not_found()
    return page(request, "unsubscribe.html", token=token, email=_mask(ref.email), done=False)


@router.post("/u/{token}")
async def unsubscribe(token: str, request: Request, workspace: WorkspaceDep) -> Response:
    form = await request.form()
    one_click = form.get("List-Unsubscribe") == "One-Click"
    # In a worker thread: the write may wait for the store (up to store_busy_timeout), and
    # the event loop must go on serving meanwhile.
    ref = await run_in_threadpool(
        workspace.delivery.tracker.unsubscribe, token, source="one-click" if one_click else "page"
    )
    if ref is None:
        return not_found()
    if one_click:
        return Response("Unsubscribed\n", media_type="text/plain")
    return page(request, "unsubscribe.html", token=token, email=_mask(ref.email), done=True)
