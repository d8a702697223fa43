"""The event API: ``POST /api/v1/events`` (one) and ``POST /api/v1/events/batch`` (up to
1,000), authenticated by an API key (``Authorization: Bearer <key>``).

The handlers run in the event loop: they hand the validated events to the workspace's event
intake (group commit) and await the commit of the transaction that wrote them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from winback.delivery.inbound import EventIn, IngestResult
from winback.web.deps import UNAUTHORIZED, ApiKeyDep, AsyncWorkspaceDep, ErrorPublic
from winback.web.errors import BUSY_RESPONSE
from winback.workspace import Workspace

router = APIRouter(prefix="/api/v1", tags=["events"])


class EventBatchIn(BaseModel):
    events: list[EventIn] = Field(min_length=1, max_length=1000)


_RESPONSES: dict[int | str, dict[str, object]] = {
    **UNAUTHORIZED,
    400: {"model": ErrorPublic, "description": "The event could not be recorded."},
    503: BUSY_RESPONSE,
}


async def _ingest(workspace: Workspace, items: Sequence[EventIn]) -> Response:
    """The counts, encoded here: the route's ``response_model`` documents them, and a
    ready response skips FastAPI's validation and serialisation of the return value."""
    future = workspace.delivery.event_intake.submit(items)
    result = await asyncio.wrap_future(future)
    body = b'{"accepted":%d,"new":%d,"duplicates":%d}' % (
        result.accepted,
        result.new,
        result.duplicates,
    )
    return Response(body, media_type="application/json")


@router.post("/events", response_model=IngestResult, responses=_RESPONSES)
async def post_event(event: EventIn, workspace: AsyncWorkspaceDep, _key: ApiKeyDep) -> Response:
    """Record one event (or purchase: ``type = "purchase"`` with order_id, amount, currency,
    items, coupon in ``properties``). Answered once it is committed."""
    return await _ingest(workspace, [event])


@router.post("/events/batch", response_model=IngestResult, responses=_RESPONSES)
async def post_events(
    batch: EventBatchIn, workspace: AsyncWorkspaceDep, _key: ApiKeyDep
) -> Response:
    """Record up to 1,000 events in one transaction. Answered once they are committed."""
    return await _ingest(workspace, batch.events)
