"""Shopify: the orders export (Orders > Export) and the customers export (Customers >
Export), CSV.

Orders: one row per line item; the first row of an order carries the order's figures
(``Financial Status``, ``Total``, ``Refunded Amount``, ``Cancelled at``, ``Discount Code``),
the following rows of the same ``Name`` only repeat it with their ``Lineitem ...`` cells.
Consecutive rows of one ``Name`` become one order whose ``items`` are its line items. The
order's id is Shopify's numeric ``Id`` (what the webhooks name, refunds included; the
``Name`` such as ``#1001`` when the export has no ``Id``). The export has no customer id:
orders find their contact by ``Email``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from winback.ingest.presets import Columns, cell
from winback.ingest.presets._values import phone, timestamp, yes_no
from winback.ingest.readers import Record

#: Shopify's ``Financial Status`` as our order status (``Cancelled at`` set: cancelled).
FINANCIAL_STATUS = {
    "paid": "paid",
    "partially_paid": "paid",
    "partially_refunded": "paid",
    "authorized": "paid",
    "pending": "pending",
    "refunded": "refunded",
    "voided": "cancelled",
    "expired": "failed",
}

ORDER_COLUMNS = [
    "order_id",
    "email",
    "ordered_at",
    "amount",
    "currency",
    "items",
    "coupon",
    "status",
    "refunded",
]


#: The positions in an order row of what every order needs (id, email, time, total).
REQUIRED = (0, 1, 2, 3)


def order_status(financial: str, cancelled_at: str) -> str:
    if cancelled_at:
        return "cancelled"
    word = financial.strip().lower()
    return FINANCIAL_STATUS.get(word, word)


class _OrderRows:
    """The export's columns, and an order row from its first line and its line items."""

    def __init__(self, cols: Columns) -> None:
        self.name = cols.need("Name")
        self.email = cols.need("Email")
        self.financial = cols.need("Financial Status")
        self.created = cols.need("Created at")
        self.total = cols.need("Total")
        self.currency = cols.find("Currency")
        self.code = cols.find("Discount Code")
        self.refunded = cols.find("Refunded Amount")
        self.cancelled = cols.find("Cancelled at")
        self.qty = cols.find("Lineitem quantity")
        self.item_name = cols.find("Lineitem name")
        self.price = cols.find("Lineitem price")
        self.sku = cols.find("Lineitem sku")
        self.id = cols.find("Id")

    def item(self, v: list[Any]) -> dict[str, Any] | None:
        name, sku = cell(v, self.item_name), cell(v, self.sku)
        if not (name or sku):
            return None
        found: dict[str, Any] = {"name": name}
        if sku:
            found["sku"] = sku
        qty = cell(v, self.qty)
        if qty:
            found["quantity"] = int(qty) if qty.isdigit() else qty
        price = cell(v, self.price)
        if price:
            found["price"] = price
        return found

    def start(self, v: list[Any]) -> list[Any]:
        return [
            cell(v, self.id) or cell(v, self.name),
            cell(v, self.email),
            timestamp(cell(v, self.created)),
            cell(v, self.total),
            cell(v, self.currency),
            [],
            cell(v, self.code),
            order_status(cell(v, self.financial), cell(v, self.cancelled)),
            cell(v, self.refunded),
        ]

    def complete(self, order: list[Any], v: list[Any]) -> None:
        """Fill what the order's first row lacked from a later row of it."""
        if all(order[i] for i in REQUIRED):
            return
        for i, value in enumerate(self.start(v)):
            if i != 5 and not order[i] and value:
                order[i] = value


def _done(line: int, order: list[Any]) -> Record:
    items = order[5]
    order[5] = json.dumps(items, ensure_ascii=False) if items else ""
    return Record(line, order)


def orders(cols: Columns, records: Iterator[Record]) -> tuple[list[str], Iterator[Record]]:
    rows = _OrderRows(cols)

    def grouped() -> Iterator[Record]:
        line, order, name = 0, None, None
        for record in records:
            if record.problem is not None:
                yield record
                continue
            v = record.values
            if order is not None and cell(v, rows.name) == name:
                rows.complete(order, v)
            else:
                if order is not None:
                    yield _done(line, order)
                line, order, name = record.line, rows.start(v), cell(v, rows.name)
            found = rows.item(v)
            if found is not None:
                order[5].append(found)
        if order is not None:
            yield _done(line, order)

    return ORDER_COLUMNS, grouped()


CUSTOMER_COLUMNS = [
    "customer_id",
    "email",
    "phone",
    "first_name",
    "last_name",
    "email_consent",
    "sms_consent",
    "tags",
    "note",
]


def customers(cols: Columns, records: Iterator[Record]) -> tuple[list[str], Iterator[Record]]:
    i_id = cols.find("Customer ID", "ID")
    i_email = cols.need("Email")
    i_first = cols.find("First Name")
    i_last = cols.find("Last Name")
    i_phone = cols.find("Phone")
    i_address_phone = cols.find("Default Address Phone")
    i_email_ok = cols.find("Accepts Email Marketing", "Accepts Marketing")
    i_sms_ok = cols.find("Accepts SMS Marketing")
    i_tags = cols.find("Tags")
    i_note = cols.find("Note")

    def rows() -> Iterator[Record]:
        for record in records:
            if record.problem is not None:
                yield record
                continue
            v = record.values
            yield Record(
                record.line,
                [
                    phone(cell(v, i_id)),
                    cell(v, i_email),
                    phone(cell(v, i_phone) or cell(v, i_address_phone)),
                    cell(v, i_first),
                    cell(v, i_last),
                    yes_no(cell(v, i_email_ok)),
                    yes_no(cell(v, i_sms_ok)),
                    cell(v, i_tags),
                    cell(v, i_note),
                ],
            )

    return CUSTOMER_COLUMNS, rows()
