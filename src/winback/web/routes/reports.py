"""Provider reports: ``POST /api/v1/feedback-reports`` (the JSON form) and
``POST /api/v1/feedback-reports/raw`` (the report email itself: an ARF complaint or a DSN
bounce, as ``message/rfc822`` or any other content type), authenticated by an API key."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from winback.delivery.reports.parse import FeedbackIn
from winback.delivery.reports.record import ReportResult
from winback.web.deps import UNAUTHORIZED, ApiKeyDep, ErrorPublic, WorkspaceDep

router = APIRouter(prefix="/api/v1", tags=["feedback reports"])
MAX_RAW = 10 * 1024 * 1024


class FeedbackBatchIn(BaseModel):
    reports: list[FeedbackIn] = Field(min_length=1, max_length=1000)


_RESPONSES: dict[int | str, dict[str, object]] = {
    **UNAUTHORIZED,
    413: {"model": ErrorPublic, "description": "The report is larger than 10 MB."},
}


@router.post("/feedback-reports", response_model=ReportResult, responses=_RESPONSES)
def post_feedback(batch: FeedbackBatchIn, workspace: WorkspaceDep, _key: ApiKeyDep) -> ReportResult:
    """Record complaints and bounces already parsed by the sender (up to 1,000):
    ``{"reports": [{"type": "complaint"|"bounce", "email": ..., "message_id": ...,
    "status": "5.1.1", "occurred_at": ...}]}``. Idempotent."""
    return workspace.delivery.record_feedback(batch.reports)


@router.post(
    "/feedback-reports/raw",
    response_model=ReportResult,
    responses=_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "message/rfc822": {"schema": {"type": "string", "format": "binary"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
)
async def post_raw(request: Request, workspace: WorkspaceDep, _key: ApiKeyDep) -> ReportResult:
    """Record one report email (ARF feedback report or RFC 3464 DSN) sent as the request
    body. A report that cannot be parsed or matched is kept on the reject list and counted
    in ``rejected`` with the reason in ``errors``."""
    from fastapi import HTTPException

    raw = await request.body()
    if len(raw) > MAX_RAW:
        raise HTTPException(413, detail="the report is larger than 10 MB")
    result: ReportResult = await run_in_threadpool(
        workspace.delivery.record_report, raw, source="http"
    )
    return result
