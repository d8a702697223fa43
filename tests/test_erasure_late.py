"""Erasure wins over activity that arrives after it, even when it was accepted before: events
waiting in the event journal, an unsubscribe kept in the inbox, a shop webhook, a tracking
link. Orders still attach to the tombstone (orders stay through an erasure)."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.delivery_support import add_contact, add_message
from winback.delivery.inbound import EventIn, ingest
from winback.delivery.links.tokens import TokenSigner
from winback.delivery.unsubscribes import Unsubscribe, apply_pending_unsubscribes, keep
from winback.delivery.worker.policies import hashed_address
from winback.erasure import erase_contacts
from winback.store.schema import (
    CHANNELS,
    consent_log,
    contact_tags,
    contacts,
    events,
    orders,
    suppressions,
)
from winback.workspace import Workspace

H = timedelta(hours=1)


def _contact(ws: Workspace, cid: int) -> Any:
    with ws.engine.connect() as conn:
        return conn.execute(select(contacts).where(contacts.c.id == cid)).one()


def _count(ws: Workspace, table: Any, *where: Any) -> int:
    with ws.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def _erased_contact(ws: Workspace, customer: str = "c1") -> int:
    return add_contact(
        ws, customer, email="ada@example.com", first_name="Ada", created_at=ws.clock.now() - 9 * H
    )


def test_events_in_the_journal_are_dropped_once_their_contact_is_erased(
    workspace: Workspace,
) -> None:
    ws = workspace
    cid = _erased_contact(ws)
    intake = ws.delivery.event_intake
    intake.applies_here = False  # accepted now, applied below (the engine's process would)
    visit = {"customer_id": "c1", "type": "page_view", "properties": {"note": "ada@example.com"}}
    purchase = {
        "customer_id": "c1",
        "type": "purchase",
        "properties": {"order_id": "late-1", "amount": "12.50"},
    }
    body = json.dumps({"events": [visit, purchase]}).encode()
    assert intake.accept(body, batch=True).result(5) == 2
    ws.contacts.erase("c1", reason="request")
    assert intake.apply_pending() == 2
    assert intake.backlog() == (0, 0)
    assert _count(ws, events, events.c.contact_id == cid) == 0  # nothing re-attached
    row = _contact(ws, cid)
    assert row.last_seen is None and row.email is None and row.erased_at is not None
    # The order stays with the tombstone, as orders from before an erasure do.
    assert _count(ws, orders, orders.c.contact_id == cid) == 1
    # Events for a contact that is not erased are applied as before.
    add_contact(ws, "c2")
    assert intake.accept(json.dumps({**visit, "customer_id": "c2"}).encode(), batch=False).result(5)
    intake.apply_pending()
    assert _count(ws, events, events.c.type == "page_view") == 1


def test_a_kept_unsubscribe_applied_after_the_erasure(workspace: Workspace) -> None:
    """No event and no consent row for the tombstone; the address stays blocked, hashed."""
    ws = workspace
    cid = _erased_contact(ws)
    oid = add_message(ws, cid, key="first")
    clicked = ws.clock.now() - H
    keep(
        ws.path, Unsubscribe(oid, cid, "ada@example.com", "<m@x>", "f", "s0", "one-click", clicked)
    )
    ws.contacts.erase("c1")
    assert apply_pending_unsubscribes(ws.engine, ws.store, ws.path) == 1
    assert _count(ws, events, events.c.contact_id == cid) == 0
    sources = {
        r.source
        for r in ws.engine.connect().execute(
            select(consent_log.c.source).where(consent_log.c.contact_id == cid)
        )
    }
    assert sources == {"erasure:cli"}
    assert _count(ws, suppressions, suppressions.c.address == "ada@example.com") == 0
    hashed = hashed_address("email", "ada@example.com")
    assert _count(ws, suppressions, suppressions.c.address == hashed) == 1


def test_webhooks_and_links_after_the_erasure_fill_nothing(workspace: Workspace) -> None:
    ws = workspace
    cid = _erased_contact(ws)
    oid = add_message(ws, cid, key="first")
    ws.contacts.erase("c1")
    customer = {
        "id": "c1",
        "email": "ada@example.com",
        "first_name": "Ada",
        "phone": "+39 328 123 4567",
        "tags": "vip",
        "email_marketing_consent": {"state": "subscribed"},
    }
    assert ws.shop_webhooks.receive("shopify", "w-1", "customers/update", customer) == "ignored"
    signer = TokenSigner(ws.settings.secret_key)
    click = signer.sign("c", oid, cid, index=0, url="https://shop.example/p")
    assert ws.delivery.tracker.click(click) == "https://shop.example/p"
    row = _contact(ws, cid)
    assert (row.email, row.first_name, row.phone, row.email_consent) == (None, None, None, False)
    assert row.last_email_link_clicked is None
    assert _count(ws, contact_tags, contact_tags.c.contact_id == cid) == 0
    assert _count(ws, events, events.c.contact_id == cid) == 0


def _postgres(ws: Workspace) -> None:
    if ws.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: the check in the transaction is exact")


def test_an_erasure_waits_for_events_being_applied_then_erases_them(
    workspace: Workspace,
) -> None:
    ws = workspace
    _postgres(ws)
    # Consent already off everywhere: the erasure's first write to the contact row is its
    # last statement, after it has nulled the events' properties.
    cid = add_contact(ws, "c1", **{f"{channel}_consent": False for channel in CHANNELS})
    now = ws.clock.now()
    seen = EventIn(customer_id="c1", type="page_view", properties={"note": "ada@example.com"})
    applier = ws.engine.connect()
    tx = applier.begin()
    ingest(applier, [seen], now=now, currency="EUR")  # the applier's transaction, open
    done = threading.Event()

    def erase() -> None:
        with ws.engine.begin() as conn:
            erase_contacts(conn, [cid], at=now, source="cli")
        done.set()

    thread = threading.Thread(target=erase)
    thread.start()
    assert not done.wait(0.5)  # the erasure waits for the applier's commit
    tx.commit()
    applier.close()
    thread.join(10)
    assert done.is_set()
    row = _contact(ws, cid)
    assert row.last_seen is None and row.erased_at is not None
    with ws.engine.connect() as conn:
        kept = conn.execute(select(events.c.properties).where(events.c.contact_id == cid)).all()
    assert [r.properties for r in kept] == [None]  # erased with the rest


def test_events_applied_while_an_erasure_commits_see_it(workspace: Workspace) -> None:
    ws = workspace
    _postgres(ws)
    cid = _erased_contact(ws)
    now = ws.clock.now()
    eraser = ws.engine.connect()
    tx = eraser.begin()
    erase_contacts(eraser, [cid], at=now, source="cli")
    done = threading.Event()

    def apply() -> None:
        with ws.engine.begin() as conn:
            ingest(conn, [EventIn(customer_id="c1", type="page_view")], now=now, currency="EUR")
        done.set()

    thread = threading.Thread(target=apply)
    thread.start()
    assert not done.wait(0.5)  # the applier waits for the erasure's commit
    tx.commit()
    eraser.close()
    thread.join(10)
    assert done.is_set()
    assert _count(ws, events, events.c.contact_id == cid) == 0
    assert _contact(ws, cid).last_seen is None
