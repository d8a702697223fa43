"""The hosted feedback / NPS page of the feedback flow: ``GET /f/{token}`` shows it (and
counts as a click on the link), ``POST /f/{token}`` records ``feedback_submitted``."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from winback.web.deps import WorkspaceDep, not_found, page

router = APIRouter(tags=["feedback"], include_in_schema=False)


@router.get("/f/{token}")
def feedback_page(token: str, request: Request, workspace: WorkspaceDep) -> Response:
    ref = workspace.delivery.tracker.feedback_page(token, request.headers.get("user-agent", ""))
    if ref is None:
        return not_found()
    raw = request.query_params.get("score", "")
    score = int(raw) if raw.isdigit() and 0 <= int(raw) <= 10 else None
    return page(
        request,
        "feedback.html",
        token=token,
        score=score,
        name=ref.first_name,
        error=None,
        done=False,
    )


@router.post("/f/{token}")
async def submit_feedback(token: str, request: Request, workspace: WorkspaceDep) -> Response:
    if await run_in_threadpool(workspace.delivery.tracker.resolve, "f", token) is None:
        return not_found()
    form = await request.form()
    raw = str(form.get("score", ""))
    comment = str(form.get("comment", ""))
    if not (raw.isdigit() and 0 <= int(raw) <= 10):
        return page(
            request,
            "feedback.html",
            status_code=400,
            token=token,
            score=None,
            name=None,
            error="Please choose a score from 0 to 10.",
            done=False,
        )
    await run_in_threadpool(workspace.delivery.tracker.submit_feedback, token, int(raw), comment)
    return page(
        request, "feedback.html", token=token, score=int(raw), name=None, error=None, done=True
    )
