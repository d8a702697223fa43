"""``/rfm``: the 5x5 grid and the 11 segments of the latest analysis with customers and
revenue; a cell or a segment opens its members (``/rfm/members``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from markupsafe import Markup

from winback.analytics import charts
from winback.readmodels.members import (
    MAX_PAGE_SIZE,
    PAGE_SIZE,
    ROW_COLUMNS,
    RfmSelection,
    rfm_members,
)
from winback.readmodels.rfm import rfm_view
from winback.web.auth import DashboardUserDep
from winback.web.dashboard import render, router
from winback.web.dashboard.paging import page_links, wants_fragment
from winback.web.deps import get_workspace


@router.get("/rfm")
async def rfm_page(request: Request, who: DashboardUserDep) -> Response:
    view = await run_in_threadpool(rfm_view, get_workspace(request).engine)
    segs = [s for s in view.segments() if s["customers"]]
    chart = (
        Markup(
            charts.paired_bars(
                [s["segment"] for s in segs],
                [s["share"] for s in segs],
                [s["revenue_share"] for s in segs],
                names=("share of customers", "share of revenue"),
                title="RFM segments: size and revenue share",
            )
        )
        if segs
        else None
    )
    return render(request, "dashboard/rfm.html", who, view=view, chart=chart)


@router.get("/rfm/members")
async def rfm_members_page(
    request: Request,
    who: DashboardUserDep,
    r: Annotated[int | None, Query(ge=1, le=5)] = None,
    f: Annotated[int | None, Query(ge=1, le=5)] = None,
    segment: Annotated[str | None, Query(max_length=32)] = None,
    q: Annotated[str, Query(max_length=320)] = "",
    after: Annotated[int | None, Query(ge=0)] = None,
    before: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = PAGE_SIZE,
) -> Response:
    try:
        selection = RfmSelection(r=r, f=f, segment=segment or None)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    engine = get_workspace(request).engine
    view = await run_in_threadpool(rfm_view, engine)
    page = await run_in_threadpool(
        lambda: rfm_members(
            engine,
            selection,
            q=q,
            after=after,
            before=before,
            limit=limit,
            total=view.total(selection),
        )
    )
    template = (
        "dashboard/_members.html" if wants_fragment(request) else "dashboard/rfm_members.html"
    )
    return render(
        request,
        template,
        who,
        view=view,
        selection=selection,
        page=page,
        columns=ROW_COLUMNS,
        base_path="/rfm/members",
        links=page_links("/rfm/members", page),
    )
