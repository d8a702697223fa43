"""Events files: ``event_id,customer_id,type,occurred_at,properties`` (properties as JSON).

Optional columns ``message_id`` and ``machine`` may also be given as properties. Rows of type
``purchase`` are orders (order id, amount, currency, items, coupon from the properties) and go
to the orders table. Events are deduplicated by ``event_id``, or by a content hash when the
file gives none. ``email_opened`` / ``email_clicked`` flagged as machine (privacy proxies,
link scanners) are stored with ``machine`` true and do not count as engagement.
``email_unsubscribed`` revokes email consent (logged). The contacts' attributes and consent
are written by :mod:`winback.store.activity`, as for every other source of activity.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from winback.clock import as_utc
from winback.ingest import bulk, fields
from winback.ingest.fields import FieldError
from winback.ingest.importer import (
    BatchResult,
    Context,
    Refused,
    Reject,
    parse_field,
    required_field,
)
from winback.ingest.orders import OrderRow, TimestampCache, write_orders
from winback.ingest.readers import Record, show_value
from winback.store import activity
from winback.store.purchases import PAID

#: A staged event: (line, event_key, customer_id, type, occurred_at, properties, message_id,
#: machine).
EventRow = tuple[int, str, str, str, str, str | None, str | None, Any]

_TYPE = re.compile(r"^[a-z0-9][a-z0-9_.:-]*$")
_NOT_A_TYPE = "not an event type (lower-case letters, digits and _ . : -)"
AMOUNT_KEYS = ("amount", "value", "revenue", "total")


class Events:
    name = "events"
    canonical: tuple[str, ...] = (
        "event_id",
        "customer_id",
        "type",
        "occurred_at",
        "properties",
        "message_id",
        "machine",
    )
    required: tuple[str, ...] = ("customer_id", "type", "occurred_at")

    def bind(self, columns: list[str], index: dict[str, int], ctx: Context) -> None:
        self.index = index
        self.ts = TimestampCache(ctx)
        self.currency = ctx.currency
        self.flag = ctx.dialect.flag

    def parse(self, record: Record) -> tuple[bool, Any] | Reject:
        """``(True, order_row)`` for purchases, ``(False, event_row)`` otherwise."""
        try:
            return self._parse(record)
        except Refused as refused:
            return Reject(record.line, refused.field, show_value(refused.value), refused.reason)

    def _parse(self, record: Record) -> tuple[bool, Any]:
        v, index = record.values, self.index

        def cell(name: str) -> Any:
            i = index.get(name)
            return v[i] if i is not None else None

        field = "event_id"  # the field being read, named by a FieldError
        try:
            event_id = fields.text(cell(field))
            field = "customer_id"
            customer_id = fields.text(cell(field))
            if customer_id is None:
                raise Refused(field, "missing (every event needs a customer_id)", cell(field))
            field = "type"
            kind = fields.text(cell(field), max_length=64)
            if kind is None:
                raise Refused(field, "missing (every event needs a type)", cell(field))
            kind = kind.lower()
            if not _TYPE.match(kind):
                raise Refused(field, _NOT_A_TYPE, cell(field))
            field = "occurred_at"
            at = self.ts(cell(field))
            if at is None:
                raise Refused(field, "missing (every event needs an occurred_at time)", cell(field))
            field = "properties"
            props = fields.json_object(cell(field)) or {}
        except FieldError as e:
            raise Refused(field, e.reason, cell(field)) from None
        props_json = json.dumps(props, ensure_ascii=False, sort_keys=True, default=str)
        key = event_id or _content_key(customer_id, kind, at, props_json)
        if kind == "purchase":
            return (True, self._purchase(record.line, event_id, key, customer_id, at, props))
        machine, message_id = self._marks(cell("machine"), cell("message_id"), props)
        row: EventRow = (
            record.line,
            key,
            customer_id,
            kind,
            at,
            props_json if props else None,
            message_id,
            self.flag(machine),
        )
        return (False, row)

    @staticmethod
    def _marks(machine_cell: Any, message_cell: Any, props: dict[str, Any]) -> tuple[bool, Any]:
        """``machine`` and ``message_id``: the file's columns, else the properties."""
        try:
            machine = bool(
                fields.boolean(machine_cell)
                if not fields.is_empty(machine_cell)
                else fields.boolean(props.get("machine"))
            )
        except FieldError as e:
            shown = machine_cell if machine_cell is not None else props
            raise Refused("machine", e.reason, shown) from None
        try:
            message_id = fields.text(message_cell) or fields.text(props.get("message_id"))
        except FieldError as e:
            raise Refused("message_id", e.reason, message_cell) from None
        return machine, message_id

    def _purchase(
        self,
        line: int,
        event_id: str | None,
        key: str,
        customer_id: str,
        at: str,
        props: dict[str, Any],
    ) -> OrderRow:
        order_id = (
            parse_field("properties.order_id", fields.text, props.get("order_id")) or event_id
        )
        raw_amount = next((props[k] for k in AMOUNT_KEYS if k in props), None)
        amount = required_field(
            "properties.amount",
            parse_field("properties.amount", fields.decimal, raw_amount),
            "missing (a purchase event needs properties.amount)",
            json.dumps(props),
        )
        currency = parse_field("properties.currency", fields.currency, props.get("currency"))
        items = parse_field("properties.items", fields.items, props.get("items"))
        coupon = parse_field(
            "properties.coupon", lambda x: fields.text(x, max_length=64), props.get("coupon")
        )
        items_json = None if items is None else json.dumps(items, ensure_ascii=False)
        return (
            line,
            order_id or key,
            customer_id,
            at,
            str(amount),
            currency or self.currency,
            items_json,
            coupon,
            PAID,
            "0",
        )

    def write(self, conn: Connection, batch: list[Any], ctx: Context) -> BatchResult:
        orders = [row for is_order, row in batch if is_order]
        events = [row for is_order, row in batch if not is_order]
        result = write_orders(conn, orders, ctx) if orders else BatchResult()
        if events:
            more = _write_events(conn, events, ctx)
            result.imported += more.imported
            result.duplicates += more.duplicates
            result.rejects.extend(more.rejects)
        return result


def _content_key(customer_id: str, kind: str, at: str, props_json: str) -> str:
    digest = hashlib.sha1(
        "\x1f".join((customer_id, kind, at, props_json)).encode("utf-8", "surrogateescape"),
        usedforsecurity=False,
    ).hexdigest()
    return f"sha1:{digest}"


def _write_events(conn: Connection, batch: list[EventRow], ctx: Context) -> BatchResult:
    result = BatchResult()
    rows, first_line = result.keep_first(batch, _duplicate)
    d = ctx.dialect
    now = ctx.now if d.postgres else d.instant(ctx.now)
    cur = bulk.stage(conn, d, "wb_stage_events", rows)
    ctx.report.contacts_created += bulk.create_missing_contacts(
        cur, d, "wb_stage_events", "occurred_at", now
    )
    new = bulk.insert_events(cur, d, ctx.import_id)
    inserted = {str(r[0]) for r in new}
    earlier = (
        bulk.seen_in_this_import(cur, d, "events", ctx.import_id)
        if len(inserted) < len(rows)
        else set()
    )
    result.settle(len(rows), inserted, earlier, first_line, _duplicate)
    for _key, _cid, kind, _at, _machine in new:
        ctx.report.by_type[kind] = ctx.report.by_type.get(kind, 0) + 1
    activity.apply_events(conn, [(r[1], r[2], r[3], r[4]) for r in new], now=ctx.now)
    unsubscribed: dict[int, Any] = {}
    for _key, contact_id, kind, at, _machine in new:
        if kind == "email_unsubscribed":
            when = as_utc(at) if isinstance(at, datetime) else _sqlite_instant(at)
            unsubscribed[contact_id] = max(when, unsubscribed.get(contact_id, when))
    if unsubscribed:
        changed = activity.set_consent(
            conn, unsubscribed, "email", False, source=ctx.source, at=unsubscribed, now=ctx.now
        )
        ctx.report.consent_changes += len(changed)
    return result


def _sqlite_instant(text: str) -> datetime:
    """An instant from the text SQLite stores."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _duplicate(line: int, key: str, where: str) -> Reject:
    return Reject(line, "event_id", key, f"duplicate event: the same event is already on {where}")
