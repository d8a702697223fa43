"""The FastAPI application factory. ``create_app(workspace)`` builds the app around one
:class:`~winback.workspace.Workspace`; ``background=True`` (``winback serve``) also runs the
delivery worker (and the flow engine's loop, when that feature is installed) in background
threads of the same process, stopped cleanly at shutdown."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from winback import __version__
from winback.errors import WinbackError
from winback.workspace import Workspace

TEMPLATES = Path(__file__).parent / "templates"


class BackgroundLoops:
    """Threads running ``loop(stop_event)`` callables until shutdown."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, name: str, loop: Callable[[threading.Event], None]) -> None:
        thread = threading.Thread(target=loop, args=(self.stop,), name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def shutdown(self, timeout: float = 30.0) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout)


def background_loops(workspace: Workspace, *, interval: float = 30.0) -> BackgroundLoops:
    """Start the flow engine's loop: each pass ticks the flows, then hands the outbox to the
    delivery worker (or to the file sink when no channel is configured, as `winback run`)."""
    from winback.flows.runner import run_forever

    loops = BackgroundLoops()

    def engine(stop: threading.Event) -> None:
        run_forever(workspace, stop, interval=interval)

    loops.start("winback-engine", engine)
    return loops


def create_app(
    workspace: Workspace, *, background: bool = False, interval: float = 30.0
) -> FastAPI:
    """The app; ``background=True`` also runs the engine and delivery loop every
    ``interval`` seconds in this process (stopped at shutdown)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loops = background_loops(workspace, interval=interval) if background else None
        try:
            yield
        finally:
            if loops is not None:
                loops.shutdown()
            workspace.delivery.close()  # writes queued events and the API keys' recorded use

    app = FastAPI(
        title="winback",
        version=__version__,
        description="Tracking, unsubscribe and feedback links of winback messages, and the "
        "event API.",
        lifespan=lifespan,
    )
    app.state.workspace = workspace
    app.state.templates = Jinja2Templates(directory=str(TEMPLATES))

    @app.exception_handler(WinbackError)
    async def _core_error(request: Request, exc: WinbackError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(ValidationError)
    async def _invalid(request: Request, exc: ValidationError) -> JSONResponse:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    from winback.web.routes import events, feedback, health, reports, tracking, unsubscribe

    for module in (health, tracking, unsubscribe, feedback, events, reports):
        app.include_router(module.router)
    return app
