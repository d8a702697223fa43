"""Events arriving through the HTTP API (``POST /api/v1/events`` and ``/events/batch``):
validated, written idempotently, with the contacts' standard attributes moved forward, and
purchases written as orders (which also redeems coupons they carry)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
)
from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite

from winback.clock import as_utc
from winback.delivery.coupons import redeem
from winback.delivery.records import store_events, suppress
from winback.inputs import Instant
from winback.store import activity
from winback.store.driver import driver_rows
from winback.store.repository import Store
from winback.store.schema import contacts, orders
from winback.store.tombstones import erased_among

PURCHASE_TYPES = ("purchase", "order_completed")


class EventIn(BaseModel):
    """One event. ``type`` is a standard type (``page_view``, ``email_opened``, ...),
    ``purchase``, or any custom name."""

    model_config = ConfigDict(extra="forbid")

    customer_id: str = Field(
        min_length=1, max_length=255, pattern=r"^[^\x00]*$", description="The shop's customer id."
    )
    type: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_.:-]*$")
    occurred_at: Instant | None = Field(
        None, description="When it happened (ISO 8601 with offset); default: now."
    )
    event_id: str | None = Field(
        None,
        max_length=200,
        pattern=r"^[^\x00]*$",
        description="The shop's id for the event; repeats are ignored. Default: a hash of the "
        "content.",
    )
    properties: dict[str, Any] = Field(
        default_factory=dict,
        description="Free JSON. NUL characters and lone surrogates in its keys and strings are "
        "stored as U+FFFD; NaN and infinities are refused.",
    )

    @field_validator("properties")
    @classmethod
    def _storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        cleaned: dict[str, Any] = storable(value, "properties")
        return cleaned


#: What stands for a character no store keeps (NUL, a lone UTF-16 surrogate) in properties.
REPLACEMENT = "\ufffd"


def storable(value: Any, where: str, depth: int = 0) -> Any:
    """``value`` as every store can keep it in JSON: NUL characters and lone UTF-16
    surrogates (not Unicode text) in keys and strings become U+FFFD; a non-finite number
    (NaN and infinities are not JSON) or nesting deeper than 32 levels raises ValueError
    naming the place."""
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", REPLACEMENT)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = "".join(REPLACEMENT if "\ud800" <= c <= "\udfff" else c for c in value)
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} at {where} is not a JSON number")
    if isinstance(value, dict | list):
        if depth >= 32:
            raise ValueError(f"nested deeper than 32 levels at {where}")
        if isinstance(value, list):
            return [storable(v, f"{where}.{i}", depth + 1) for i, v in enumerate(value)]
        return {
            storable(str(k), where, depth + 1): storable(v, f"{where}.{k}", depth + 1)
            for k, v in value.items()
        }
    return value


#: Spellings of ``properties.machine`` (an open or click by a scanner, not a person).
FLAGS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False, "": False}


def machine_flag(value: Any) -> bool:
    """``properties.machine`` as a boolean: true / false, 1 / 0, or one of :data:`FLAGS`'
    spellings (``"no"`` is false); anything else raises ValueError."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in FLAGS:
        return FLAGS[value.strip().lower()]
    raise ValueError(f"properties.machine {value!r}: expected true or false")


class PurchaseProperties(BaseModel):
    model_config = ConfigDict(extra="allow")

    order_id: str = Field(min_length=1, max_length=255)
    amount: Decimal = Field(ge=0, max_digits=18, decimal_places=2)
    currency: str | None = Field(None, min_length=3, max_length=3)
    items: list[dict[str, Any]] | None = None
    coupon: str | None = Field(None, max_length=64)


class IngestResult(BaseModel):
    accepted: int = Field(description="Events in the request.")
    new: int = Field(description="Events (and orders) not seen before.")
    duplicates: int = Field(description="Events already recorded (same event_id or content).")


def event_key(event: EventIn, at: datetime) -> str:
    if event.event_id:
        return f"api:{event.event_id}"
    blob = json.dumps(
        [event.customer_id, event.type, at.isoformat(), event.properties],
        sort_keys=True,
        default=str,
    )
    return "api:" + hashlib.sha256(blob.encode()).hexdigest()[:40]


def ingest(
    conn: Connection, items: Sequence[EventIn], *, now: datetime, currency: str
) -> IngestResult:
    """Record API events in the caller's transaction."""
    accepted = len(items)
    ids = _contact_ids(conn, items, now)
    items = _not_erased(conn, items, ids)
    plain: list[dict[str, Any]] = []
    purchases: list[tuple[EventIn, PurchaseProperties, datetime]] = []
    given: datetime | None = None  # the events of one request often share one instant
    given_utc = now
    for e in items:
        if e.occurred_at is None:
            at = now
        else:
            if e.occurred_at is not given:
                given, given_utc = e.occurred_at, as_utc(e.occurred_at)
            at = given_utc
        if e.type in PURCHASE_TYPES:
            purchases.append((e, PurchaseProperties.model_validate(e.properties), at))
            continue
        properties = e.properties
        plain.append(
            {
                "event_key": f"api:{e.event_id}" if e.event_id else event_key(e, at),
                "contact_id": ids[e.customer_id],
                "type": e.type,
                "occurred_at": at,
                "properties": properties or None,
                "message_id": _text(properties.get("message_id")) if properties else None,
                "machine": machine_flag(properties.get("machine")) if properties else False,
            }
        )
    stored = store_events(conn, plain, now=now) if plain else []
    new = len(stored)
    unsubscribed: dict[int, datetime] = {}
    for row in stored:
        if row["type"] == "email_unsubscribed":
            cid, at = row["contact_id"], row["occurred_at"]
            unsubscribed[cid] = max(at, unsubscribed.get(cid, at))
    if unsubscribed:
        activity.set_consent(
            conn, unsubscribed, "email", False, source="api", at=unsubscribed, now=now
        )
    for row in plain:
        if row["type"] in ("email_bounced", "email_complained"):
            email = conn.execute(
                select(contacts.c.email).where(contacts.c.id == row["contact_id"])
            ).scalar()
            if email:
                suppress(
                    conn,
                    channel="email",
                    address=email,
                    contact_id=row["contact_id"],
                    reason="complained" if row["type"] == "email_complained" else "bounced",
                    at=row["occurred_at"],
                    detail="api",
                )
    if purchases:
        new += _record_purchases(conn, purchases, ids, currency, now)
    return IngestResult(accepted=accepted, new=new, duplicates=accepted - new)


def _not_erased(
    conn: Connection, items: Sequence[EventIn], ids: dict[str, int]
) -> Sequence[EventIn]:
    """The events, without those of erased contacts (erasure wins over events accepted
    before it and applied after): purchases stay, as orders stay on an erased contact."""
    erased = erased_among(conn, ids.values())
    if not erased:
        return items
    return [e for e in items if e.type in PURCHASE_TYPES or ids[e.customer_id] not in erased]


def _contact_ids(conn: Connection, items: Sequence[EventIn], now: datetime) -> dict[str, int]:
    """The contacts of the events, created bare when unknown. SQLite: known ones are looked
    up first with one statement through the driver that answers one row (a JSON object),
    the usual case: nothing to create."""
    wanted = {e.customer_id for e in items}
    if conn.dialect.name == "sqlite":
        ((found_json,),) = driver_rows(
            conn,
            "SELECT json_group_object(c.customer_id, c.id) FROM json_each(?) j "
            "JOIN contacts c ON c.customer_id = j.value",
            [json.dumps(list(wanted))],
        )
        found: dict[str, int] = json.loads(found_json)
        if len(found) == len(wanted):
            return found
    return Store(conn.engine).ensure_contacts(wanted, at=now, conn=conn)


def _text(value: Any) -> str | None:
    """A property that must be text (``message_id``): anything else is not one."""
    return value[:255] if isinstance(value, str) else None


def _record_purchases(
    conn: Connection,
    purchases: Sequence[tuple[EventIn, PurchaseProperties, datetime]],
    ids: dict[str, int],
    currency: str,
    now: datetime,
) -> int:
    rows: dict[str, dict[str, Any]] = {}
    for e, p, at in purchases:
        rows.setdefault(
            p.order_id,
            {
                "order_id": p.order_id,
                "contact_id": ids[e.customer_id],
                "ordered_at": at,
                "amount": p.amount,
                "currency": (p.currency or currency).upper(),
                "items": p.items,
                "coupon": p.coupon,
            },
        )
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = (
        dialect.insert(orders)
        .on_conflict_do_nothing(index_elements=["order_id"])
        .returning(orders.c.order_id)
    )
    inserted = set(conn.execute(stmt, list(rows.values())).scalars())
    new_rows = [r for key, r in rows.items() if key in inserted]
    activity.apply_orders(
        conn, [(r["contact_id"], r["ordered_at"], r["amount"]) for r in new_rows], now=now
    )
    if any(r["coupon"] for r in new_rows):
        redeem(conn)
    return len(new_rows)
