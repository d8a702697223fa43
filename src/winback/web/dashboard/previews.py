"""The Templates pages: the message templates (``/templates``, as ``winback templates list``)
and one rendered for a chosen contact (``/templates/<name>?contact=<id, email or customer
id>``, or for the sample contact of ``templates validate``), through delivery's sandbox and
render limits (:meth:`winback.delivery.Delivery.preview_for`).

The HTML part is shown at desktop and phone width in ``<iframe sandbox srcdoc=...>``: no
script of the message runs, it cannot reach the dashboard's page or cookies, and the page's
Content-Security-Policy (which a ``srcdoc`` frame inherits) keeps it from loading anything
from outside the server. A template that fails to render shows its error with file and line."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Query, Request, Response
from fastapi.responses import RedirectResponse

from winback.delivery.messages.templates import Rendered
from winback.errors import DefinitionError, NotFound, WinbackError
from winback.web.auth import DashboardUserDep
from winback.web.dashboard import render, router
from winback.web.deps import get_workspace
from winback.workspace import Workspace

#: The phone width the preview shows (an iPhone 14's CSS pixels).
PHONE_WIDTH = 390
#: What the preview page (and the message frames it holds) may load: its own server only; no
#: script at all in the frames (``sandbox``), images only from the server or inline.
PREVIEW_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; frame-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'self'"
)


@router.get("/templates")
def templates_page(
    request: Request,
    who: DashboardUserDep,
    template: str = Query("", max_length=255),
    contact: str = Query("", max_length=320),
) -> Response:
    """The templates; with ``template`` (the form of a contact's page), that template's
    preview for ``contact``."""
    if template:
        return RedirectResponse(
            f"/templates/{quote(template, safe='')}?{urlencode({'contact': contact})}",
            status_code=303,
        )
    ws = get_workspace(request)
    repo = ws.delivery.templates
    rows: list[dict[str, Any]] = []
    for name in repo.names():
        try:
            tpl = repo.get(name)
            rows.append(
                {"name": name, "channel": tpl.channel, "path": str(tpl.path), "error": None}
            )
        except WinbackError as exc:
            rows.append({"name": name, "channel": "", "path": "", "error": str(exc)})
    return render(request, "dashboard/templates.html", who, templates=rows)


def _contact(ws: Workspace, ref: str) -> int:
    """The contact ``ref`` names: its internal id (``12`` or ``#12``), email or customer id."""
    try:
        return ws.contacts.resolve(ref)
    except NotFound:
        if ref.isdigit():
            return ws.contacts.resolve(f"#{ref}")
        raise


def _error(exc: Exception) -> dict[str, Any]:
    """A template's error with where it is: file and line when known."""
    path = getattr(exc, "path", None)
    line = getattr(exc, "line", None)
    if isinstance(exc, DefinitionError) and exc.location and exc.location.isdigit():
        line = int(exc.location)
    return {"message": str(exc), "path": path, "line": line}


@router.get("/templates/{name}")
def template_page(
    request: Request,
    name: str,
    who: DashboardUserDep,
    contact: str = Query("", max_length=320),
) -> Response:
    ws = get_workspace(request)
    problem: dict[str, Any] | None = None
    try:
        tpl = ws.delivery.templates.get(name)
    except NotFound:
        return render(
            request, "dashboard/not_found.html", who, status_code=404, what=f"template {name!r}"
        )
    except DefinitionError as exc:
        tpl, problem = None, _error(exc)
    ref = contact.strip()
    rendered: Rendered | None = None
    person: dict[str, Any] | None = None
    if tpl is not None:
        try:
            if ref:
                contact_id = _contact(ws, ref)
                person = ws.contacts.profile(f"#{contact_id}", messages=0)
                rendered = ws.delivery.preview_for(name, contact_id)
            else:
                rendered = ws.delivery.preview_sample(name)
        except NotFound as exc:
            problem = {"message": str(exc), "path": None, "line": None, "contact": True}
        except (WinbackError, ValueError) as exc:
            problem = _error(exc)
    response = render(
        request,
        "dashboard/template.html",
        who,
        name=name,
        message_template=tpl,
        contact=ref,
        person=person,
        rendered=asdict(rendered) if rendered is not None else None,
        problem=problem,
        phone_width=PHONE_WIDTH,
    )
    response.headers["Content-Security-Policy"] = PREVIEW_POLICY
    return response
