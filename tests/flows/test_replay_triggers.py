"""A replay (`simulate FLOW --start <past date>`) of a flow triggered by events, purchases or
tags sees the shop's recorded rows after the start at their own time: each simulated day
enrols who did the thing since the day before, and nothing that happened later."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import T0
from tests.flows.helpers import add_event, add_order, entry_count, make_contacts
from winback.flows.simulate import simulate
from winback.workspace import Workspace

DAY = timedelta(days=1)
START = T0 - 30 * DAY

FLOWS = {
    "cart": "name: Cart\ntrigger: {event: cart_abandoned}\nsteps:\n  - wait: 1d\n",
    "vip": "name: VIP\ntrigger: {tag_added: vip}\nsteps:\n  - wait: 1d\n",
    "bought": "name: Bought\ntrigger: {event: purchase}\nsteps:\n  - wait: 1d\n",
}


def _shop(ws: Workspace) -> None:
    """p0 abandons a cart 2.5 days after the start and is tagged vip on day 4.5; p1 abandons
    one on day 6.5 (tagged vip before the start); p2 abandoned one before the start and
    buys on day 1.5; p3 abandons one on day 15, after the replays below end."""
    p0, p1, p2, p3 = make_contacts(ws, 4, at=T0 - 500 * DAY, prefix="p")
    add_event(ws, p0, "cart_abandoned", at=START + 2.5 * DAY)
    add_event(ws, p1, "cart_abandoned", at=START + 6.5 * DAY)
    add_event(ws, p2, "cart_abandoned", at=START - 5 * DAY)
    add_event(ws, p3, "cart_abandoned", at=START + 15 * DAY)
    ws.store.add_tag([p1], "vip", at=START - 2 * DAY, source="test")
    ws.store.add_tag([p0], "vip", at=START + 4.5 * DAY, source="test")
    add_order(ws, p2, at=START + 1.5 * DAY)
    for key, text in FLOWS.items():
        (ws.path / "flows" / f"{key}.yaml").write_text(text, encoding="utf-8")


@pytest.mark.slow
def test_recorded_events_after_the_start_trigger_entries(workspace: Workspace) -> None:
    ws = workspace
    _shop(ws)
    # Point in time: two days in, p0's cart (day 2.5) has not been abandoned yet.
    assert simulate(ws, "cart", start=START, days=2).entered == 0
    # p0 and p1; not p2 (before the start) nor p3 (after the end).
    assert simulate(ws, "cart", start=START, days=8).entered == 2


@pytest.mark.slow
def test_recorded_tags_and_orders_after_the_start_trigger_entries(workspace: Workspace) -> None:
    ws = workspace
    _shop(ws)
    assert simulate(ws, "vip", start=START, days=8).entered == 1  # p0; p1 was vip already
    assert simulate(ws, "bought", start=START, days=8).entered == 1  # p2's order


@pytest.mark.slow
def test_the_day_reaching_past_the_history_still_replays(workspace: Workspace) -> None:
    """The history ends on day 15 (p3's cart): a replay whose days step over that instant
    enrols p3 on the first day after it."""
    ws = workspace
    _shop(ws)
    result = simulate(ws, "cart", start=START + 0.5 * DAY, days=16)
    assert result.entered == 3  # p0, p1, p3


@pytest.mark.slow
def test_a_replay_ignores_what_the_live_flow_did_after_its_start(workspace: Workspace) -> None:
    """The vip flow runs live: p2, tagged yesterday, entered it today. A replay from 30 days
    ago neither counts that entry nor lets it stand in for its own (p0 on day 4.5)."""
    ws = workspace
    _shop(ws)
    p2 = int(ws.store.get_contact("p2")["id"])
    ws.flows.enable("vip", now=T0 - 2 * DAY)
    ws.store.add_tag([p2], "vip", at=T0 - DAY, source="test")
    ws.flows.tick(T0)
    assert entry_count(ws, "vip") == 1
    result = simulate(ws, "vip", start=START, days=8)
    assert result.entered == 1  # p0 only
    assert result.exits == {"completed": 1}
