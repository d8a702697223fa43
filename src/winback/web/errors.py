"""How the service answers when a request cannot be served, and the request id.

- A store that stays busy past the bounded wait (:class:`~winback.store.busy.StoreBusy`,
  from anywhere) is ``503 Service Unavailable`` with ``Retry-After`` and the JSON body
  ``{"detail": ..., "retry_after": n}``: try again later, nothing was written.
- Any other unhandled exception is a bug: ``500`` with ``{"detail": "internal error",
  "request_id": ...}``, logged once (logger ``winback.web``, with the traceback) under the
  same request id.
- Every response carries ``X-Request-ID``: the caller's own (when it sent a sane one: up to
  128 letters, digits and ``._:-``), or one made here."""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from winback.store.busy import StoreBusy
from winback.web.limits import TOO_LARGE_RESPONSE

log = logging.getLogger("winback.web")

HEADER = "X-Request-ID"
_SANE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

#: The 503 answer, as documented in the OpenAPI schema of every write route.
BUSY_RESPONSE: dict[str, Any] = {
    "description": "The store is busy: nothing was written; try again after `Retry-After` seconds.",
    "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "detail": {"type": "string"},
                    "retry_after": {"type": "integer"},
                },
                "required": ["detail", "retry_after"],
            }
        }
    },
}


def request_id(request: Request) -> str:
    """The id of this request (as in its ``X-Request-ID`` answer)."""
    return str(request.scope.get("state", {}).get("request_id", ""))


def _request_ids() -> Iterator[str]:
    """Ids of 32 hex digits: 16 random to this process, then a counter (no system call
    per request, unique across processes and restarts as far as 64 random bits go)."""
    prefix = secrets.token_hex(8)
    for n in itertools.count():
        yield f"{prefix}{n:016x}"


class RequestIdMiddleware:
    """Give each request an id (echoed as ``X-Request-ID``) and answer an unhandled
    exception with a JSON 500 that names it, logged under the same id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._ids = _request_ids()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = ""
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                rid = candidate if _SANE.match(candidate) else ""
                break
        rid = rid or next(self._ids)
        scope.setdefault("state", {})["request_id"] = rid
        header = (HEADER.lower().encode(), rid.encode())
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [h for h in message.get("headers", []) if h[0] != header[0]]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception(
                "internal error answering %s %s (request %s)",
                scope.get("method", "?"),
                scope.get("path", "?"),
                rid,
            )
            if started:  # too late for an answer: the connection is dropped
                raise
            response = JSONResponse(
                {"detail": "internal error", "request_id": rid}, status_code=500
            )
            await response(scope, receive, send_with_id)


class BusyLog:
    """Logs busy answers without flooding the log under sustained overload: the first one
    in full, then at most one line per ``every`` seconds, counting those not logged."""

    def __init__(self, every: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.every = every
        self.clock = clock
        self.last: float | None = None
        self.quiet = 0

    def __call__(self, request: Request, exc: StoreBusy) -> None:
        now = self.clock()
        if self.last is not None and now - self.last < self.every:
            self.quiet += 1
            return
        more = f" ({self.quiet} more busy answers since the last line)" if self.quiet else ""
        self.last, self.quiet = now, 0
        log.warning(
            "store busy answering %s %s (request %s): %s%s",
            request.method,
            request.url.path,
            request_id(request),
            exc,
            more,
        )


busy_log = BusyLog()


async def _busy(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StoreBusy)
    busy_log(request, exc)
    return JSONResponse(
        {"detail": str(exc), "retry_after": exc.retry_after},
        status_code=503,
        headers={"Retry-After": str(exc.retry_after)},
    )


def install_error_handling(app: FastAPI) -> None:
    """Add the request id, the 503 answer to a busy store and the JSON 500 to ``app``, and
    document the 503 on its write operations in the OpenAPI schema."""
    app.add_exception_handler(StoreBusy, _busy)
    app.add_middleware(RequestIdMiddleware)
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for operations in schema.get("paths", {}).values():
                for method, operation in operations.items():
                    if method in ("post", "put", "patch", "delete"):
                        operation.setdefault("responses", {}).setdefault("503", BUSY_RESPONSE)
                        operation["responses"].setdefault("413", TOO_LARGE_RESPONSE)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
