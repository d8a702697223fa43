"""WooCommerce: orders and customers, from the Customer / Order / Coupon Export extension's
CSV (default format) or from the REST API (``GET /wp-json/wc/v3/orders`` and
``/customers``, one object per line of a JSON Lines file; a customer's phone is its
``billing.phone``, its creation time ``date_created_gmt``).

CSV orders: one row per order; ``status`` (``completed``, ``processing``, ``on-hold``,
``pending``, ``cancelled``, ``refunded``, ``failed``; with or without the ``wc-`` prefix),
``order_total``, ``refunded_total``, ``line_items`` (items separated by ``;``, each
``key:value`` pairs separated by ``|``) and ``coupon_items``. REST orders: ``id``,
``status``, ``customer_id``, ``billing`` (its ``email``), ``currency``, ``total``,
``date_created_gmt`` (UTC; else ``date_created``, the site's time), ``line_items``,
``coupon_lines`` and ``refunds`` (``id``, ``reason``, ``total``; the refunded amount is
the sum of their totals, which the API writes negative, without the sign). A guest checkout has ``customer_id`` 0: it is not a customer id, so
the order finds its contact by its billing email.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal, InvalidOperation
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
    if cols.find("order_id", "order_number") is None and cols.find("billing") is not None:
        return rest_orders(cols, records)
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


def _raw(values: list[Any], i: int | None) -> Any:
    """A JSON cell as it is (an object, a list), None when absent."""
    return values[i] if i is not None and i < len(values) else None


def _field(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, Mapping) else None


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _refunded(refunds: Any) -> str:
    """The sum of an order's refunds (the API writes each refund's total negative)."""
    if not isinstance(refunds, list) or not refunds:
        return ""
    total = Decimal(0)
    for refund in refunds:
        try:
            total += abs(Decimal(_text(_field(refund, "total")) or "0"))
        except InvalidOperation:
            return _text(_field(refund, "total"))  # left for the canonical check to reject
    return str(total)


def _rest_items(lines: Any) -> str:
    if not isinstance(lines, list):
        return ""
    items: list[dict[str, Any]] = []
    for line in lines:
        item: dict[str, Any] = {"name": _text(_field(line, "name"))}
        for key in ("sku", "product_id", "quantity", "total"):
            value = _field(line, key)
            if value not in (None, ""):
                item[key] = value
        items.append(item)
    return json.dumps(items, ensure_ascii=False) if items else ""


def _utc(text: str) -> str:
    """A ``..._gmt`` time, written without an offset, as UTC."""
    if text.endswith("Z") or re.search(r"[+-]\d{2}:?\d{2}$", text.partition("T")[2]):
        return text
    return f"{text}+00:00"


def rest_orders(cols: Columns, records: Iterator[Record]) -> tuple[list[str], Iterator[Record]]:
    """Orders as the REST API gives them (see the module docstring)."""
    i_order = cols.need("id")
    i_customer = cols.find("customer_id")
    i_billing = cols.need("billing")
    i_gmt = cols.find("date_created_gmt")
    i_local = cols.find("date_created")
    if i_gmt is None and i_local is None:
        cols.need("date_created_gmt")
    i_total = cols.need("total")
    i_currency = cols.find("currency")
    i_status = cols.need("status")
    i_items = cols.find("line_items")
    i_coupons = cols.find("coupon_lines")
    i_refunds = cols.find("refunds")

    def rows() -> Iterator[Record]:
        for record in records:
            if record.problem is not None:
                yield record
                continue
            v = record.values
            customer = cell(v, i_customer)
            gmt = cell(v, i_gmt)
            coupons = _raw(v, i_coupons)
            coupon = (
                _text(_field(coupons[0], "code")) if isinstance(coupons, list) and coupons else ""
            )
            yield Record(
                record.line,
                [
                    cell(v, i_order),
                    "" if customer in ("", "0") else customer,  # 0: a guest checkout
                    _text(_field(_raw(v, i_billing), "email")),
                    _utc(gmt) if gmt else timestamp(cell(v, i_local)),
                    cell(v, i_total),
                    cell(v, i_currency),
                    _rest_items(_raw(v, i_items)),
                    coupon,
                    order_status(cell(v, i_status)),
                    _refunded(_raw(v, i_refunds)),
                ],
            )

    return ORDER_COLUMNS, rows()


CUSTOMER_COLUMNS = ["customer_id", "email", "phone", "first_name", "last_name", "created_at"]


def customers(cols: Columns, records: Iterator[Record]) -> tuple[list[str], Iterator[Record]]:
    i_id = cols.need("customer_id", "id")
    i_email = cols.need("email", "billing_email")
    i_phone = cols.find("billing_phone", "phone")
    i_billing = cols.find("billing")  # the REST API's customer: the phone is billing.phone
    i_first = cols.find("first_name", "billing_first_name")
    i_last = cols.find("last_name", "billing_last_name")
    i_gmt = cols.find("date_created_gmt")
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
                    phone(cell(v, i_phone) or _text(_field(_raw(v, i_billing), "phone"))),
                    cell(v, i_first),
                    cell(v, i_last),
                    _utc(gmt) if (gmt := cell(v, i_gmt)) else timestamp(cell(v, i_created)),
                ],
            )

    return CUSTOMER_COLUMNS, rows()
