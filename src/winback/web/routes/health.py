"""``GET /healthz``: the service is up and the store answers."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import text

from winback import __version__
from winback.web.deps import WorkspaceDep

router = APIRouter(tags=["health"])


class HealthPublic(BaseModel):
    status: str
    version: str
    database: str


@router.get("/healthz", response_model=HealthPublic)
def healthz(workspace: WorkspaceDep) -> HealthPublic:
    with workspace.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return HealthPublic(status="ok", version=__version__, database=workspace.engine.dialect.name)
