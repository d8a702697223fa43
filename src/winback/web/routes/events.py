"""The event API: ``POST /api/v1/events`` (one) and ``POST /api/v1/events/batch`` (up to
1,000), authenticated by an API key (``Authorization: Bearer <key>``)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from winback.delivery.inbound import EventIn, IngestResult
from winback.web.deps import UNAUTHORIZED, ApiKeyDep, ErrorPublic, WorkspaceDep

router = APIRouter(prefix="/api/v1", tags=["events"])


class EventBatchIn(BaseModel):
    events: list[EventIn] = Field(min_length=1, max_length=1000)


_RESPONSES: dict[int | str, dict[str, object]] = {
    **UNAUTHORIZED,
    400: {"model": ErrorPublic, "description": "The event could not be recorded."},
}


@router.post("/events", response_model=IngestResult, responses=_RESPONSES)
def post_event(event: EventIn, workspace: WorkspaceDep, _key: ApiKeyDep) -> IngestResult:
    """Record one event (or purchase: ``type = "purchase"`` with order_id, amount, currency,
    items, coupon in ``properties``)."""
    return workspace.delivery.ingest([event])


@router.post("/events/batch", response_model=IngestResult, responses=_RESPONSES)
def post_events(batch: EventBatchIn, workspace: WorkspaceDep, _key: ApiKeyDep) -> IngestResult:
    """Record up to 1,000 events in one transaction."""
    return workspace.delivery.ingest(batch.events)
