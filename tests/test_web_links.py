"""The links in a real email, followed through the running HTTP service."""

from __future__ import annotations

import re
from datetime import timedelta
from email.message import EmailMessage

import httpx
import pytest
from sqlalchemy import select

from tests.delivery_support import add_contact, add_message, configure, smtp_server
from tests.web_support import new_api_key, running_service
from winback.clock import FixedClock
from winback.store.schema import contacts, events, suppressions
from winback.web.apikeys import KeyRing
from winback.workspace import Workspace


def _deliver_one(ws: Workspace, **contact: object) -> tuple[int, EmailMessage]:
    cid = add_contact(ws, "c1", email="ada@example.com", first_name="Ada", **contact)
    with smtp_server() as (url, inbox, _):
        ws = configure(ws, smtp_url=url, quiet_hours="")
        add_message(ws, cid, "feedback-request", key="feedback:1:request")
        ws.delivery.deliver_due()
    [msg] = inbox.messages
    return cid, msg


def _html(msg: EmailMessage) -> str:
    part = msg.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def _events(ws: Workspace, type_: str) -> list[dict[str, object]]:
    with ws.engine.connect() as conn:
        return [
            dict(r) for r in conn.execute(select(events).where(events.c.type == type_)).mappings()
        ]


def _contact(ws: Workspace, cid: int) -> dict[str, object]:
    with ws.engine.connect() as conn:
        return dict(conn.execute(select(contacts).where(contacts.c.id == cid)).mappings().one())


def _base_url(ws: Workspace, base: str) -> None:
    ws = configure(ws, base_url=base)


def test_one_click_unsubscribe_round_trip(workspace: Workspace) -> None:
    cid, msg = _deliver_one(workspace)
    target = re.fullmatch(r"<([^>]+)>", msg["List-Unsubscribe"])
    assert target is not None
    path = httpx.URL(target.group(1)).path
    with running_service(workspace) as base:
        # GET only shows the confirm page: link scanners never unsubscribe anybody.
        page = httpx.get(base + path)
        assert page.status_code == 200 and 'id="confirm"' in page.text
        assert "ad*@example.com" in page.text
        assert _contact(workspace, cid)["email_consent"] is True
        # RFC 8058: POST with List-Unsubscribe=One-Click.
        done = httpx.post(base + path, data={"List-Unsubscribe": "One-Click"})
        assert done.status_code == 200
        again = httpx.post(base + path, data={})  # the page's button: idempotent
        assert again.status_code == 200 and 'id="done"' in again.text
    assert _contact(workspace, cid)["email_consent"] is False
    assert len(_events(workspace, "email_unsubscribed")) == 1
    with workspace.engine.connect() as conn:
        sup = conn.execute(select(suppressions)).mappings().one()
    assert sup["address"] == "ada@example.com" and sup["reason"] == "unsubscribed"
    # And the next marketing email is not sent.
    with smtp_server() as (url, inbox, _):
        workspace = configure(workspace, smtp_url=url)
        add_message(workspace, cid, "reactivation-2", key="k2")
        report = workspace.delivery.deliver_due()
    assert report.counts == {"skipped": 1} and inbox.messages == []


def test_open_pixel_and_click_redirect(workspace: Workspace) -> None:
    clock = workspace.clock
    assert isinstance(clock, FixedClock)
    cid, msg = _deliver_one(workspace)
    html = _html(msg)
    [pixel] = re.findall(r'src="http://127\.0\.0\.1:8000(/o/[^"]+)"', html)
    clicks = re.findall(r'href="http://127\.0\.0\.1:8000(/c/[^"]+)"', html)
    with running_service(workspace) as base:
        # Fetched 1 second after delivery: a privacy proxy, not the person.
        clock.advance(timedelta(seconds=1))
        r = httpx.get(base + pixel, headers={"User-Agent": "Mozilla/5.0 (Macintosh)"})
        assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
        assert _contact(workspace, cid)["last_email_opened"] is None
        clock.advance(timedelta(minutes=10))
        r = httpx.get(base + pixel, headers={"User-Agent": "GoogleImageProxy"})
        assert _contact(workspace, cid)["last_email_opened"] is None
        r = httpx.get(base + pixel, headers={"User-Agent": "Mozilla/5.0 (iPhone) Mobile/15E148"})
        assert _contact(workspace, cid)["last_email_opened"] == clock.now()
        r = httpx.get(base + clicks[0], follow_redirects=False)  # python-httpx: a machine
        assert _contact(workspace, cid)["last_email_link_clicked"] is None
        browser = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0"}
        r = httpx.get(base + clicks[0], headers=browser, follow_redirects=False)
        assert r.status_code == 302 and r.headers["location"] == "https://example.com"
    opened = _events(workspace, "email_opened")
    assert [e["machine"] for e in opened] == [True, True, False]
    assert all(e["message_id"] == msg["Message-ID"] for e in opened)
    [_, click] = _events(workspace, "email_clicked")
    assert click["properties"]["url"] == "https://example.com"  # type: ignore[index]
    assert _contact(workspace, cid)["last_email_link_clicked"] == clock.now()


@pytest.mark.parametrize("kind", ["o", "c", "u", "f"])
def test_forged_and_tampered_tokens_are_404_without_detail(
    sqlite_workspace: Workspace, kind: str
) -> None:
    ws = sqlite_workspace
    _, msg = _deliver_one(ws)
    html = _html(msg)
    token = {
        "o": re.findall(r"/o/([^\"]+)\.gif", html)[0],
        "c": re.findall(r"/c/([^\"]+)", html)[0],
        "u": re.findall(r"/u/([^\"]+)", html)[0],
        "f": re.findall(r"/f/([^\"?]+)", html)[0],
    }[kind]
    body, sig = token.split(".")
    flipped = body[:-1] + ("A" if body[-1] != "A" else "B")
    bad = [
        f"{flipped}.{sig}",
        f"{body}.{sig[:-1]}{'A' if sig[-1] != 'A' else 'B'}",
        "nonsense",
        f"{body}.",
        token.replace(".", ""),
    ]
    other = {"o": "c", "c": "o", "u": "f", "f": "u"}[kind]  # a valid token of another kind
    bad.append(re.findall(rf"/{other}/([^\"?]+?)(?:\.gif)?\"", html)[0])
    suffix = ".gif" if kind == "o" else ""
    with running_service(ws) as base:
        for t in bad:
            for method in ("GET", "POST") if kind in "uf" else ("GET",):
                r = httpx.request(method, f"{base}/{kind}/{t}{suffix}", follow_redirects=False)
                assert r.status_code == 404, (t, method)
                assert r.text == "Not found\n"
        ok = httpx.get(f"{base}/{kind}/{token}{suffix}", follow_redirects=False)
        assert ok.status_code in (200, 302)
    with ws.engine.connect() as conn:
        assert conn.execute(select(contacts.c.email_consent)).scalar() is True


def test_event_api_with_keys_and_purchases_redeem_coupons(workspace: Workspace) -> None:
    cid, msg = _deliver_one(workspace)
    key = new_api_key(workspace, "shop")
    assert key.startswith("wbk_") and len(key) > 40
    with workspace.engine.connect() as conn:
        from winback.store.schema import api_keys

        stored = conn.execute(select(api_keys.c.key_hash)).scalar()
    assert stored != key and key not in str(stored)
    # A coupon for the contact.
    with smtp_server() as (url, inbox, _):
        workspace = configure(workspace, smtp_url=url, frequency_caps={})
        add_message(workspace, cid, "feedback-coupon", key="coupon", priority="transactional")
        workspace.delivery.deliver_due()
    code = re.search(r"WB-[A-Z0-9]{8}", inbox.messages[0].get_body(("plain",)).get_content())  # type: ignore[union-attr]
    assert code is not None
    auth = {"Authorization": f"Bearer {key}"}
    with running_service(workspace) as base:
        assert httpx.post(f"{base}/api/v1/events", json={}).status_code == 401
        bad = {"Authorization": "Bearer wbk_nope"}
        assert httpx.post(f"{base}/api/v1/events", json={}, headers=bad).status_code == 401
        view = {
            "customer_id": "c1",
            "type": "page_view",
            "event_id": "pv1",
            "occurred_at": "2026-03-01T10:00:00+01:00",
            "properties": {"path": "/"},
        }
        r = httpx.post(f"{base}/api/v1/events", json=view, headers=auth)
        assert r.status_code == 202 and r.json() == {"accepted": 1}
        r = httpx.post(f"{base}/api/v1/events", json=view, headers=auth)
        assert r.status_code == 202 and r.json() == {"accepted": 1}  # recorded once
        batch = {
            "events": [
                {"customer_id": "new-one", "type": "cart_add"},
                {
                    "customer_id": "c1",
                    "type": "purchase",
                    "occurred_at": "2026-03-01T11:00:00Z",
                    "properties": {
                        "order_id": "o-9",
                        "amount": "42.50",
                        "currency": "eur",
                        "coupon": code.group(0).lower(),
                    },
                },
            ]
        }
        r = httpx.post(f"{base}/api/v1/events/batch", json=batch, headers=auth)
        assert r.status_code == 202 and r.json() == {"accepted": 2}
        r = httpx.post(
            f"{base}/api/v1/events",
            headers=auth,
            json={"customer_id": "c1", "type": "purchase", "properties": {"amount": 3}},
        )
        assert r.status_code == 422
    person = _contact(workspace, cid)
    with workspace.engine.connect() as conn:
        keys = list(conn.execute(select(events.c.event_key)).scalars())
    assert keys.count("api:pv1") == 1
    assert str(person["last_seen"]) == "2026-03-01 09:00:00+00:00"
    assert person["orders_count"] == 1 and float(person["revenue_total"]) == 42.5  # type: ignore[arg-type]
    assert workspace.delivery.coupon_counts() == {"codes": 1, "assigned": 1, "redeemed": 1}
    workspace.store.contact_id("new-one")  # created by the event
    ring = KeyRing(workspace.engine, workspace.clock.now)
    assert ring.revoke("shop")
    assert ring.verify(key) is None
    ring.close()
