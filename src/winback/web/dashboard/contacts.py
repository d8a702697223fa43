"""The Contacts pages: search by email, id or name (``/contacts``, a page at a time), and
one contact (``/contacts/<id>``): its profile, analytics, consent with its log, tags with
their history, the flows it is in and its timeline of orders, events and messages, newest
first and paged. The profile is ``winback contacts show --json``'s
(:meth:`winback.contacts.Contacts.profile`)."""

from __future__ import annotations

from fastapi import Query, Request, Response

from winback.contact_history import consent_history, timeline
from winback.contact_search import search
from winback.errors import NotFound
from winback.store.schema import ANALYTICS_COLUMNS
from winback.web.auth import DashboardUserDep
from winback.web.dashboard import render, router
from winback.web.deps import get_workspace

PAGE = 50
#: The standard attributes shown in the profile, in order (analytics apart).
PROFILE = (
    "customer_id",
    "email",
    "phone",
    "first_name",
    "last_name",
    "birthday",
    "timezone",
    "locale",
    "created_at",
    "first_purchase_at",
    "last_purchase_at",
    "orders_count",
    "revenue_total",
    "last_email_opened",
    "last_email_link_clicked",
    "last_seen",
    "updated_at",
    "erased_at",
)


@router.get("/contacts")
def contacts_page(
    request: Request,
    who: DashboardUserDep,
    q: str = Query("", max_length=320),
    before: int | None = Query(None, ge=1),
) -> Response:
    ws = get_workspace(request)
    with ws.engine.connect() as conn:
        found = search(conn, q, before=before, limit=PAGE)
    return render(request, "dashboard/contacts.html", who, page=found, q=q, before=before)


@router.get("/contacts/{contact_id}")
def contact_page(
    request: Request,
    contact_id: int,
    who: DashboardUserDep,
    offset: int = Query(0, ge=0, le=1_000_000),
) -> Response:
    ws = get_workspace(request)
    try:
        profile = ws.contacts.profile(f"#{contact_id}")
    except NotFound:
        return render(
            request, "dashboard/not_found.html", who, status_code=404, what=f"contact #{contact_id}"
        )
    with ws.engine.connect() as conn:
        events = timeline(conn, contact_id, offset=offset, limit=PAGE)
        consents = consent_history(conn, contact_id)
    return render(
        request,
        "dashboard/contact.html",
        who,
        profile=profile,
        timeline=events,
        consent_log=consents,
        standard=PROFILE,
        analytics=[c for c in ANALYTICS_COLUMNS if profile["attributes"].get(c) is not None],
        templates=ws.delivery.templates.names(),
    )
