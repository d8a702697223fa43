"""The reference flow of MISSION.md, step for step, in simulated time, on segments
computed from the data (orders, opens) by the segment refresh inside each tick."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import T0
from tests.flows.helpers import add_event, add_order, entries, make_contacts, sent_to
from winback.workspace import Workspace

TAG = "customer_not-active_after-reactivation"
DAY = timedelta(days=1)


def test_reference_flow_step_for_step(workspace: Workspace) -> None:
    pytest.importorskip("winback.segments.service", reason="needs the segment refresh")
    ws = workspace
    people = make_contacts(ws, 7, at=T0 - 400 * DAY)
    stays, buys_day2, revokes, no_consent, buys_day5, returns_later, active = people
    for cid in people:
        add_order(ws, cid, at=T0 - 200 * DAY)
    add_order(ws, active, at=T0 - 10 * DAY)
    add_event(ws, active, "email_opened", at=T0 - 5 * DAY)
    ws.store.set_consent(no_consent, "email", False, at=T0 - DAY, source="test")
    ws.flows.add("reactivation", now=T0)

    # 1. dormant customers with email consent enter; 2. email 1 goes out.
    report = ws.flows.tick(T0)
    assert report.enrolled["reactivation"] == 5
    assert "reactivation-companion" not in report.enrolled or active in entries(
        ws, "reactivation-companion"
    )
    first = sent_to(ws, "reactivation")
    assert first == {
        c: ["reactivation-1"] for c in (stays, buys_day2, revokes, buys_day5, returns_later)
    }
    assert no_consent not in entries(ws, "reactivation") and active not in entries(
        ws, "reactivation"
    )
    # The same instant again does nothing.
    again = ws.flows.tick(T0)
    assert again.contact_steps == 0 and again.total_enrolled == 0

    # Mid-flow: one buys (and opens), one withdraws consent.
    add_order(ws, buys_day2, at=T0 + 2 * DAY)
    add_event(ws, buys_day2, "email_opened", at=T0 + 2 * DAY)
    ws.store.set_consent(revokes, "email", False, at=T0 + 2 * DAY, source="unsubscribe")
    ws.flows.tick(T0 + 2 * DAY)

    # 3. after 4 days: still dormant with consent -> email 2; otherwise they leave.
    ws.flows.tick(T0 + 4 * DAY)
    state = entries(ws, "reactivation")
    sent = sent_to(ws, "reactivation")
    for cid in (stays, buys_day5, returns_later):
        assert sent[cid] == ["reactivation-1", "reactivation-2"]
    assert sent[buys_day2] == ["reactivation-1"]
    assert sent[revokes] == ["reactivation-1"]
    assert state[buys_day2]["exit_reason"] == "reactivated"
    assert state[revokes]["exit_reason"] == "reactivated"

    # A purchase before the last check: leaves; the others are tagged after 3 more days.
    add_order(ws, buys_day5, at=T0 + 5 * DAY)
    ws.flows.tick(T0 + 5 * DAY)
    ws.flows.tick(T0 + 7 * DAY)
    state = entries(ws, "reactivation")
    assert state[stays]["status"] == "completed" and state[stays]["step"] == "s4.then.0"
    assert state[returns_later]["status"] == "completed"
    assert state[buys_day5]["exit_reason"] == "reactivated"
    assert ws.store.tags_of(stays) == [TAG]
    assert ws.store.tags_of(returns_later) == [TAG]
    assert ws.store.tags_of(buys_day5) == []
    assert sum(len(v) for v in sent_to(ws, "reactivation").values()) == 8
    # Each entry's path records every step it took with its outcome; stats count them.
    tagged = "s0=queued > s2=then > s2.then.0=queued > s4=then > s4.then.0=tagged"
    assert {cid: state[cid]["path"] for cid in state} == {
        stays: tagged,
        returns_later: tagged,
        buys_day2: "s0=queued > s2=else",
        revokes: "s0=queued > s2=else",
        buys_day5: "s0=queued > s2=then > s2.then.0=queued > s4=else",
    }
    assert ws.flows.stats("reactivation")["outcomes_per_step"] == {
        "s0": {"queued": 5},
        "s2": {"then": 3, "else": 2},
        "s2.then.0": {"queued": 3},
        "s4": {"then": 2, "else": 1},
        "s4.then.0": {"tagged": 2},
    }

    # 5. the companion removes the tag when the customer is active again.
    add_order(ws, returns_later, at=T0 + 9 * DAY)
    add_event(ws, returns_later, "email_opened", at=T0 + 9 * DAY)
    ws.flows.tick(T0 + 9 * DAY)
    assert ws.store.tags_of(returns_later) == []
    assert ws.store.tags_of(stays) == [TAG]
    companion = entries(ws, "reactivation-companion")
    assert companion[returns_later]["status"] == "completed"
