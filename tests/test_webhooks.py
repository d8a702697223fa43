"""Shopify and WooCommerce webhooks on the real service (uvicorn on 127.0.0.1): signed
payloads in the platforms' documented shapes are applied once (valid), refused (tampered,
wrong secret) and not applied twice (replayed)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import select

from tests.web_support import running_service
from winback.shop_webhooks import signature
from winback.store.schema import contact_tags, contacts, orders
from winback.workspace import Workspace

SECRET = "shpss_0123456789abcdef"

ORDER = {
    "id": 820982911946154508,
    "name": "#1001",
    "email": "Jon@Example.com",
    "created_at": "2024-03-01T10:15:00-05:00",
    "currency": "EUR",
    "total_price": "120.00",
    "financial_status": "paid",
    "cancelled_at": None,
    "discount_codes": [{"code": "WELCOME10", "amount": "12.00", "type": "fixed_amount"}],
    "line_items": [
        {"id": 1, "name": "Blue Mug", "sku": "MUG-B", "quantity": 2, "price": "30.00"},
        {"id": 2, "name": "Poster", "sku": "POS-1", "quantity": 1, "price": "63.00"},
    ],
    "refunds": [],
    "customer": {"id": 115310627314723954, "email": "jon@example.com"},
}


def post(
    base: str, platform: str, body: bytes, *, webhook_id: str, topic: str, sign: str | None = None
) -> httpx.Response:
    if platform == "shopify":
        headers = {
            "X-Shopify-Hmac-Sha256": sign if sign is not None else signature(SECRET, body),
            "X-Shopify-Webhook-Id": webhook_id,
            "X-Shopify-Topic": topic,
            "X-Shopify-Shop-Domain": "bottega.myshopify.com",
        }
    else:
        headers = {
            "X-WC-Webhook-Signature": sign if sign is not None else signature(SECRET, body),
            "X-WC-Webhook-Delivery-ID": webhook_id,
            "X-WC-Webhook-Topic": topic,
            "X-WC-Webhook-Source": "https://bottega.example/",
        }
    headers["Content-Type"] = "application/json"
    return httpx.post(f"{base}/webhooks/{platform}", content=body, headers=headers, timeout=10)


def body(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode("utf-8")


def figures(ws: Workspace, email: str) -> tuple[int, Decimal]:
    with ws.engine.connect() as conn:
        row = conn.execute(
            select(contacts.c.orders_count, contacts.c.revenue_total).where(
                contacts.c.email == email
            )
        ).one()
    return int(row[0]), Decimal(str(row[1])).quantize(Decimal("0.01"))


def stored(ws: Workspace, order_id: str) -> tuple[str, Decimal]:
    with ws.engine.connect() as conn:
        row = conn.execute(
            select(orders.c.status, orders.c.refunded).where(orders.c.order_id == order_id)
        ).one()
    return str(row[0]), Decimal(str(row[1])).quantize(Decimal("0.01"))


def test_shopify_orders_refunds_and_customers(workspace: Workspace) -> None:
    workspace.settings = workspace.settings.model_copy(
        update={"shopify_webhook_secret": SECRET, "phone_region": "IT"}
    )
    with running_service(workspace) as base:
        created = body(ORDER)
        first = post(base, "shopify", created, webhook_id="w-1", topic="orders/create")
        assert first.status_code == 200 and first.json() == {"outcome": "applied"}
        assert figures(workspace, "jon@example.com") == (1, Decimal("120.00"))

        replay = post(base, "shopify", created, webhook_id="w-1", topic="orders/create")
        assert replay.json() == {"outcome": "duplicate"}
        assert figures(workspace, "jon@example.com") == (1, Decimal("120.00"))

        tampered = created.replace(b'"120.00"', b'"1.00"')
        refused = post(
            base,
            "shopify",
            tampered,
            webhook_id="w-2",
            topic="orders/updated",
            sign=signature(SECRET, created),
        )
        assert refused.status_code == 401
        wrong_key = post(
            base,
            "shopify",
            created,
            webhook_id="w-3",
            topic="orders/updated",
            sign=signature("another secret", created),
        )
        assert wrong_key.status_code == 401
        assert figures(workspace, "jon@example.com") == (1, Decimal("120.00"))

        refund = {
            "id": 509562969,
            "order_id": ORDER["id"],
            "created_at": "2024-03-05T09:00:00-05:00",
            "transactions": [
                {"id": 1, "kind": "refund", "status": "success", "amount": "30.00"},
                {"id": 2, "kind": "refund", "status": "failure", "amount": "99.00"},
            ],
        }
        done = post(base, "shopify", body(refund), webhook_id="w-4", topic="refunds/create")
        assert done.json() == {"outcome": "applied"}
        assert stored(workspace, str(ORDER["id"])) == ("paid", Decimal("30.00"))
        assert figures(workspace, "jon@example.com") == (1, Decimal("90.00"))
        again = post(base, "shopify", body(refund), webhook_id="w-4", topic="refunds/create")
        assert again.json() == {"outcome": "duplicate"}
        assert stored(workspace, str(ORDER["id"]))[1] == Decimal("30.00")

        cancelled = {
            **ORDER,
            "cancelled_at": "2024-03-06T10:00:00-05:00",
            "financial_status": "refunded",
        }
        post(base, "shopify", body(cancelled), webhook_id="w-5", topic="orders/cancelled")
        assert stored(workspace, str(ORDER["id"]))[0] == "cancelled"
        assert figures(workspace, "jon@example.com") == (0, Decimal("0.00"))

        customer = {
            "id": 115310627314723954,
            "email": "jon@example.com",
            "first_name": "Jon",
            "last_name": "Snow",
            "phone": "328 123 4567",
            "tags": "vip",
            "email_marketing_consent": {"state": "unsubscribed", "opt_in_level": "single_opt_in"},
        }
        post(base, "shopify", body(customer), webhook_id="w-6", topic="customers/update")
        ignored = post(base, "shopify", b"{}", webhook_id="w-7", topic="products/create")
        assert ignored.json() == {"outcome": "ignored"}
    with workspace.engine.connect() as conn:
        jon = conn.execute(select(contacts).where(contacts.c.email == "jon@example.com")).one()
    assert (jon.first_name, jon.phone, jon.email_consent) == ("Jon", "+393281234567", False)
    with workspace.engine.connect() as conn:
        tags = list(
            conn.execute(
                select(contact_tags.c.tag).where(contact_tags.c.contact_id == jon.id)
            ).scalars()
        )
    assert tags == ["vip"]


def test_woocommerce_guest_orders_and_refunds(workspace: Workspace) -> None:
    workspace.settings = workspace.settings.model_copy(
        update={"woocommerce_webhook_secret": SECRET}
    )
    order = {
        "id": 727,
        "status": "processing",
        "currency": "EUR",
        "date_created": "2024-02-02T12:00:00",
        "date_created_gmt": "2024-02-02T11:00:00",
        "total": "45.00",
        "customer_id": 0,
        "billing": {"first_name": "Gina", "email": "Guest1@Example.com"},
        "line_items": [{"id": 3, "name": "Tee", "sku": "TEE-1", "quantity": 1, "total": "45.00"}],
        "coupon_lines": [],
        "refunds": [],
    }
    with running_service(workspace) as base:
        ping = httpx.post(
            f"{base}/webhooks/woocommerce",
            content=b"webhook_id=12",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert ping.status_code == 200
        made = post(base, "woocommerce", body(order), webhook_id="d-1", topic="order.created")
        assert made.json() == {"outcome": "applied"}
        assert figures(workspace, "guest1@example.com") == (1, Decimal("45.00"))
        refunded = {**order, "refunds": [{"id": 9, "reason": "", "total": "-20.00"}]}
        post(base, "woocommerce", body(refunded), webhook_id="d-2", topic="order.updated")
        assert figures(workspace, "guest1@example.com") == (1, Decimal("25.00"))
        replay = post(base, "woocommerce", body(refunded), webhook_id="d-2", topic="order.updated")
        assert replay.json() == {"outcome": "duplicate"}
        bad = post(
            base, "woocommerce", body(order), webhook_id="d-3", topic="order.updated", sign="x"
        )
        assert bad.status_code == 401
        shopify_off = post(base, "shopify", body(ORDER), webhook_id="w", topic="orders/create")
        assert shopify_off.status_code == 404
    with workspace.engine.connect() as conn:
        at = conn.execute(select(orders.c.ordered_at)).scalar_one()
    assert at.isoformat() == "2024-02-02T11:00:00+00:00"


def test_a_delivery_racing_another_for_the_same_new_order_is_applied(
    workspace: Workspace,
) -> None:
    """Shopify sends orders/create and orders/paid at once: while one writer's transaction
    holds the new order uncommitted, the other's insert waits for it (on PostgreSQL it
    then meets the unique key) and must end applied, with one order stored, not an error."""
    import threading
    import time
    from datetime import UTC, datetime

    ws = workspace
    outcome: list[str] = []
    failed: list[BaseException] = []

    def other_delivery() -> None:
        try:
            outcome.append(ws.shop_webhooks.receive("shopify", "race-2", "orders/paid", ORDER))
        except BaseException as exc:  # reported below
            failed.append(exc)

    at = datetime(2024, 3, 1, 15, 15, tzinfo=UTC)
    with ws.engine.connect() as first:
        first.begin()
        cid = first.execute(
            contacts.insert()
            .values(customer_id="first", attributes={}, created_at=at, updated_at=at)
            .returning(contacts.c.id)
        ).scalar_one()
        first.execute(
            orders.insert().values(
                order_id=str(ORDER["id"]),
                contact_id=cid,
                ordered_at=at,
                amount=Decimal("120"),
                currency="EUR",
            )
        )
        thread = threading.Thread(target=other_delivery)
        thread.start()
        time.sleep(0.5)
        first.commit()
    thread.join(30)
    assert not failed, failed
    assert outcome == ["applied"]
    with ws.engine.connect() as conn:
        stored = conn.execute(select(orders.c.order_id)).scalars().all()
    assert stored == [str(ORDER["id"])]
