"""One address never receives two copies of a flow message, whether the two contacts that
share it are in one delivery batch or in two (real SMTP server, both databases)."""

from __future__ import annotations

from datetime import timedelta

from tests.delivery_support import add_contact, add_message, configure, outbox_row, smtp_server
from winback.clock import FixedClock
from winback.workspace import Workspace


def test_two_contacts_with_one_address_get_one_copy(workspace: Workspace) -> None:
    ann = add_contact(workspace, "a1", email="ann@example.com")
    twin = add_contact(workspace, "a2", email=" ANN@example.com")
    bob = add_contact(workspace, "b1", email="bob@example.com")
    with smtp_server() as (url, inbox, _):
        ws = configure(workspace, smtp_url=url, quiet_hours="")
        first = add_message(ws, ann, key="k1")
        copy = add_message(ws, twin, key="k2")
        other_step = add_message(ws, twin, key="k3", step="email-2")
        for_bob = add_message(ws, bob, key="k4")
        ws.delivery.deliver_due()
        # Another batch later: the same step again for the twin is still a copy.
        clock = ws.clock
        assert isinstance(clock, FixedClock)
        clock.advance(timedelta(minutes=5))
        late = add_message(ws, twin, key="k5")
        ws.delivery.deliver_due()
    status = {i: outbox_row(ws, i)["status"] for i in (first, copy, other_step, for_bob, late)}
    assert status == {
        first: "sent",
        copy: "skipped",
        other_step: "sent",
        for_bob: "sent",
        late: "skipped",
    }
    assert "same address" in outbox_row(ws, copy)["last_error"]
    assert sorted(m["To"].lower() for m in inbox.messages) == [
        "ann@example.com",
        "ann@example.com",  # email-2: another message, not a copy
        "bob@example.com",
    ]
