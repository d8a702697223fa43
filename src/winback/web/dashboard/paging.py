"""Links and answers shared by the member lists (segments, RFM): keyset page links that keep
the filters and the search, whether htmx asked for the list alone, and the 404 page."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import Request, Response

from winback.readmodels.members import MemberPage
from winback.web.auth import Principal
from winback.web.dashboard import render


def page_links(base_path: str, page: MemberPage) -> dict[str, str | None]:
    """``next`` and ``previous`` URLs of a member page (None when there is none)."""
    params = dict(page.filters)
    if page.query:
        params["q"] = page.query

    def link(key: str, value: int | None) -> str | None:
        if value is None:
            return None
        return f"{base_path}?{urlencode({**params, key: value})}"

    return {"next": link("after", page.after), "previous": link("before", page.before)}


def wants_fragment(request: Request) -> bool:
    """An htmx request for the list alone (not a history restore, which needs the page)."""
    headers = request.headers
    return bool(headers.get("HX-Request")) and not headers.get("HX-History-Restore-Request")


def not_found(request: Request, who: Principal, detail: str) -> Response:
    """A 404 page saying what was not found."""
    return render(request, "dashboard/not_found.html", who, status_code=404, detail=detail)
