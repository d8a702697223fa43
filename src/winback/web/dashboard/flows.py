"""The Flows pages: every flow with its status and counts (``/flows``), and one flow
(``/flows/<key>``) drawn as a diagram with the contacts at every step and branch
(:mod:`winback.flows.diagram`), its statistics (those of ``winback flows stats --json``),
its results (:mod:`winback.results.report`, the figures of ``winback flows results
--json``) and the enable / pause buttons.

The figures that read every entry, message and order of a flow (delivered and reactivated
in the list, a flow's statistics and results) come in a second request that htmx makes once
the page is shown (``/flows?figures=1``, ``/flows/<key>/stats``, ``/flows/<key>/results``);
without JavaScript, a link opens them as a page of their own."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import Request, Response
from fastapi.responses import RedirectResponse
from markupsafe import Markup

from winback.errors import NotFound
from winback.flows import diagram
from winback.flows.labels import in_order, labelled
from winback.flows.program import compile_program, parse_definition
from winback.results.glance import flows_at_a_glance
from winback.results.snapshot import results_of
from winback.web.auth import CsrfDep, DashboardUserDep, Principal, csrf_token
from winback.web.dashboard import render, router
from winback.web.deps import get_workspace


def _htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


@router.get("/flows")
def flows_page(request: Request, who: DashboardUserDep, figures: bool = False) -> Response:
    """The flows; with ``figures``, their delivered and reactivated counts too (htmx asks
    for the table alone)."""
    ws = get_workspace(request)
    errors: list[str] = []
    ws.flows.sync(errors=errors)
    now = ws.clock.now()
    rows = flows_at_a_glance(ws.engine, ws.settings, as_of=now, outcomes=figures, kept=True)
    template = (
        "dashboard/_flows_table.html" if figures and _htmx(request) else "dashboard/flows.html"
    )
    kept_at = min((r.figures_at for r in rows if r.figures_at is not None), default=None)
    return render(
        request,
        template,
        who,
        flows=rows,
        errors=errors,
        figures=figures,
        kept_at=kept_at,
        kept_age=_minutes(now, kept_at),
    )


def _minutes(now: datetime, then: datetime | None) -> int | None:
    """Whole minutes from ``then`` to ``now`` (None without ``then``)."""
    return None if then is None else max(0, int((now - then).total_seconds() // 60))


def _missing(request: Request, who: Principal, key: str) -> Response:
    return render(request, "dashboard/not_found.html", who, status_code=404, what=f"flow {key!r}")


def _flow(request: Request, key: str) -> tuple[Any, Any]:
    """The stored flow named ``key`` (404 page when there is none) and its program."""
    ws = get_workspace(request)
    try:
        row = ws.flows._row(key)
    except NotFound:
        return None, None
    return row, compile_program(row.key, parse_definition(row.definition, path=row.key))


@router.get("/flows/{key}")
def flow_page(request: Request, key: str, who: DashboardUserDep) -> Response:
    ws = get_workspace(request)
    errors: list[str] = []
    ws.flows.sync(errors=errors)
    row, program = _flow(request, key)
    if row is None:
        return _missing(request, who, key)
    now = ws.clock.now()
    with ws.engine.connect() as conn:
        counts = diagram.step_counts(conn, int(row.id), now)
    return render(
        request,
        "dashboard/flow.html",
        who,
        flow=row,
        program=program,
        svg=Markup(diagram.svg(program, counts)),  # every text in it is escaped
        counts=counts,
        errors=errors,
    )


@router.get("/flows/{key}/stats")
def flow_stats_page(request: Request, key: str, who: DashboardUserDep) -> Response:
    """Where the flow's contacts are, as ``winback flows stats``: the section of the flow
    page (htmx), or a page of its own."""
    ws = get_workspace(request)
    ws.flows.sync(errors=[])
    row, _ = _flow(request, key)
    if row is None:
        return _missing(request, who, key)
    stats = ws.flows.stats(row.key)
    labels = stats["step_names"]
    message_steps = [
        (labelled(s, labels), stats["messages_per_step"][s])
        for s in in_order(stats["messages_per_step"], labels)
    ]
    template = "dashboard/_flow_stats.html" if _htmx(request) else "dashboard/flow_stats.html"
    return render(request, template, who, flow=row, stats=stats, message_steps=message_steps)


@router.get("/flows/{key}/results")
def flow_results_page(request: Request, key: str, who: DashboardUserDep) -> Response:
    """The flow's results: the section of the flow page (htmx), or a page of their own."""
    ws = get_workspace(request)
    ws.flows.sync(errors=[])
    row, _ = _flow(request, key)
    if row is None:
        return _missing(request, who, key)
    results, snap = results_of(ws, row.key)
    template = "dashboard/_flow_results.html" if _htmx(request) else "dashboard/flow_results.html"
    return render(
        request,
        template,
        who,
        flow=row,
        results=results,
        snapshot=snap,
        kept_age=_minutes(ws.clock.now(), snap.computed_at if snap else None),
        every=ws.settings.results_snapshot_minutes,
    )


def _switch(request: Request, key: str, who: Principal, enable: bool) -> Response:
    ws = get_workspace(request)
    row, _ = _flow(request, key)
    if row is None:
        return _missing(request, who, key)
    if enable:
        ws.flows.enable(row.key)
    else:
        ws.flows.pause(row.key)
    if _htmx(request):
        flow = ws.flows._row(row.key)
        response: Response = request.app.state.templates.TemplateResponse(
            request,
            "dashboard/_flow_status.html",
            {"flow": flow, "csrf_token": csrf_token(request)},
        )
        response.headers["Cache-Control"] = "no-store"
        return response
    return RedirectResponse(f"/flows/{row.key}", status_code=303)


@router.post("/flows/{key}/enable")
def enable_flow(request: Request, key: str, who: DashboardUserDep, _csrf: CsrfDep) -> Response:
    """Start or resume the flow (as ``winback flows enable``)."""
    return _switch(request, key, who, True)


@router.post("/flows/{key}/pause")
def pause_flow(request: Request, key: str, who: DashboardUserDep, _csrf: CsrfDep) -> Response:
    """Pause the flow (as ``winback flows pause``)."""
    return _switch(request, key, who, False)
