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


def orders(cols: Columns, records: Iterator[Record]) -> tuple[list[str], Iterator[Record]]:
    i_name = cols.need("Name")
    i_email = cols.need("Email")
    i_financial = cols.need("Financial Status")
    i_created = cols.need("Created at")
    i_total = cols.need("Total")
    i_currency = cols.find("Currency")
    i_code = cols.find("Discount Code")
    i_refunded = cols.find("Refunded Amount")
    i_cancelled = cols.find("Cancelled at")
    i_qty = cols.find("Lineitem quantity")
    i_item = cols.find("Lineitem name")
    i_price = cols.find("Lineitem price")
    i_sku = cols.find("Lineitem sku")
    i_id = cols.find("Id")

    def item(v: list[Any]) -> dict[str, Any] | None:
        name, sku = cell(v, i_item), cell(v, i_sku)
        if not (name or sku):
            return None
        found: dict[str, Any] = {"name": name}
        if sku:
            found["sku"] = sku
        qty = cell(v, i_qty)
        if qty:
            found["quantity"] = int(qty) if qty.isdigit() else qty
        price = cell(v, i_price)
        if price:
            found["price"] = price
        return found

    def start(v: list[Any]) -> list[Any]:
        return [
            cell(v, i_id) or cell(v, i_name),
            cell(v, i_email),
            timestamp(cell(v, i_created)),
            cell(v, i_total),
            cell(v, i_currency),
            [],
            cell(v, i_code),
            order_status(cell(v, i_financial), cell(v, i_cancelled)),
            cell(v, i_refunded),
        ]

    def done(line: int, order: list[Any]) -> Record:
        items = order[5]
        order[5] = json.dumps(items, ensure_ascii=False) if items else ""
        return Record(line, order)

    def grouped() -> Iterator[Record]:
        line, order, name = 0, None, None
        for record in records:
            if record.problem is not None:
                yield record
                continue
            v = record.values
            if order is not None and cell(v, i_name) == name:
                if not all(order[i] for i in REQUIRED):  # a later row may carry what it lacks
                    for i, value in enumerate(start(v)):
                        if i != 5 and not order[i] and value:
                            order[i] = value
            else:
                if order is not None:
                    yield done(line, order)
                line, order, name = record.line, start(v), cell(v, i_name)
            found = item(v)
            if found is not None:
                order[5].append(found)
        if order is not None:
            yield done(line, order)

    return ORDER_COLUMNS, grouped()


CUSTOMER_COLUMNS = [
    "customer_id",
    "email",
    "phone",
    "first_name",
    "last_name",
    "email_consent",
    "sms_consent",
    "shopify_tags",
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
