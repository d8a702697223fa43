"""``/api/v1/tags``: the tags in use with their counts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from winback.web.auth import ReadDep
from winback.web.deps import WorkspaceDep
from winback.web.routes.manage.common import BEARER, core_errors, plain, responses

router = APIRouter(prefix="/api/v1", tags=["tags"], dependencies=[BEARER])


class TagCount(BaseModel):
    """A tag in use (as `winback tags list --json`)."""

    tag: str
    contacts: int
    last_change: datetime | None


@router.get("/tags", response_model=list[TagCount], responses=responses())
def list_tags(workspace: WorkspaceDep, _who: ReadDep) -> Any:
    """Every tag in use with its number of contacts and last change."""
    with core_errors():
        return plain(workspace.tags.counts())
