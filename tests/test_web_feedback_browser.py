"""The feedback loop in real headless Chromium: a received email's feedback link opens the
hosted page, the person picks a score and writes a comment, and the store records it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.delivery_support import add_contact, add_message, configure, smtp_server
from tests.web_support import running_service
from winback.store.schema import events
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


def test_feedback_from_email_link_to_recorded_answer(sqlite_workspace: Workspace) -> None:
    from playwright.sync_api import sync_playwright

    ws = sqlite_workspace
    cid = add_contact(ws, "c1", email="ada@example.com", first_name="Ada")
    with running_service(ws) as base, smtp_server() as (url, inbox, _):
        configure(ws, smtp_url=url, base_url=base, quiet_hours="")
        add_message(ws, cid, "feedback-request", key="feedback:1:request", flow="feedback")
        ws.delivery.deliver_due()
        html = inbox.messages[0].get_body(("html",)).get_content()  # type: ignore[union-attr]
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
    with ws.engine.connect() as conn:
        rows = conn.execute(
            select(events.c.type, events.c.properties, events.c.message_id)
            .where(events.c.contact_id == cid)
            .order_by(events.c.id)
        ).all()
    types = [r.type for r in rows]
    assert types == ["email_sent", "email_clicked", "feedback_submitted"]
    feedback = rows[-1]
    assert feedback.properties["score"] == 10 and feedback.properties["nps"] == "promoter"
    assert feedback.properties["comment"] == "Shipping was slow, but I love the mugs."
    assert feedback.properties["flow"] == "feedback"
    assert feedback.message_id == inbox.messages[0]["Message-ID"]
