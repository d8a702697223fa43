"""``/setup``: what is configured (secrets masked, never shown) and what is missing, by the
checks of ``winback doctor``. The SMTP relay is contacted apart (``/setup/smtp``, loaded by
htmx after the page, or followed as a link without script), so that the page answers at
once."""

from __future__ import annotations

from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool

from winback.readmodels.setup import providers, setup_view
from winback.setup_checks import smtp_check
from winback.web.auth import DashboardUserDep
from winback.web.dashboard import render, router
from winback.web.dashboard.paging import wants_fragment
from winback.web.deps import get_workspace

#: Seconds the SMTP check waits for the relay's greeting.
SMTP_TIMEOUT = 3.0


def _page(request: Request, who: DashboardUserDep, *, check_smtp: bool) -> Response:
    settings = get_workspace(request).settings
    smtp = smtp_check(settings, timeout=SMTP_TIMEOUT) if check_smtp else None
    return render(
        request,
        "dashboard/setup.html",
        who,
        view=setup_view(settings),
        providers=providers(settings),
        smtp=smtp,
    )


@router.get("/setup")
async def setup_page(request: Request, who: DashboardUserDep) -> Response:
    return _page(request, who, check_smtp=False)


@router.get("/setup/smtp")
async def setup_smtp(request: Request, who: DashboardUserDep) -> Response:
    """The SMTP relay check: its row alone for htmx, else the page with it."""
    if not wants_fragment(request):
        return await run_in_threadpool(_page, request, who, check_smtp=True)
    settings = get_workspace(request).settings
    smtp = await run_in_threadpool(smtp_check, settings, timeout=SMTP_TIMEOUT)
    return render(request, "dashboard/_smtp_check.html", who, smtp=smtp)
