"""The event API: ``POST /api/v1/events`` (one) and ``POST /api/v1/events/batch`` (up to
1,000), authenticated by an API key (``Authorization: Bearer <key>``).

The handlers run in the event loop: they read the body once with the models' own JSON
reader (:func:`winback.delivery.event_intake.parse`), hand it to the workspace's event
intake, and answer ``202`` once it is in the event journal (see
:mod:`winback.delivery.event_intake`).

Requests are served by :data:`fast_routes`, plain Starlette routes placed first in the
app's routing: the same authentication, body reading and answers as the FastAPI
operations of :data:`router`, without the dependency machinery and route matching that
cost more than the rest of a single event. The operations of :data:`router` document the
API (OpenAPI) and answer the same."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.requests import ClientDisconnect
from starlette.routing import Route

from winback.delivery.event_intake import MAX_BATCH, EventsAccepted
from winback.delivery.inbound import EventIn
from winback.web.deps import (
    UNAUTHORIZED,
    ApiKeyDep,
    AsyncWorkspaceDep,
    ErrorPublic,
    bearer_key,
    key_name,
)
from winback.web.errors import BUSY_RESPONSE
from winback.workspace import Workspace

router = APIRouter(prefix="/api/v1", tags=["events"])

_INVALID: dict[str, Any] = {
    "description": "The body is not valid: each error with its place (``loc``) and why.",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "detail": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "type": {"type": "string"},
                                "loc": {
                                    "type": "array",
                                    "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                                },
                                "msg": {"type": "string"},
                            },
                        },
                    }
                },
                "required": ["detail"],
            }
        }
    },
}

_RESPONSES: dict[int | str, dict[str, object]] = {
    **UNAUTHORIZED,
    400: {"model": ErrorPublic, "description": "The events cannot be recorded."},
    422: _INVALID,
    503: BUSY_RESPONSE,
}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    """The request body as documented (the handlers read it themselves)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_EVENT_SCHEMA = EventIn.model_json_schema()
_BATCH_SCHEMA = {
    "title": "EventBatchIn",
    "type": "object",
    "properties": {
        "events": {
            "type": "array",
            "items": _EVENT_SCHEMA,
            "minItems": 1,
            "maxItems": MAX_BATCH,
        }
    },
    "required": ["events"],
}


async def _accept(request: Request, workspace: Workspace, *, batch: bool) -> Response:
    try:
        body = await request.body()
    except ClientDisconnect:  # the client went away mid-body: no one to answer
        return Response(status_code=400)
    try:
        future = workspace.delivery.event_intake.accept(body, batch=batch)
    except ValidationError as error:
        raise RequestValidationError(
            [
                {"type": e["type"], "loc": ("body", *e["loc"]), "msg": e["msg"]}
                for e in error.errors(include_url=False, include_input=False)
            ]
        ) from None
    accepted = future.result() if future.done() else await asyncio.wrap_future(future)
    return Response(b'{"accepted":%d}' % accepted, status_code=202, media_type="application/json")


async def _fast_event(request: Request) -> Response:
    await key_name(request, bearer_key(request))
    return await _accept(request, request.app.state.workspace, batch=False)


async def _fast_batch(request: Request) -> Response:
    await key_name(request, bearer_key(request))
    return await _accept(request, request.app.state.workspace, batch=True)


#: The routes that serve the event API (see the module's docstring); first in the app.
fast_routes = [
    Route("/api/v1/events", _fast_event, methods=["POST"], include_in_schema=False),
    Route("/api/v1/events/batch", _fast_batch, methods=["POST"], include_in_schema=False),
]


@router.post(
    "/events",
    status_code=202,
    response_model=EventsAccepted,
    responses=_RESPONSES,
    openapi_extra=_body(_EVENT_SCHEMA),
)
async def post_event(request: Request, workspace: AsyncWorkspaceDep, _key: ApiKeyDep) -> Response:
    """Accept one event (or purchase: ``type = "purchase"`` with order_id, amount, currency,
    items, coupon in ``properties``). Answered ``202`` once it is in the event journal; it
    is applied to the store within moments, once (a repeated event_id is recorded once)."""
    return await _accept(request, workspace, batch=False)


@router.post(
    "/events/batch",
    status_code=202,
    response_model=EventsAccepted,
    responses=_RESPONSES,
    openapi_extra=_body(_BATCH_SCHEMA),
)
async def post_events(request: Request, workspace: AsyncWorkspaceDep, _key: ApiKeyDep) -> Response:
    """Accept up to 1,000 events, all or none. Answered ``202`` once they are in the event
    journal; they are applied to the store within moments, each once."""
    return await _accept(request, workspace, batch=True)
