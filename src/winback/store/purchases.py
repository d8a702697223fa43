"""Which orders count as purchases.

An order carries its ``status`` and the ``refunded`` part of its amount. It is a *counted
purchase* when its status is ``paid`` and nothing, or less than its amount, was refunded
(a free order counts); it then counts
at its net amount (``amount - refunded``). Only counted purchases feed the contacts'
purchase attributes (``orders_count``, ``revenue_total``, first and last purchase), RFM, the
models, segment conditions on purchases and revenue figures. A cancelled, failed, pending or
fully refunded order stays stored (with its items and coupon) but counts nowhere.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import and_, literal_column, or_
from sqlalchemy.sql.elements import ColumnElement

#: The statuses an order can have; the first is the default.
ORDER_STATUSES = ("paid", "pending", "cancelled", "refunded", "failed")
PAID = "paid"

#: The same rule as :func:`counted`, as SQL text over a table's columns (raw-driver paths).
COUNTED_SQL = "status = 'paid' AND (refunded = 0 OR refunded < amount)"
NET_SQL = "(amount - refunded)"


def counted(orders: Any) -> ColumnElement[bool]:
    """The condition "this order is a counted purchase" over a table or selectable with
    ``status``, ``refunded`` and ``amount`` columns."""
    # A literal, not a parameter: the statement is also compiled once to SQL text.
    paid: ColumnElement[str] = literal_column(f"'{PAID}'")
    refunds = orders.c.refunded
    return and_(
        orders.c.status == paid, or_(refunds == literal_column("0"), refunds < orders.c.amount)
    )


def net(orders: Any) -> ColumnElement[Any]:
    """The amount an order counts for (meaningful for counted purchases)."""
    result: ColumnElement[Any] = orders.c.amount - orders.c.refunded
    return result


def is_counted(status: str, amount: Decimal | str | float, refunded: Decimal | str | float) -> bool:
    """:func:`counted` for one order in Python."""
    refunds = Decimal(str(refunded))
    return status == PAID and (refunds == 0 or refunds < Decimal(str(amount)))
