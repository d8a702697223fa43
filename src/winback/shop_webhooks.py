"""Shopify and WooCommerce webhooks: orders, refunds and customers as they happen.

Both platforms sign the raw request body with the webhook's secret: the base64 of its
HMAC-SHA256 (:func:`signature_ok`; Shopify in ``X-Shopify-Hmac-Sha256``, WooCommerce in
``X-WC-Webhook-Signature``). A delivery is applied once: its id (``X-Shopify-Webhook-Id``,
``X-WC-Webhook-Delivery-ID``) is recorded in ``webhook_receipts`` in the transaction that
applies it, so a retried delivery changes nothing.

What a webhook changes, as the imports with the ``shopify`` / ``woocommerce`` presets do:

- an order (Shopify ``orders/create``, ``orders/updated``, ``orders/paid``,
  ``orders/cancelled``; WooCommerce ``order.created``, ``order.updated``) is stored under
  the platform's order id, with its status and refunded amount; an order already stored
  takes the new status and refund, and its contact is recounted
  (:func:`winback.store.activity.recount_orders`); a new counted purchase advances its
  contact (:func:`winback.store.activity.apply_orders`);
- a refund (Shopify ``refunds/create``) adds its successful refund transactions to the
  order's refunded amount;
- a customer (``customers/create``, ``customers/update``; ``customer.created``,
  ``customer.updated``) updates the contact's name and phone, adds its tags and sets its
  email consent; for an erased contact it is ignored (erasure wins: its orders still
  attach to the tombstone, as the ones from before the erasure stay).

Orders and customers find their contact by email address (trimmed, lower-cased), else by the
platform's customer id, and create it when there is none. Other topics are acknowledged and
ignored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from winback.clock import Clock
from winback.config import Settings
from winback.errors import WinbackError
from winback.ingest.presets.shopify import order_status as shopify_status
from winback.ingest.presets.woocommerce import order_status as woocommerce_status
from winback.phones import InvalidPhone, e164
from winback.store import activity, purchases
from winback.store.schema import contacts, orders, webhook_receipts
from winback.store.tombstones import erased_among

PLATFORMS = ("shopify", "woocommerce")


class BadWebhook(WinbackError):
    """A signed webhook whose content cannot be used (named in the message)."""


def signature(secret: str, body: bytes) -> str:
    """The base64 of the HMAC-SHA256 of ``body`` under ``secret``."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def signature_ok(secret: str, body: bytes, given: str | None) -> bool:
    """Whether ``given`` signs ``body`` (constant-time comparison)."""
    return given is not None and hmac.compare_digest(signature(secret, body), given.strip())


@dataclass
class ShopOrder:
    order_id: str
    email: str | None
    customer_id: str | None
    ordered_at: datetime
    amount: Decimal
    currency: str | None
    status: str
    refunded: Decimal
    items: list[dict[str, Any]] = field(default_factory=list)
    coupon: str | None = None


@dataclass
class RefundAdded:
    order_id: str
    amount: Decimal


@dataclass
class ShopCustomer:
    customer_id: str | None
    email: str | None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    email_consent: bool | None = None
    tags: str | None = None


Change = ShopOrder | RefundAdded | ShopCustomer


class ShopWebhooks:
    """Applies verified webhooks to the store (``ws.shop_webhooks``)."""

    def __init__(self, engine: Engine, settings: Settings, clock: Clock) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock

    def secret(self, platform: str) -> str | None:
        value = getattr(self.settings, f"{platform}_webhook_secret", None)
        return str(value) if value else None

    def receive(self, platform: str, webhook_id: str, topic: str, payload: Any) -> str:
        """Apply one verified delivery; ``applied``, ``ignored`` (a topic or object winback
        does not use) or ``duplicate`` (this delivery id was received before)."""
        if platform not in PLATFORMS:
            raise ValueError(f"unknown platform {platform!r}")
        if not isinstance(payload, dict):
            raise BadWebhook("expected a JSON object")
        change = (shopify if platform == "shopify" else woocommerce)(topic, payload)
        now = self.clock.now()
        try:
            return self._receive(platform, webhook_id, topic, change, now)
        except IntegrityError:
            # Another delivery about the same new order or customer (Shopify sends
            # orders/create and orders/paid at once) committed it between our look and our
            # insert (PostgreSQL; SQLite writers take turns): once more, it is found.
            return self._receive(platform, webhook_id, topic, change, now)

    def _receive(
        self, platform: str, webhook_id: str, topic: str, change: Change | None, now: datetime
    ) -> str:
        with self.engine.begin() as conn:
            if not _first_receipt(conn, platform, webhook_id, topic, now):
                return "duplicate"
            outcome = "ignored" if change is None else self._apply(conn, change, now)
            conn.execute(
                update(webhook_receipts)
                .where(
                    webhook_receipts.c.platform == platform,
                    webhook_receipts.c.webhook_id == webhook_id,
                )
                .values(outcome=outcome)
            )
        return outcome

    def _apply(self, conn: Connection, change: Change, now: datetime) -> str:
        if isinstance(change, ShopOrder):
            return _apply_order(conn, change, now, self.settings.currency)
        if isinstance(change, RefundAdded):
            return _apply_refund(conn, change, now)
        return _apply_customer(conn, change, now, self.settings.phone_region)


def _first_receipt(
    conn: Connection, platform: str, webhook_id: str, topic: str, now: datetime
) -> bool:
    insert_ = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = (
        insert_(webhook_receipts)
        .values(
            platform=platform,
            webhook_id=webhook_id[:255],
            topic=topic[:64],
            outcome="received",
            received_at=now,
        )
        .on_conflict_do_nothing(index_elements=["platform", "webhook_id"])
        .returning(webhook_receipts.c.id)
    )
    return conn.execute(stmt).first() is not None


# -- reading the platforms' payloads ------------------------------------------------------------


def shopify(topic: str, p: dict[str, Any]) -> Change | None:
    if topic in ("orders/create", "orders/updated", "orders/paid", "orders/cancelled"):
        refunded = sum(
            (
                _money(t.get("amount"), "refunds.transactions.amount")
                for r in p.get("refunds") or []
                for t in r.get("transactions") or []
                if t.get("kind") == "refund" and t.get("status") in ("success", None)
            ),
            Decimal(0),
        )
        customer = p.get("customer") or {}
        codes = [c.get("code") for c in p.get("discount_codes") or [] if c.get("code")]
        return ShopOrder(
            order_id=_text(p.get("id"), "id"),
            email=_email(p.get("email") or customer.get("email")),
            customer_id=_opt(customer.get("id")),
            ordered_at=_time(p.get("created_at"), "created_at"),
            amount=_money(p.get("total_price"), "total_price"),
            currency=_opt(p.get("currency")),
            status=shopify_status(
                str(p.get("financial_status") or ""), str(p.get("cancelled_at") or "")
            ),
            refunded=refunded,
            items=[
                _item(i.get("name"), i.get("sku"), i.get("quantity"), i.get("price"))
                for i in p.get("line_items") or []
            ],
            coupon=codes[0] if codes else None,
        )
    if topic == "refunds/create":
        amount = sum(
            (
                _money(t.get("amount"), "transactions.amount")
                for t in p.get("transactions") or []
                if t.get("kind") == "refund" and t.get("status") in ("success", None)
            ),
            Decimal(0),
        )
        return RefundAdded(_text(p.get("order_id"), "order_id"), amount)
    if topic in ("customers/create", "customers/update"):
        consent = (p.get("email_marketing_consent") or {}).get("state")
        granted: bool | None = None
        if consent is not None:
            granted = consent == "subscribed"
        elif isinstance(p.get("accepts_marketing"), bool):
            granted = p["accepts_marketing"]
        return ShopCustomer(
            customer_id=_opt(p.get("id")),
            email=_email(p.get("email")),
            first_name=_opt(p.get("first_name")),
            last_name=_opt(p.get("last_name")),
            phone=_opt(p.get("phone")),
            email_consent=granted,
            tags=_opt(p.get("tags")),
        )
    return None


def woocommerce(topic: str, p: dict[str, Any]) -> Change | None:
    if topic in ("order.created", "order.updated", "order.restored"):
        billing = p.get("billing") or {}
        customer = _opt(p.get("customer_id"))
        codes = [c.get("code") for c in p.get("coupon_lines") or [] if c.get("code")]
        return ShopOrder(
            order_id=_text(p.get("id"), "id"),
            email=_email(billing.get("email")),
            customer_id=None if customer in (None, "0") else customer,  # 0: a guest
            ordered_at=_time(
                p.get("date_created_gmt") or p.get("date_created"),
                "date_created_gmt",
                utc=bool(p.get("date_created_gmt")),
            ),
            amount=_money(p.get("total"), "total"),
            currency=_opt(p.get("currency")),
            status=woocommerce_status(str(p.get("status") or "")),
            refunded=sum(
                (abs(_money(r.get("total"), "refunds.total")) for r in p.get("refunds") or []),
                Decimal(0),
            ),
            items=[
                _item(i.get("name"), i.get("sku"), i.get("quantity"), i.get("total"))
                for i in p.get("line_items") or []
            ],
            coupon=codes[0] if codes else None,
        )
    if topic in ("customer.created", "customer.updated"):
        billing = p.get("billing") or {}
        return ShopCustomer(
            customer_id=_opt(p.get("id")),
            email=_email(p.get("email") or billing.get("email")),
            first_name=_opt(p.get("first_name")),
            last_name=_opt(p.get("last_name")),
            phone=_opt(billing.get("phone")),
        )
    return None


def _opt(value: Any) -> str | None:
    text = "" if value is None else str(value).strip()
    return text or None


def _text(value: Any, name: str) -> str:
    text = _opt(value)
    if text is None:
        raise BadWebhook(f"no {name} in the payload")
    return text[:255]


def _email(value: Any) -> str | None:
    text = _opt(value)
    return text.lower() if text and "@" in text else None


def _money(value: Any, name: str) -> Decimal:
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise BadWebhook(f"{name}: {value!r} is not an amount") from None
    if not amount.is_finite():
        raise BadWebhook(f"{name}: {value!r} is not an amount")
    return amount


def _time(value: Any, name: str, *, utc: bool = False) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise BadWebhook(f"{name}: {value!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # WooCommerce's *_gmt fields carry no offset
    return parsed.astimezone(UTC)


def _item(name: Any, sku: Any, quantity: Any, price: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"name": _opt(name) or ""}
    if _opt(sku):
        item["sku"] = _opt(sku)
    if quantity is not None:
        item["quantity"] = quantity
    if price is not None:
        item["price"] = str(price)
    return item


# -- writing ------------------------------------------------------------------------------------


def _contact(conn: Connection, email: str | None, customer_id: str | None, now: datetime) -> int:
    """The contact with ``email`` (the oldest), else with ``customer_id``; created when
    there is none."""
    if email is not None:
        found = conn.execute(
            select(contacts.c.id)
            .where(contacts.c.email == email, contacts.c.erased_at.is_(None))
            .order_by(contacts.c.id)
            .limit(1)
        ).scalar()
        if found is not None:
            return int(found)
    key = customer_id or email
    if key is None:
        raise BadWebhook("neither an email address nor a customer id to find the contact by")
    found = conn.execute(select(contacts.c.id).where(contacts.c.customer_id == key)).scalar()
    if found is not None:
        return int(found)
    return int(
        conn.execute(
            insert(contacts)
            .values(
                customer_id=key,
                email=email,
                attributes={},
                orders_count=0,
                revenue_total=0,
                created_at=now,
                updated_at=now,
            )
            .returning(contacts.c.id)
        ).scalar_one()
    )


def _apply_order(conn: Connection, o: ShopOrder, now: datetime, currency: str) -> str:
    stored = conn.execute(
        select(orders.c.contact_id, orders.c.status, orders.c.refunded).where(
            orders.c.order_id == o.order_id
        )
    ).first()
    if stored is None:
        contact_id = _contact(conn, o.email, o.customer_id, now)
        conn.execute(
            insert(orders).values(
                order_id=o.order_id,
                contact_id=contact_id,
                ordered_at=o.ordered_at,
                amount=o.amount,
                currency=(o.currency or currency).upper()[:3],
                items=o.items or None,
                coupon=o.coupon[:64] if o.coupon else None,
                status=o.status if o.status in purchases.ORDER_STATUSES else purchases.PAID,
                refunded=o.refunded,
            )
        )
        if purchases.is_counted(o.status, o.amount, o.refunded):
            activity.apply_orders(
                conn, [(contact_id, o.ordered_at, o.amount - o.refunded)], now=now
            )
        return "applied"
    status = o.status if o.status in purchases.ORDER_STATUSES else str(stored.status)
    if status == stored.status and Decimal(str(stored.refunded)) == o.refunded:
        return "applied"
    conn.execute(
        update(orders)
        .where(orders.c.order_id == o.order_id)
        .values(status=status, refunded=o.refunded)
    )
    activity.recount_orders(conn, [int(stored.contact_id)], now=now)
    return "applied"


def _apply_refund(conn: Connection, r: RefundAdded, now: datetime) -> str:
    stored = conn.execute(
        select(orders.c.contact_id, orders.c.refunded).where(orders.c.order_id == r.order_id)
    ).first()
    if stored is None or not r.amount:
        return "ignored"
    conn.execute(
        update(orders)
        .where(orders.c.order_id == r.order_id)
        .values(refunded=Decimal(str(stored.refunded)) + r.amount)
    )
    activity.recount_orders(conn, [int(stored.contact_id)], now=now)
    return "applied"


def _apply_customer(conn: Connection, c: ShopCustomer, now: datetime, region: str | None) -> str:
    contact_id = _contact(conn, c.email, c.customer_id, now)
    if erased_among(conn, [contact_id]):
        return "ignored"  # an erased contact's profile, tags and consent are not filled again
    row = conn.execute(select(contacts.c.email).where(contacts.c.id == contact_id)).one()
    values: dict[str, Any] = {}
    if c.first_name:
        values["first_name"] = c.first_name[:255]
    if c.last_name:
        values["last_name"] = c.last_name[:255]
    if c.phone:
        try:
            values["phone"] = e164(c.phone, region)
        except InvalidPhone:
            pass  # an unusable number is not stored, as on import
    if c.email and not row.email:
        values["email"] = c.email
    if values:
        conn.execute(
            update(contacts).where(contacts.c.id == contact_id).values(values | {"updated_at": now})
        )
    for tag in dict.fromkeys(t.strip()[:128] for t in (c.tags or "").split(",") if t.strip()):
        activity.add_tags(conn, [contact_id], tag, source="webhook", at=now)
    if c.email_consent is not None:
        activity.set_consent(
            conn, [contact_id], "email", c.email_consent, source="webhook", at=now, now=now
        )
    return "applied"
