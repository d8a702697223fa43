"""Run the real HTTP service (uvicorn) in a thread on a free port."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from tests.delivery_support import free_port
from winback.store import apikeys
from winback.store.apikeys import Scope
from winback.web.app import create_app
from winback.workspace import Workspace


@contextmanager
def running_service(
    ws: Workspace, *, background: bool = False, interval: float = 30.0, **app_options: Any
) -> Iterator[str]:
    with running_app(
        create_app(ws, background=background, interval=interval, **app_options)
    ) as base:
        yield base


@contextmanager
def running_app(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` (from :func:`create_app`, maybe with routes added) on a free port."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    else:
        raise RuntimeError("the service did not start")
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(10)


def new_api_key(ws: Workspace, name: str, scope: Scope = Scope.EVENTS) -> str:
    """A new API key with ``scope`` (as ``winback api-keys create --scope`` makes it): by
    default for the event API and provider reports."""
    return apikeys.create(ws.engine, name, at=ws.clock.now(), scope=scope)
