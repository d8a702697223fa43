"""``GET /healthz``: the service is up, the store answers and the engine loop is healthy.

``200`` with ``status: ok``, or ``503`` with ``status: unavailable`` when the store cannot
be reached, the engine (``winback serve`` without ``--no-background``) is stopped, has
failed three passes in a row, or has had no successful pass for ``engine_stale_seconds``
(see :mod:`winback.flows.status`), or the event journal's applier process died three times
in a row. A busy store (locked by a writer) is not down. ``events`` tells how many
accepted events wait in the journal."""

from __future__ import annotations

import sqlite3
from dataclasses import asdict
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.exc import TimeoutError as PoolTimeout

from winback import __version__
from winback.flows.status import EngineStatus
from winback.store.busy import StoreBusy, is_busy
from winback.web.deps import WorkspaceDep
from winback.web.engine_process import ApplierStatus

router = APIRouter(tags=["health"])


class PassErrorPublic(BaseModel):
    type: str = Field(description="Exception class of the failed pass.")
    message: str
    at: datetime


class EnginePublic(BaseModel):
    state: Literal["running", "failing", "stopped", "disabled"] = Field(
        description="`running`: the last pass succeeded (or none ended yet); `failing`: the "
        "last pass failed and is being retried with a backoff; `stopped`: the loop is not "
        "running though it should; `disabled`: no engine in this process "
        "(`serve --no-background`)."
    )
    healthy: bool
    problem: str | None = Field(description="Why the engine is unhealthy; null when healthy.")
    passes: int = Field(description="Successful passes since the start.")
    failures: int = Field(description="Failed passes since the start.")
    consecutive_failures: int
    started_at: datetime | None
    last_success_at: datetime | None
    last_error: PassErrorPublic | None
    interval_seconds: float
    stale_after_seconds: float


class EventsPublic(BaseModel):
    applier: Literal["process", "thread"] = Field(
        description="Where accepted events are written into the store: a child process of "
        "the server (`winback serve`) or a thread of it."
    )
    running: bool = Field(description="Whether the applier runs now (a dead child is restarted).")
    healthy: bool = Field(
        description="False when the applier's process died three times in a row: accepted "
        "events then wait in the journal."
    )
    backlog_events: int | None = Field(
        description="Events accepted (`202`) and not yet in the store: they are on disk in "
        "the event journal and applied in order (null when the journal could not be read "
        "at once)."
    )
    restarts: int = Field(description="Times the applier's process was started again.")
    last_error: str | None
    last_error_at: datetime | None


class HealthPublic(BaseModel):
    status: Literal["ok", "unavailable"] = Field(
        description="`ok` (HTTP 200) or `unavailable` (HTTP 503: store down or engine unhealthy)."
    )
    version: str
    database: str = Field(description="Store dialect: sqlite or postgresql.")
    store: Literal["ok", "busy", "down"] = Field(
        description="`busy`: locked by a writer right now (not an outage); `down`: unreachable."
    )
    engine: EnginePublic
    events: EventsPublic


def _events(request: Request, workspace: WorkspaceDep) -> EventsPublic:
    applier: ApplierStatus = request.app.state.applier
    backlog: int | None
    try:
        backlog = workspace.delivery.event_intake.journal.waiting()
    except sqlite3.Error:  # the journal could not be read now: no figure rather than a wait
        backlog = None
    return EventsPublic(
        applier=applier.where,
        running=applier.running,
        healthy=applier.healthy,
        backlog_events=backlog,
        restarts=max(0, applier.starts - 1),
        last_error=applier.last_error,
        last_error_at=applier.last_error_at,
    )


def _store(workspace: WorkspaceDep) -> Literal["ok", "busy", "down"]:
    try:
        with workspace.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except (PoolTimeout, StoreBusy):  # the engine translates lock waits into StoreBusy
        return "busy"
    except Exception as exc:
        return "busy" if is_busy(exc) else "down"
    return "ok"


@router.get(
    "/healthz",
    response_model=HealthPublic,
    responses={503: {"model": HealthPublic, "description": "Store down or engine unhealthy."}},
)
def healthz(request: Request, response: Response, workspace: WorkspaceDep) -> HealthPublic:
    status: EngineStatus = request.app.state.engine
    engine = status.snapshot()
    store = _store(workspace)
    events = _events(request, workspace)
    ok = store != "down" and engine.healthy and events.healthy
    response.status_code = 200 if ok else 503
    return HealthPublic(
        status="ok" if ok else "unavailable",
        version=__version__,
        database=workspace.engine.dialect.name,
        store=store,
        engine=EnginePublic.model_validate(asdict(engine)),
        events=events,
    )
