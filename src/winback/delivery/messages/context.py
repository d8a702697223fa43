"""The render context of messages, built set-based for a batch of contacts: one query for
the contacts, one for their latest orders, one for their tags."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, select

from winback.config import Settings
from winback.store.schema import ANALYTICS_COLUMNS, contact_tags, contacts, orders


@dataclass(frozen=True, slots=True)
class ContactData:
    """What the store knows about one contact, for rendering and policies."""

    contact: dict[str, Any]
    last_order: dict[str, Any] | None
    tags: list[str]


def _chunks(items: Sequence[int], size: int = 900) -> Iterable[Sequence[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def load_contacts(conn: Connection, contact_ids: Iterable[int]) -> dict[int, ContactData]:
    """Contacts with their latest order and tags, by id (three queries per 900 contacts)."""
    ids = sorted(set(contact_ids))
    people: dict[int, dict[str, Any]] = {}
    last: dict[int, dict[str, Any]] = {}
    tags: dict[int, list[str]] = defaultdict(list)
    for chunk in _chunks(ids):
        result = conn.execute(select(contacts).where(contacts.c.id.in_(chunk)))
        keys = tuple(result.keys())  # once per query: a RowMapping per row costs more
        at = keys.index("id")
        for row in result:
            people[int(row[at])] = dict(zip(keys, row, strict=True))
        latest = (
            select(orders.c.contact_id, func.max(orders.c.ordered_at).label("at"))
            .where(orders.c.contact_id.in_(chunk))
            .group_by(orders.c.contact_id)
            .subquery()
        )
        result = conn.execute(
            select(orders).join(
                latest,
                and_(
                    orders.c.contact_id == latest.c.contact_id,
                    orders.c.ordered_at == latest.c.at,
                ),
            )
        )
        keys = tuple(result.keys())
        at = keys.index("contact_id")
        for row in result:
            last[int(row[at])] = dict(zip(keys, row, strict=True))
        for cid, tag in conn.execute(
            select(contact_tags.c.contact_id, contact_tags.c.tag)
            .where(contact_tags.c.contact_id.in_(chunk))
            .order_by(contact_tags.c.tag)
        ):
            tags[int(cid)].append(str(tag))
    return {
        cid: ContactData(person, last.get(cid), tags.get(cid, [])) for cid, person in people.items()
    }


def render_context(
    data: ContactData,
    *,
    settings: Settings,
    message: Mapping[str, Any],
    now: datetime,
    coupon: str | None = None,
    unsubscribe_url: str = "",
    feedback_url: str = "",
) -> dict[str, Any]:
    """The variables a template sees (see :data:`winback.delivery.messages.templates.VARIABLES`)."""
    from winback.delivery.messages.templates import CONTACT_FIELDS

    person = dict.fromkeys(CONTACT_FIELDS)
    person.update(data.contact)
    custom = person.get("attributes") or {}
    names = [n for n in (person.get("first_name"), person.get("last_name")) if n]
    person["full_name"] = " ".join(names)
    order = data.last_order
    if order is not None:
        order = dict(order)
        order["items"] = list(order.get("items") or [])
    payload = message.get("payload") or {}
    return {
        "contact": person,
        "custom": custom,
        "tags": data.tags,
        "last_order": order,
        "products": order["items"] if order else [],
        "rfm": {
            "r": person.get("rfm_r"),
            "f": person.get("rfm_f"),
            "m": person.get("rfm_m"),
            "segment": person.get("rfm_segment"),
        },
        "analytics": {k: person.get(k) for k in ANALYTICS_COLUMNS if not k.startswith("rfm_")},
        "coupon": {"code": coupon, **(payload.get("coupon_info") or {})} if coupon else None,
        "unsubscribe_url": unsubscribe_url,
        "feedback_url": feedback_url,
        "shop": {
            "name": settings.shop_name,
            "url": settings.shop_url,
            "currency": settings.currency,
        },
        "message": {
            "id": message.get("id"),
            "flow": message.get("flow"),
            "step": message.get("step"),
            "variant": message.get("variant"),
            "template": message.get("template"),
        },
        "data": payload.get("data") or {},
        "now": now,
    }
