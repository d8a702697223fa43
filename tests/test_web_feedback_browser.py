"""The feedback loop in real headless Chromium: a received email's feedback link opens the
hosted page, the person picks a score and writes a comment, and the store records it."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.delivery_support import add_contact, configure, smtp_server
from tests.web_support import running_service
from winback.clock import FixedClock
from winback.store.schema import coupons, events
from winback.workspace import Workspace

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium"),
]


def test_feedback_flow_email_to_page_to_tag_and_coupon(sqlite_workspace: Workspace) -> None:
    """Feedback for a discount, end to end: tag `inactive` -> feedback request email -> the
    person follows its link in Chromium, scores and comments -> the flow tags them active
    and sends the coupon email with a unique code."""
    from playwright.sync_api import sync_playwright

    from winback.flows.runner import run_once

    ws = sqlite_workspace
    clock = ws.clock
    assert isinstance(clock, FixedClock)
    cid = add_contact(ws, "c1", email="ada@example.com", first_name="Ada")
    ws.flows.add("feedback-discount", now=clock.now() - timedelta(days=1))
    for copied in (ws.path / "templates").glob("feedback-*.yaml"):
        copied.unlink()  # use the shipped library's designed emails (see docs/delivery.md)
    ws.store.add_tag([cid], "inactive", at=clock.now(), source="test")
    with running_service(ws) as base, smtp_server() as (url, inbox, _):
        ws = configure(ws, smtp_url=url, base_url=base, quiet_hours="")
        run_once(ws, clock.now())
        [request] = inbox.messages
        assert request["Subject"].startswith("Ada, how did we do?")
        html = request.get_body(("html",)).get_content()  # type: ignore[union-attr]
        links = re.findall(rf'href="({re.escape(base)}/f/[^"]+\?score=9)"', html)
        assert links, "the email has one link per score"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
            try:
                page = browser.new_page()
                page.goto(links[0].replace("&amp;", "&"))
                assert page.locator("#score-9").is_checked()  # preselected from the email
                page.locator("label:has(#score-10)").click()
                page.fill("#comment", "Shipping was slow, but I love the mugs.")
                page.click("#send")
                page.wait_for_selector("#thanks")
                assert "Thank you" in page.inner_text("h1")
            finally:
                browser.close()
        clock.advance(timedelta(hours=1))
        run_once(ws, clock.now())
        assert len(inbox.messages) == 2
        coupon_mail = inbox.messages[1]
    with ws.engine.connect() as conn:
        rows = conn.execute(
            select(events.c.type, events.c.properties, events.c.message_id)
            .where(events.c.contact_id == cid)
            .order_by(events.c.id)
        ).all()
    types = [r.type for r in rows]
    assert types[:3] == ["email_sent", "email_clicked", "feedback_submitted"]
    feedback = rows[2]
    assert feedback.properties["score"] == 10 and feedback.properties["nps"] == "promoter"
    assert feedback.properties["comment"] == "Shipping was slow, but I love the mugs."
    assert feedback.properties["flow"] == "feedback-discount"
    assert feedback.message_id == request["Message-ID"]
    # The flow reacted: tags, and the coupon email with the contact's unique code.
    assert "active" in ws.store.tags_of(cid) and "inactive" not in ws.store.tags_of(cid)
    assert coupon_mail["Subject"].startswith("Thank you, Ada")
    [code] = set(re.findall(r"WB-[A-Z2-9]{8}", coupon_mail.get_body(("plain",)).get_content()))  # type: ignore[union-attr]
    with ws.engine.connect() as conn:
        owner = conn.execute(select(coupons.c.contact_id).where(coupons.c.code == code)).scalar()
    assert owner == cid
