"""A one-screen summary of the customer base, from SQL aggregates.

"In the last N days" uses the setting ``dormant_days`` (default 90) ending at ``now``
(the workspace clock's). Opens are human opens only: machine opens (privacy proxies) never
update ``last_email_opened``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Engine, Integer, and_, case, func, or_, select

from winback.store import purchases
from winback.store.schema import CHANNELS, contacts, orders


def _count_if(condition: ColumnElement[bool]) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0).cast(Integer)


def base_summary(engine: Engine, *, now: datetime, days: int) -> dict[str, Any]:
    """Customers, orders, revenue, shares without purchase / open / click / visit in the
    ``days`` before ``now``, and consent rates per channel."""
    cutoff = now - timedelta(days=days)

    def quiet(column: Any) -> ColumnElement[bool]:
        return or_(column.is_(None), column < cutoff)

    no_purchase = quiet(contacts.c.last_purchase_at)
    no_open = quiet(contacts.c.last_email_opened)
    no_click = quiet(contacts.c.last_email_link_clicked)
    no_visit = quiet(contacts.c.last_seen)
    columns = [
        func.count().label("customers"),
        _count_if(contacts.c.orders_count > 0).label("buyers"),
        _count_if(no_purchase).label("no_purchase"),
        _count_if(no_open).label("no_open"),
        _count_if(no_click).label("no_click"),
        _count_if(no_visit).label("no_visit"),
        _count_if(and_(no_purchase, no_open, no_click, no_visit)).label("not_active"),
        *(_count_if(contacts.c[f"{c}_consent"].is_(True)).label(c) for c in CHANNELS),
    ]
    with engine.connect() as conn:
        people = conn.execute(select(*columns)).mappings().one()
        order_count, revenue = conn.execute(
            select(func.count(), func.coalesce(func.sum(purchases.net(orders)), 0)).where(
                purchases.counted(orders)
            )
        ).one()
    total = int(people["customers"])

    def share(n: Any) -> float:
        return round(int(n) / total, 4) if total else 0.0

    return {
        "as_of": now,
        "window_days": days,
        "customers": total,
        "customers_with_orders": int(people["buyers"]),
        "orders": int(order_count),
        "revenue": Decimal(revenue).quantize(Decimal("0.01")),
        "share_no_purchase": share(people["no_purchase"]),
        "share_no_open": share(people["no_open"]),
        "share_no_click": share(people["no_click"]),
        "share_no_visit": share(people["no_visit"]),
        "share_not_active": share(people["not_active"]),
        "consent_rate": {c: share(people[c]) for c in CHANNELS},
    }
