"""Crafted data for flow tests: contacts, consent, orders and events that keep the
standard attributes current (as ingest does), and a simulated-time driver."""

from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update

from winback.store.schema import contacts, events, flow_entries, flows, orders, outbox
from winback.workspace import Workspace

_ids = itertools.count()


def make_contacts(
    ws: Workspace,
    n: int,
    *,
    at: datetime,
    consent: bool = True,
    prefix: str = "c",
    **values: Any,
) -> list[int]:
    ids = [f"{prefix}{i}" for i in range(n)]
    with ws.engine.begin() as conn:
        mapping = ws.store.ensure_contacts(ids, at=at, conn=conn)
        conn.execute(
            update(contacts)
            .where(contacts.c.id.in_(list(mapping.values())))
            .values(email_consent=consent, email=contacts.c.customer_id + "@example.com", **values)
        )
    return [mapping[i] for i in ids]


def set_contact(ws: Workspace, contact_id: int, **values: Any) -> None:
    """Change columns of a contact, stamping ``updated_at`` with the workspace clock (the
    incremental segment refresh relies on it)."""
    values.setdefault("updated_at", ws.clock.now())
    with ws.engine.begin() as conn:
        conn.execute(update(contacts).where(contacts.c.id == contact_id).values(**values))


def add_order(ws: Workspace, contact_id: int, *, at: datetime, amount: float = 50.0) -> None:
    with ws.engine.begin() as conn:
        conn.execute(
            insert(orders).values(
                order_id=f"o{next(_ids)}",
                contact_id=contact_id,
                ordered_at=at,
                amount=amount,
                currency="USD",
            )
        )
        conn.execute(
            update(contacts)
            .where(contacts.c.id == contact_id)
            .values(
                first_purchase_at=func.coalesce(contacts.c.first_purchase_at, at),
                last_purchase_at=at,
                orders_count=contacts.c.orders_count + 1,
                revenue_total=contacts.c.revenue_total + amount,
                updated_at=at,
            )
        )


STANDARD = {
    "email_opened": "last_email_opened",
    "email_clicked": "last_email_link_clicked",
    "page_view": "last_seen",
    "product_view": "last_seen",
    "cart_add": "last_seen",
}


def add_event(
    ws: Workspace, contact_id: int, type_: str, *, at: datetime, **properties: Any
) -> None:
    with ws.engine.begin() as conn:
        conn.execute(
            insert(events).values(
                event_key=f"e{next(_ids)}",
                contact_id=contact_id,
                type=type_,
                occurred_at=at,
                properties=properties or None,
                machine=False,
            )
        )
        if type_ in STANDARD:
            conn.execute(
                update(contacts).where(contacts.c.id == contact_id).values({STANDARD[type_]: at})
            )


def messages(ws: Workspace, flow: str | None = None) -> list[tuple[int, str, str]]:
    """(contact_id, step, template) of every outbox row, sorted."""
    q = select(outbox.c.contact_id, outbox.c.step, outbox.c.template)
    if flow:
        q = q.where(outbox.c.flow == flow)
    with ws.engine.connect() as conn:
        return sorted((int(a), b, c) for a, b, c in conn.execute(q))


def sent_to(ws: Workspace, flow: str) -> dict[int, list[str]]:
    """contact_id -> templates queued for it, in order."""
    out: dict[int, list[str]] = {}
    with ws.engine.connect() as conn:
        for cid, template in conn.execute(
            select(outbox.c.contact_id, outbox.c.template)
            .where(outbox.c.flow == flow)
            .order_by(outbox.c.id)
        ):
            out.setdefault(int(cid), []).append(template)
    return out


def entries(ws: Workspace, flow: str) -> dict[int, dict[str, Any]]:
    """contact_id -> latest entry (status, step, exit_reason, holdout, branch, path)."""
    fe = flow_entries
    with ws.engine.connect() as conn:
        rows = conn.execute(
            select(
                fe.c.contact_id,
                fe.c.status,
                fe.c.step,
                fe.c.exit_reason,
                fe.c.holdout,
                fe.c.branch,
                fe.c.path,
            )
            .join(flows, flows.c.id == fe.c.flow_id)
            .where(flows.c.key == flow)
            .order_by(fe.c.id)
        )
        return {int(r.contact_id): dict(r._mapping) for r in rows}


def entry_count(ws: Workspace, flow: str) -> int:
    with ws.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(flow_entries.join(flows, flows.c.id == flow_entries.c.flow_id))
                .where(flows.c.key == flow)
            ).scalar_one()
        )


def run_days(
    ws: Workspace, start: datetime, days: int, *, step: timedelta = timedelta(days=1)
) -> None:
    """Tick once per ``step`` from ``start`` (inclusive) for ``days`` days."""
    now = start
    while now <= start + timedelta(days=days):
        ws.flows.tick(now)
        now += step


def birthday_on(day: date, years_ago: int = 30) -> date:
    return day.replace(year=day.year - years_ago)
