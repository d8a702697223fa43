"""Request body size limits: ``413 Content Too Large`` before a large body is read.

Every request with a body is held to ``http_max_body_bytes`` (raw provider reports, which
carry the original message, to ``http_max_report_bytes``). A declared ``Content-Length``
over the limit is answered at once; otherwise the body is counted as it streams in
(chunked uploads declare no length), and the request is cut off with a 413 at the first
byte past the limit: nothing is parsed and nothing is written."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The 413 answer, as documented in the OpenAPI schema of every write route.
TOO_LARGE_RESPONSE: dict[str, Any] = {
    "description": "The request body is larger than the limit (`http_max_body_bytes`; raw "
    "reports: `http_max_report_bytes`): nothing was read or written.",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"detail": {"type": "string"}},
                "required": ["detail"],
            }
        }
    },
}
#: Paths held to the larger limit of raw report emails.
REPORT_PATHS = ("/api/v1/feedback-reports/raw",)


class BodyTooLarge(HTTPException):
    """The body streamed past the limit (an HTTP error, so that the framework's body
    parsing passes it through as the 413 it is)."""

    def __init__(self, limit: int, setting: str) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes ({setting})")


class BodyLimitMiddleware:
    """Answer 413 to a request whose body is larger than ``limit_for(path)`` bytes."""

    def __init__(self, app: ASGIApp, *, limit_for: Callable[[str], tuple[int, str]]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.limit_for(scope.get("path", ""))
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _too_large(send, BodyTooLarge(limit, setting))
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit, setting)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as exc:
            if started:  # too late for an answer: the connection is dropped
                raise
            await _too_large(send, exc)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _too_large(send: Send, exc: BodyTooLarge) -> None:
    body = json.dumps({"detail": exc.detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def limits(body_bytes: int, report_bytes: int) -> Callable[[str], tuple[int, str]]:
    """The limit of each path and the setting that sets it: ``report_bytes`` for raw
    reports, else ``body_bytes``."""

    def limit_for(path: str) -> tuple[int, str]:
        if path in REPORT_PATHS:
            return report_bytes, "http_max_report_bytes"
        return body_bytes, "http_max_body_bytes"

    return limit_for
