"""The marketer's dashboard: server-rendered pages (Jinja2 and the vendored htmx) over the
same core as the CLI. Every page needs a signed-in user or an API key with the read scope
(:data:`winback.web.auth.DashboardUserDep`); every form POST carries the CSRF token.

One module per page registers its routes on :data:`router`; :func:`render` renders a page
inside ``dashboard/base.html`` (navigation, the workspace's name and currency)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from winback.web.auth import Principal, csrf_token, dashboard_user
from winback.web.deps import get_workspace

router = APIRouter(dependencies=[Depends(dashboard_user)], include_in_schema=False)

#: The navigation: (path, label), in the order shown.
NAVIGATION: tuple[tuple[str, str], ...] = (
    ("/overview", "Overview"),
    ("/rfm", "RFM"),
    ("/segments", "Segments"),
    ("/flows", "Flows"),
    ("/contacts", "Contacts"),
    ("/templates", "Templates"),
    ("/setup", "Setup"),
    ("/report", "Report"),
)


def render(
    request: Request,
    template: str,
    who: Principal,
    *,
    status_code: int = 200,
    **context: Any,
) -> Response:
    """Render ``template`` (a ``dashboard/*.html`` extending ``dashboard/base.html``)."""
    workspace = get_workspace(request)
    settings = workspace.settings
    context.update(
        who=who,
        navigation=NAVIGATION,
        current=request.url.path,
        csrf_token=csrf_token(request),
        shop={"name": settings.shop_name, "url": settings.shop_url},
        currency=settings.currency,
    )
    response: Response = request.app.state.templates.TemplateResponse(
        request, template, context, status_code=status_code
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


@router.get("/")
def home() -> Response:
    """The dashboard's start page is the overview."""
    from fastapi.responses import RedirectResponse

    return RedirectResponse("/overview", status_code=303)


# The pages register their routes on ``router`` when imported.
from winback.web.dashboard import (  # noqa: E402, F401
    contacts,
    flows,
    overview,
    previews,
    report,
    rfm,
    segments,
    setup,
)
