"""``/segments``: every segment with its member count and trend; ``/segments/<name>``: its
definition, its members (paged, searchable; htmx swaps the list, plain links work without
script) and ``/segments/<name>/export.csv`` (the export of ``winback segments export``)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from markupsafe import Markup

from winback.analytics import charts
from winback.errors import NotFound
from winback.readmodels.members import (
    MAX_PAGE_SIZE,
    PAGE_SIZE,
    ROW_COLUMNS,
    segment_id,
    segment_members,
)
from winback.readmodels.segments import definition_yaml, segment_list, segment_trend
from winback.web.auth import DashboardUserDep
from winback.web.dashboard import render, router
from winback.web.dashboard.paging import not_found, page_links, wants_fragment
from winback.web.deps import get_workspace

#: Rows written to the CSV stream per chunk.
EXPORT_CHUNK = 1000


@router.get("/segments")
async def segments_page(request: Request, who: DashboardUserDep) -> Response:
    workspace = get_workspace(request)
    rows, trend = await run_in_threadpool(segment_list, workspace.segments, workspace.engine)
    lines = {
        r["name"]: Markup(
            charts.sparkline(trend.of(r["name"]), title=f"{r['name']}: members per day")
        )
        for r in rows
    }
    return render(request, "dashboard/segments.html", who, rows=rows, trend=trend, lines=lines)


def _segment_base(name: str) -> str:
    return f"/segments/{quote(name, safe='')}"


@router.get("/segments/{name}")
async def segment_page(
    request: Request,
    who: DashboardUserDep,
    name: str,
    q: Annotated[str, Query(max_length=320)] = "",
    after: Annotated[int | None, Query(ge=0)] = None,
    before: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = PAGE_SIZE,
) -> Response:
    workspace = get_workspace(request)
    base_path = _segment_base(name)

    def load() -> dict[str, Any]:
        page = segment_members(workspace.engine, name, q=q, after=after, before=before, limit=limit)
        if wants_fragment(request):
            return {"page": page}
        summary, body = definition_yaml(workspace.segments, name)
        trend = segment_trend(workspace.engine)
        days, counts = trend.days, trend.of(name)
        chart = (
            Markup(
                charts.trend(
                    days,
                    [[None if v is None else float(v) for v in counts]],
                    names=["members"],
                    title=f"{name}: members per day",
                )
            )
            if any(v is not None for v in counts)
            else None
        )
        return {"page": page, "summary": summary, "yaml": body, "chart": chart}

    try:
        found = await run_in_threadpool(load)
    except NotFound as exc:
        return not_found(request, who, str(exc))
    template = "dashboard/_members.html" if wants_fragment(request) else "dashboard/segment.html"
    return render(
        request,
        template,
        who,
        name=name,
        columns=ROW_COLUMNS,
        base_path=base_path,
        links=page_links(base_path, found["page"]),
        export_url=f"{base_path}/export.csv",
        **found,
    )


@router.get("/segments/{name}/export.csv")
async def segment_export(request: Request, who: DashboardUserDep, name: str) -> Response:
    """The members as CSV (the columns of ``winback segments export``, formula-safe),
    streamed as they are read."""
    workspace = get_workspace(request)
    try:  # an unknown or never refreshed segment is a 404, before the stream starts
        definition = await run_in_threadpool(workspace.segments.get, name)
        await run_in_threadpool(segment_id, workspace.engine, definition.name)
    except NotFound as exc:
        return not_found(request, who, str(exc))
    rows = workspace.segments.export_rows(definition.name)
    header = next(rows)

    def chunks() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        for i, row in enumerate(rows, start=1):
            writer.writerow(row)
            if i % EXPORT_CHUNK == 0:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    filename = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name) or "segment"
    return StreamingResponse(
        chunks(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}.csv"',
            "Cache-Control": "no-store",
        },
    )
