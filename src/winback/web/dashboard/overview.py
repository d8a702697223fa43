"""``/overview``: customers, buyers, revenue, dormant shares and their trends, the
distributions of last purchase / open / click / visit, consent rates and the flows at a
glance, from the daily snapshots (:mod:`winback.readmodels.overview`)."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse
from markupsafe import Markup

from winback import snapshots
from winback.analytics import charts
from winback.readmodels.overview import Overview, Trend, overview
from winback.web.auth import CsrfDep, DashboardUserDep
from winback.web.dashboard import render, router
from winback.web.dashboard.jobs import jobs_of
from winback.web.deps import get_workspace

#: The job name of an on-demand snapshot of the base.
SNAPSHOT_JOB = "base-snapshot"

DISTRIBUTIONS = {
    "last_purchase": "purchase",
    "last_open": "email open",
    "last_click": "click",
    "last_visit": "site visit",
}


def _trend_charts(data: Overview) -> dict[str, Markup]:
    out: dict[str, Markup] = {}
    base: Trend = data.base_trend
    if base.days:
        out["people"] = Markup(
            charts.trend(
                base.days,
                [base.values["customers"], base.values["customers_with_orders"]],
                names=["customers", "buyers"],
                title="Customers and buyers per day",
            )
        )
        out["revenue"] = Markup(
            charts.trend(
                base.days, [base.values["revenue"]], names=["revenue"], title="Revenue per day"
            )
        )
    dormant = data.dormant_trend
    if dormant.days:
        out["dormant"] = Markup(
            charts.trend(
                dormant.days,
                [dormant.values["fixed_rule"], dormant.values["alive_rule"]],
                names=["no purchase in the window", "P(alive) below the threshold"],
                title="Dormant share of buyers per analysis",
                percent=True,
            )
        )
    return out


def _distribution_chart(report: dict[str, Any]) -> Markup | None:
    dists = report.get("health", {}).get("distributions", {})
    keys = [k for k in DISTRIBUTIONS if k in dists]
    if not keys:
        return None
    return Markup(
        charts.columns(
            [b["bucket"] for b in dists[keys[0]]],
            [[b["count"] for b in dists[k]] for k in keys],
            names=[DISTRIBUTIONS[k] for k in keys],
            title="Days since the last purchase, open, click and visit",
            x_title="days since the last ...",
        )
    )


@router.get("/overview")
async def overview_page(request: Request, who: DashboardUserDep) -> Response:
    workspace = get_workspace(request)
    data = await run_in_threadpool(overview, workspace.engine)
    today = workspace.clock.now().date()
    report = data.analysis.data if data.analysis is not None else {}
    return render(
        request,
        "dashboard/overview.html",
        who,
        data=data,
        base=data.base.data if data.base is not None else None,
        report=report or None,
        stale=data.stale(today),
        today=today,
        charts=_trend_charts(data),
        distributions=_distribution_chart(report),
        distribution_names=DISTRIBUTIONS,
        job=jobs_of(request).state(SNAPSHOT_JOB),
    )


@router.post("/overview/snapshot")
async def take_snapshot(request: Request, who: DashboardUserDep, _csrf: CsrfDep) -> Response:
    """Take today's snapshot of the base in the background; back to the overview."""
    workspace = get_workspace(request)
    settings = workspace.settings

    def work() -> None:
        snapshots.take_base(
            workspace.engine,
            now=workspace.clock.now(),
            days=settings.dormant_days,
            currency=settings.currency,
        )

    jobs_of(request).start(SNAPSHOT_JOB, work)
    return RedirectResponse("/overview", status_code=303)
