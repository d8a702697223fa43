"""The reference flow of MISSION.md, step for step, in simulated time."""

from __future__ import annotations

from datetime import timedelta

from tests.conftest import T0
from tests.flows.helpers import (
    enter_segment,
    entries,
    leave_segment,
    make_contacts,
    messages,
)
from winback.clock import FixedClock
from winback.workspace import Workspace

NOT_ACTIVE = "Customers Not Active"
TAG = "customer_not-active_after-reactivation"


def test_reference_flow_step_for_step(workspace: Workspace, clock: FixedClock) -> None:
    ws = workspace
    stays, buys_day2, revokes, no_consent, buys_day5 = make_contacts(ws, 5, at=T0)
    ws.store.set_consent(no_consent, "email", False, at=T0, source="test")
    enter_segment(ws, NOT_ACTIVE, [stays, buys_day2, revokes, no_consent, buys_day5], at=T0)
    ws.flows.add("reactivation", now=T0)

    report = ws.flows.tick(T0)
    assert report.enrolled == {"reactivation": 4}
    assert messages(ws, "reactivation") == sorted(
        (c, "s0", "reactivation-1") for c in (stays, buys_day2, revokes, buys_day5)
    )
    # Same instant again: nothing more.
    again = ws.flows.tick(T0)
    assert again.contact_steps == 0 and again.total_enrolled == 0

    day = T0 + timedelta(days=2)
    leave_segment(ws, NOT_ACTIVE, [buys_day2], at=day)
    ws.store.set_consent(revokes, "email", False, at=day, source="test")
    ws.flows.tick(day)

    day4 = T0 + timedelta(days=4)
    ws.flows.tick(day4)
    sent = messages(ws, "reactivation")
    assert (stays, "s2.then.0", "reactivation-2") in sent
    assert (buys_day5, "s2.then.0", "reactivation-2") in sent
    assert not any(c in (buys_day2, revokes) and s != "s0" for c, s, _ in sent)
    state = entries(ws, "reactivation")
    assert state[buys_day2]["exit_reason"] == "reactivated"
    assert state[revokes]["exit_reason"] == "reactivated"

    leave_segment(ws, NOT_ACTIVE, [buys_day5], at=T0 + timedelta(days=5))
    ws.flows.tick(T0 + timedelta(days=7))
    state = entries(ws, "reactivation")
    assert state[stays]["status"] == "completed"
    assert state[buys_day5]["exit_reason"] == "reactivated"
    assert ws.store.tags_of(stays) == [TAG]
    assert ws.store.tags_of(buys_day5) == []
    assert len(messages(ws, "reactivation")) == 6
