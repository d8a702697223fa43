"""The FastAPI application factory. ``create_app(workspace)`` builds the app around one
:class:`~winback.workspace.Workspace`; ``background=True`` (``winback serve``) also runs the
flow engine's loop and the delivery worker, in a child process (``engine_process=True``, what
``winback serve`` does) or in a background thread, stopped cleanly at shutdown."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from winback import __version__
from winback.accounts import LoginThrottle
from winback.errors import WinbackError
from winback.flows.status import EngineStatus
from winback.web.apikeys import KeyRing
from winback.web.auth import LoginRequired
from winback.web.engine_process import ApplierProcess, ApplierStatus
from winback.web.errors import install_error_handling
from winback.web.limits import BodyLimitMiddleware, limits
from winback.web.routes.login import PASSWORD_CHECKS
from winback.web.sessions import SessionRing, SessionSigner
from winback.workspace import Workspace

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
log = logging.getLogger("winback.engine")
#: Seconds between two looks at the unsubscribe inbox (:func:`inbox_loop`).
INBOX_SECONDS = 5.0


class BackgroundLoops:
    """Threads running ``loop(stop_event)`` callables until shutdown, and what else must
    stop with them (the engine's child process)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.stoppers: list[Callable[[float], None]] = []

    def start(self, name: str, loop: Callable[[threading.Event], None]) -> threading.Thread:
        thread = threading.Thread(target=loop, args=(self.stop,), name=name, daemon=True)
        thread.start()
        self.threads.append(thread)
        return thread

    def shutdown(self, timeout: float = 60.0) -> None:
        """Ask the loops to stop and wait for them (a pass in progress finishes its slice)."""
        self.stop.set()
        for stopper in self.stoppers:
            stopper(timeout)
        for thread in self.threads:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("%s did not stop within %g s; leaving it", thread.name, timeout)


def background_loops(
    workspace: Workspace,
    status: EngineStatus,
    *,
    interval: float = 30.0,
    engine_process: bool = False,
) -> BackgroundLoops:
    """Start the flow engine's supervised loop: each pass ticks the flows, then hands the
    outbox to the delivery worker (the configured channels, or the file channel). A failing
    pass is logged and retried (see :func:`winback.flows.runner.run_forever`); ``status``
    is what ``GET /healthz`` reports. ``engine_process``: the loop runs in a child process
    (:mod:`winback.web.engine_process`), otherwise in a thread of this one."""
    from winback.flows.runner import log_pass, run_forever

    loops = BackgroundLoops()
    if engine_process:
        from winback.web.engine_process import EngineProcess

        child = EngineProcess(workspace.path, status, interval=interval)
        loops.stoppers.append(child.stop)
        status.watch(child.start())
        return loops

    def engine(stop: threading.Event) -> None:
        run_forever(workspace, stop, interval=interval, status=status, on_pass=log_pass)

    status.watch(loops.start("winback-engine", engine))
    return loops


def inbox_loop(workspace: Workspace, *, every: float) -> Callable[[threading.Event], None]:
    """Every ``every`` seconds, apply the one-click unsubscribes kept in the workspace's inbox
    while the store was busy (one file check when there are none). The delivery worker also
    applies them before each batch; this loop is what applies them on a host that serves
    links without running the engine (``serve --no-background``), soon after the store is
    free again."""
    from winback.store.busy import StoreBusy

    def loop(stop: threading.Event) -> None:
        while not stop.wait(every):
            try:
                workspace.delivery.apply_pending_unsubscribes()
            except StoreBusy:
                continue  # still busy: the next round tries again
            except Exception:
                log.exception("applying the kept unsubscribes failed; trying again")

    return loop


def create_app(
    workspace: Workspace,
    *,
    background: bool = False,
    interval: float = 30.0,
    inbox_interval: float = INBOX_SECONDS,
    engine_process: bool = False,
    applier_process: bool = False,
) -> FastAPI:
    """The app; ``background=True`` also runs the engine and delivery loop every
    ``interval`` seconds, in a thread of this process or (``engine_process``, as ``winback
    serve`` does) in a supervised child process; stopped at shutdown, the pass in progress
    finishing its slice first. In every case a light loop applies the one-click
    unsubscribes kept while the store was busy every ``inbox_interval`` seconds, and the
    event journal's applier writes accepted events to the store: in a supervised child
    process of its own (``applier_process``, as ``winback serve`` does), otherwise in a
    thread of this process."""
    status = EngineStatus(
        clock=workspace.clock,
        interval=interval,
        stale_after=workspace.settings.engine_stale_seconds,
        enabled=background,
    )
    applier = ApplierStatus()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loops = (
            background_loops(workspace, status, interval=interval, engine_process=engine_process)
            if background
            else BackgroundLoops()
        )
        loops.start("winback-inbox", inbox_loop(workspace, every=inbox_interval))
        # The event journal's applier: what it kept from before (a crash), then what is
        # accepted. In a child process of its own, or in a thread of this one. Stopped
        # after the engine (its stopper comes later), so that it applies what a last
        # slice of the engine's let wait.
        intake = workspace.delivery.event_intake
        if applier_process:
            intake.applies_here = False
            child = ApplierProcess(workspace.path, applier, now=workspace.clock.now)
            loops.stoppers.append(child.stop)
            child.start()
        else:
            intake.start()
        try:
            yield
        finally:
            await asyncio.to_thread(loops.shutdown)
            # Applies the event journal and writes the API keys' recorded use.
            await asyncio.to_thread(workspace.delivery.close)
            await asyncio.to_thread(app.state.keyring.close)

    app = FastAPI(
        title="winback",
        version=__version__,
        description="Tracking, unsubscribe and feedback links of winback messages, the "
        "event API and the management API (segments, flows, contacts, tags).",
        lifespan=lifespan,
        docs_url=None,  # served by winback.web.routes.docs, from the package
        redoc_url=None,
        openapi_url=None,
    )
    app.state.workspace = workspace
    app.state.keyring = KeyRing(workspace.engine, workspace.clock.now)
    app.state.sessions = SessionRing(workspace.engine, workspace.clock.now)
    secret = workspace.settings.secret_key
    app.state.session_signer = SessionSigner(secret) if secret else None
    app.state.login_throttle = LoginThrottle()
    app.state.password_checks = asyncio.Semaphore(PASSWORD_CHECKS)
    app.state.engine = status
    app.state.applier = applier
    app.state.templates = Jinja2Templates(directory=str(TEMPLATES))

    @app.exception_handler(WinbackError)
    async def _core_error(request: Request, exc: WinbackError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(ValidationError)
    async def _invalid(request: Request, exc: ValidationError) -> JSONResponse:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Without the input: what was refused may not even be encodable (a lone surrogate,
        # NaN), and echoing it back teaches the client nothing the message does not say.
        errors = [
            {"type": e.get("type"), "loc": list(e.get("loc", ())), "msg": e.get("msg")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    from winback.web import dashboard
    from winback.web.routes import (
        docs,
        events,
        feedback,
        health,
        login,
        reports,
        tracking,
        unsubscribe,
        webhooks,
    )
    from winback.web.routes.manage import contacts as manage_contacts
    from winback.web.routes.manage import flows as manage_flows
    from winback.web.routes.manage import segments as manage_segments
    from winback.web.routes.manage import tags as manage_tags

    app.router.routes[0:0] = events.fast_routes  # matched before any other route
    for module in (health, tracking, unsubscribe, feedback, events, reports, webhooks, docs, login):
        app.include_router(module.router)
    for manage in (manage_segments, manage_flows, manage_contacts, manage_tags):
        app.include_router(manage.router)
    app.include_router(dashboard.router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, exc: LoginRequired) -> RedirectResponse:
        return RedirectResponse(exc.location(), status_code=303)

    settings = workspace.settings
    app.add_middleware(
        BodyLimitMiddleware,
        limit_for=limits(settings.http_max_body_bytes, settings.http_max_report_bytes),
    )
    install_error_handling(app)  # outside the body limit: a 413 carries the request id
    return app
