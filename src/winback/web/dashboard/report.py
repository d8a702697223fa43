"""``/report``: the analysis report (``winback analyze --html``) of the latest analysis,
served from the dashboard (``/report/view``); when there is none, or it is from an earlier
day, the page says so and offers to run the analysis, in the background (never inside the
request)."""

from __future__ import annotations

from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse

from winback.readmodels.analysis_report import report_html, report_state
from winback.web.auth import CsrfDep, DashboardUserDep
from winback.web.dashboard import render, router
from winback.web.dashboard.jobs import jobs_of
from winback.web.dashboard.paging import not_found
from winback.web.deps import get_workspace

#: The job name of an analysis started from the dashboard.
ANALYSIS_JOB = "analysis"
#: The report is a document of its own: inline styles and SVG, nothing else, and only
#: framed by the dashboard itself.
REPORT_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'"
)


@router.get("/report")
async def report_page(request: Request, who: DashboardUserDep) -> Response:
    workspace = get_workspace(request)
    state = await run_in_threadpool(report_state, workspace.engine, workspace.clock.now().date())
    return render(
        request,
        "dashboard/report.html",
        who,
        state=state,
        job=jobs_of(request).state(ANALYSIS_JOB),
    )


@router.get("/report/view")
async def report_view(request: Request, who: DashboardUserDep) -> Response:
    """The report itself, as ``winback analyze --html`` writes it."""
    workspace = get_workspace(request)
    state = await run_in_threadpool(report_state, workspace.engine, workspace.clock.now().date())
    if state.analysis is None:
        return not_found(request, who, "No analysis yet: generate one on the Report page.")
    html = await run_in_threadpool(report_html, state.analysis)
    return HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": REPORT_POLICY,
            "Cache-Control": "no-store",
            "Referrer-Policy": "same-origin",
        },
    )


@router.post("/report/generate")
async def generate_report(request: Request, who: DashboardUserDep, _csrf: CsrfDep) -> Response:
    """Run the analysis (``winback analyze``: contacts written, the report stored) in the
    background; back to the report page, which shows it running."""
    analytics = get_workspace(request).analytics
    jobs_of(request).start(ANALYSIS_JOB, analytics.analyze)
    return RedirectResponse("/report", status_code=303)
