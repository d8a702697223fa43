"""``/api/v1/segments``: the segments with their member counts, one segment's definition,
and its current members, a page at a time."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field, create_model

from winback.channels import CONSENT_CHANNELS
from winback.segments.service import EXPORT_COLUMNS, MEMBER_COLUMNS
from winback.web.auth import ReadDep
from winback.web.deps import WorkspaceDep
from winback.web.routes.manage.common import BEARER, core_errors, plain, responses

router = APIRouter(prefix="/api/v1", tags=["segments"], dependencies=[BEARER])

#: The most members one page holds.
MAX_PAGE = 1000

SegmentName = Annotated[str, Path(description="The segment's name (as `segments list` shows).")]


class SegmentSummary(BaseModel):
    """A segment and its size at the last refresh (as `winback segments list --json`)."""

    name: str
    description: str
    source: str = Field(description="Where it is defined: `default` or its YAML file.")
    depends_on: list[str]
    members: int | None = Field(description="Members at the last refresh; null: never refreshed.")
    refreshed_at: datetime | None


class SegmentDetail(SegmentSummary):
    """A segment with its definition (as `winback segments show --json`)."""

    definition: dict[str, Any]


class Member(BaseModel):
    """A current member (as `winback segments members --json`)."""

    contact_id: int
    customer_id: str
    email: str | None
    first_name: str | None
    last_name: str | None
    entered_at: datetime


#: A member with the columns of the segment export (consent per channel, purchases and the
#: last analysis), given when asked for with ``detail=true``.
MemberDetail: type[Member] = create_model(  # type: ignore[call-overload]
    "MemberDetail",
    __base__=Member,
    __doc__="A member; with `detail=true`, also the columns of `winback segments export`.",
    **{f"{channel}_consent": (bool | None, None) for channel in CONSENT_CHANNELS},
    orders_count=(int | None, None),
    revenue_total=(float | None, None),
    last_purchase_at=(datetime | None, None),
    rfm_segment=(str | None, None),
    p_alive=(float | None, None),
    clv=(float | None, None),
    analyzed_at=(datetime | None, None),
)


class MemberPage(BaseModel):
    """One page of members, in order of contact id."""

    segment: str
    members: int | None = Field(description="The segment's size at the last refresh.")
    items: list[MemberDetail]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page. Opaque: "
        "the place after which the next page starts."
    )


@router.get("/segments", response_model=list[SegmentSummary], responses=responses())
def list_segments(workspace: WorkspaceDep, _who: ReadDep) -> Any:
    """Every segment (the defaults and `segments/*.yaml`) with its member count at the last
    refresh."""
    with core_errors():
        return plain(workspace.segments.list())


@router.get("/segments/{name}", response_model=SegmentDetail, responses=responses(404))
def get_segment(name: SegmentName, workspace: WorkspaceDep, _who: ReadDep) -> Any:
    """A segment's definition and member count."""
    with core_errors():
        return plain(workspace.segments.summary(name))


@router.get(
    "/segments/{name}/members",
    response_model=MemberPage,
    response_model_exclude_unset=True,
    responses=responses(404),
)
def segment_members(
    name: SegmentName,
    workspace: WorkspaceDep,
    _who: ReadDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Members per page.")] = 100,
    cursor: Annotated[
        str | None,
        Query(pattern=r"^[0-9]{1,18}$", description="`next_cursor` of the previous page."),
    ] = None,
    detail: Annotated[
        bool,
        Query(description="Also consent per channel, purchases, RFM segment, P(alive), CLV."),
    ] = False,
) -> Any:
    """The segment's current members (as of its last refresh), in order of contact id, a
    page at a time: all pages together are `winback segments members NAME --json` (which
    lists them in order of entry). Pages follow `next_cursor`; members entering or leaving
    between two pages move no other member to another page."""
    columns = EXPORT_COLUMNS if detail else MEMBER_COLUMNS
    with core_errors():
        page = workspace.segments.page(
            name, limit=limit, after=int(cursor) if cursor else None, columns=columns
        )
        summary = workspace.segments.summary(name)
    return MemberPage(
        segment=summary["name"],
        members=summary["members"],
        items=[MemberDetail(**row) for row in page.rows],
        next_cursor=str(page.next) if page.next is not None else None,
    )
