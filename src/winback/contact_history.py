"""What happened to one contact, newest first: its orders, events and messages as one
timeline, read a page at a time, and its consent log.

Each source is read through its index on the contact (``ix_orders_contact_ordered``,
``ix_events_contact_type_at``, ``ix_outbox_contact_channel_sent``, ``ix_consent_log_contact``)
and never more rows than the page asked for need: a page of the timeline reads at most
``offset + limit + 1`` rows of each source, whatever the size of the shop."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from winback.store.schema import consent_log, events, orders, outbox

#: The kinds of a timeline's items, in the order shown for one instant.
KINDS = ("order", "message", "event")


@dataclass(frozen=True)
class Item:
    """One thing that happened: an order, an event or a message."""

    kind: str
    at: datetime
    id: int
    title: str
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TimelinePage:
    items: list[Item]
    offset: int
    limit: int
    more: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": [i.to_dict() for i in self.items],
            "offset": self.offset,
            "limit": self.limit,
            "more": self.more,
        }


def _orders(conn: Connection, contact_id: int, n: int) -> list[Item]:
    o = orders
    rows = conn.execute(
        select(o.c.id, o.c.order_id, o.c.ordered_at, o.c.amount, o.c.currency, o.c.status,
               o.c.refunded, o.c.coupon, o.c["items"])
        .where(o.c.contact_id == contact_id)
        .order_by(o.c.ordered_at.desc(), o.c.id.desc())
        .limit(n)
    ).mappings()  # fmt: skip
    return [
        Item(
            "order",
            r["ordered_at"],
            int(r["id"]),
            f"Order {r['order_id']}",
            {
                "order_id": r["order_id"],
                "amount": float(r["amount"]),
                "currency": r["currency"],
                "status": r["status"],
                "refunded": float(r["refunded"] or 0),
                "coupon": r["coupon"],
                "item_count": len(r["items"] or []),
            },
        )
        for r in rows
    ]


def _events(conn: Connection, contact_id: int, n: int) -> list[Item]:
    e = events
    rows = conn.execute(
        select(e.c.id, e.c.type, e.c.occurred_at, e.c.properties, e.c.message_id, e.c.machine)
        .where(e.c.contact_id == contact_id)
        .order_by(e.c.occurred_at.desc(), e.c.id.desc())
        .limit(n)
    ).mappings()
    return [
        Item(
            "event",
            r["occurred_at"],
            int(r["id"]),
            str(r["type"]).replace("_", " "),
            {
                "type": r["type"],
                "properties": r["properties"] or {},
                "message_id": r["message_id"],
                "machine": bool(r["machine"]),
            },
        )
        for r in rows
    ]


def _messages(conn: Connection, contact_id: int, n: int) -> list[Item]:
    m = outbox
    at = func.coalesce(m.c.sent_at, m.c.created_at)
    rows = conn.execute(
        select(m.c.id, m.c.channel, m.c.template, m.c.variant, m.c.flow, m.c.step, m.c.status,
               m.c.created_at, m.c.sent_at, m.c.last_error)
        .where(m.c.contact_id == contact_id)
        .order_by(at.desc(), m.c.id.desc())
        .limit(n)
    ).mappings()  # fmt: skip
    return [
        Item(
            "message",
            r["sent_at"] or r["created_at"],
            int(r["id"]),
            f"{r['channel']} {r['template'] or ''}".strip(),
            {
                "channel": r["channel"],
                "template": r["template"],
                "variant": r["variant"],
                "flow": r["flow"],
                "step": r["step"],
                "status": r["status"],
                "created_at": r["created_at"],
                "sent_at": r["sent_at"],
                "last_error": r["last_error"],
            },
        )
        for r in rows
    ]


def timeline(
    conn: Connection, contact_id: int, *, offset: int = 0, limit: int = 50
) -> TimelinePage:
    """Items ``offset`` to ``offset + limit`` of the contact's timeline, newest first (at
    one instant: orders, then messages, then events; then the newest row first)."""
    if offset < 0 or limit < 1:
        raise ValueError("offset must be 0 or more and limit 1 or more")
    want = offset + limit + 1
    merged = [*_orders(conn, contact_id, want), *_messages(conn, contact_id, want),
              *_events(conn, contact_id, want)]  # fmt: skip
    rank = {kind: i for i, kind in enumerate(KINDS)}
    merged.sort(key=lambda i: (-i.at.timestamp(), rank[i.kind], -i.id))
    return TimelinePage(
        merged[offset : offset + limit], offset, limit, len(merged) > offset + limit
    )


def consent_history(conn: Connection, contact_id: int, *, limit: int = 100) -> list[dict[str, Any]]:
    """The contact's consent changes, newest first: channel, granted, when and where from."""
    c = consent_log
    return [
        dict(r)
        for r in conn.execute(
            select(c.c.channel, c.c.granted, c.c.at, c.c.source)
            .where(c.c.contact_id == contact_id)
            .order_by(c.c.at.desc(), c.c.id.desc())
            .limit(limit)
        ).mappings()
    ]


__all__ = ["KINDS", "Item", "TimelinePage", "consent_history", "timeline"]
