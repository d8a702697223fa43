"""WooCommerce: the orders and customers CSV of WooCommerce's Customer / Order / Coupon
Export (default format).

Orders: one row per order; ``status`` (``completed``, ``processing``, ``on-hold``,
``pending``, ``cancelled``, ``refunded``, ``failed``; with or without the ``wc-`` prefix),
``order_total``, ``refunded_total``, ``line_items`` (items separated by ``;``, each
``key:value`` pairs separated by ``|``) and ``coupon_items``. A guest checkout has
``customer_id`` 0: it is not a customer id, so the order finds its contact by
``billing_email``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from winback.ingest.presets import Columns, cell
from winback.ingest.presets._values import phone, timestamp
from winback.ingest.readers import Record

STATUS = {
    "completed": "paid",
    "processing": "paid",
    "on-hold": "pending",
    "pending": "pending",
    "checkout-draft": "pending",
    "draft": "pending",
    "cancelled": "cancelled",
    "refunded": "refunded",
    "failed": "failed",
}

ORDER_COLUMNS = [
    "order_id",
    "customer_id",
    "email",
    "ordered_at",
    "amount",
    "currency",
    "items",
    "coupon",
    "status",
    "refunded",
]


def order_status(text: str) -> str:
    word = text.strip().lower().removeprefix("wc-")
    return STATUS.get(word, word)


def _pairs(text: str) -> list[dict[str, str]]:
    """``a:1|b:2;a:3|b:4`` as ``[{a: 1, b: 2}, {a: 3, b: 4}]``."""
    found = []
    for chunk in text.split(";"):
        fields: dict[str, str] = {}
        for pair in chunk.split("|"):
            key, sep, value = pair.partition(":")
            if sep and key.strip():
                fields[key.strip()] = value.strip()
        if fields:
            found.append(fields)
    return found


def _items(text: str) -> str:
    items: list[dict[str, Any]] = []
    for fields in _pairs(text):
        item: dict[str, Any] = {"name": fields.get("name", "")}
        if fields.get("sku"):
            item["sku"] = fields["sku"]
        if fields.get("product_id"):
            item["product_id"] = fields["product_id"]
        qty = fields.get("quantity", "")
        if qty:
            item["quantity"] = int(qty) if qty.isdigit() else qty
        if fields.get("total"):
            item["total"] = fields["total"]
        items.append(item)
    return json.dumps(items, ensure_ascii=False) if items else ""


def orders(cols: Columns, records: Iterator[Record]) -> tuple[list[str], Iterator[Record]]:
    i_order = cols.need("order_id", "order_number")
    i_customer = cols.find("customer_id")
    i_email = cols.find("billing_email", "customer_email")
    i_date = cols.need("order_date", "date_created")
    i_total = cols.need("order_total", "total")
    i_currency = cols.find("order_currency", "currency")
    i_items = cols.find("line_items")
    i_coupons = cols.find("coupon_items")
    i_status = cols.need("status")
    i_refunded = cols.find("refunded_total", "order_refunded")

    def rows() -> Iterator[Record]:
        for record in records:
            if record.problem is not None:
                yield record
                continue
            v = record.values
            customer = cell(v, i_customer)
            coupons = [c.get("code", "") for c in _pairs(cell(v, i_coupons))]
            yield Record(
                record.line,
                [
                    cell(v, i_order),
                    "" if customer in ("", "0") else customer,  # 0: a guest checkout
                    cell(v, i_email),
                    timestamp(cell(v, i_date)),
                    cell(v, i_total),
                    cell(v, i_currency),
                    _items(cell(v, i_items)),
                    next((c for c in coupons if c), ""),
                    order_status(cell(v, i_status)),
                    cell(v, i_refunded).lstrip("-"),  # some versions export refunds negative
                ],
            )

    return ORDER_COLUMNS, rows()


CUSTOMER_COLUMNS = ["customer_id", "email", "phone", "first_name", "last_name", "created_at"]


def customers(cols: Columns, records: Iterator[Record]) -> tuple[list[str], Iterator[Record]]:
    i_id = cols.need("customer_id", "id")
    i_email = cols.need("email", "billing_email")
    i_phone = cols.find("billing_phone", "phone")
    i_first = cols.find("first_name", "billing_first_name")
    i_last = cols.find("last_name", "billing_last_name")
    i_created = cols.find("date_registered", "date_created")

    def rows() -> Iterator[Record]:
        for record in records:
            if record.problem is not None:
                yield record
                continue
            v = record.values
            customer = cell(v, i_id)
            yield Record(
                record.line,
                [
                    "" if customer == "0" else customer,
                    cell(v, i_email),
                    phone(cell(v, i_phone)),
                    cell(v, i_first),
                    cell(v, i_last),
                    timestamp(cell(v, i_created)),
                ],
            )

    return CUSTOMER_COLUMNS, rows()
