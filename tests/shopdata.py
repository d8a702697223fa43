"""A tiny shop written straight into the store with SQLAlchemy, for segment and flow tests
(independent of the importer). :func:`maintain` recomputes the maintained contact columns the
way ingestion keeps them (machine events excluded), set-based."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, insert, select, update

from winback.store.schema import contacts, events, orders
from winback.workspace import Workspace

_keys = itertools.count(1)


def add_contact(ws: Workspace, customer_id: str, **values: Any) -> int:
    now = ws.clock.now()
    row = {"customer_id": customer_id, "attributes": {}, "created_at": now, "updated_at": now}
    row.update(values)
    with ws.engine.begin() as c:
        return int(c.execute(insert(contacts).values(row).returning(contacts.c.id)).scalar_one())


def add_order(
    ws: Workspace,
    contact_id: int,
    at: datetime,
    amount: float = 10.0,
    *,
    items: Any = None,
    coupon: str | None = None,
    currency: str = "USD",
    maintain_columns: bool = True,
) -> None:
    with ws.engine.begin() as c:
        c.execute(
            insert(orders).values(
                order_id=f"o{next(_keys)}",
                contact_id=contact_id,
                ordered_at=at,
                amount=amount,
                currency=currency,
                items=items,
                coupon=coupon,
            )
        )
        if maintain_columns:
            maintain(c, [contact_id], at=ws.clock.now())


def add_event(
    ws: Workspace,
    contact_id: int,
    type_: str,
    at: datetime,
    *,
    properties: dict[str, Any] | None = None,
    machine: bool = False,
    maintain_columns: bool = True,
) -> None:
    with ws.engine.begin() as c:
        c.execute(
            insert(events).values(
                event_key=f"e{next(_keys)}",
                contact_id=contact_id,
                type=type_,
                occurred_at=at,
                properties=properties,
                machine=machine,
            )
        )
        if maintain_columns:
            maintain(c, [contact_id], at=ws.clock.now())


def _last(types: tuple[str, ...], *, human: bool = True) -> Any:
    """Machine opens and clicks do not count; site visits count whatever their flag."""
    where = [events.c.contact_id == contacts.c.id, events.c.type.in_(types)]
    if human:
        where.append(events.c.machine.is_(False))
    return select(func.max(events.c.occurred_at)).where(*where).scalar_subquery()


def maintain(conn: Connection, contact_ids: list[int] | None, *, at: datetime) -> None:
    """Recompute the maintained columns (and bump ``updated_at``) of these contacts (all when
    None)."""
    of_contact = orders.c.contact_id == contacts.c.id
    stmt = update(contacts).values(
        first_purchase_at=select(func.min(orders.c.ordered_at)).where(of_contact).scalar_subquery(),
        last_purchase_at=select(func.max(orders.c.ordered_at)).where(of_contact).scalar_subquery(),
        orders_count=select(func.count()).where(of_contact).scalar_subquery(),
        revenue_total=select(func.coalesce(func.sum(orders.c.amount), 0))
        .where(of_contact)
        .scalar_subquery(),
        last_email_opened=_last(("email_opened",)),
        last_email_link_clicked=_last(("email_clicked",)),
        last_seen=_last(("page_view", "product_view", "cart_add"), human=False),
        updated_at=at,
    )
    if contact_ids is not None:
        stmt = stmt.where(and_(contacts.c.id.in_(contact_ids)))
    conn.execute(stmt)


def customer_ids(ws: Workspace, where: Any) -> set[str]:
    with ws.engine.connect() as c:
        return set(c.execute(select(contacts.c.customer_id).where(where)).scalars())
