"""Each shipped flow template, run in simulated time on a small crafted data set, with the
exact path of every contact asserted. (The reference flow has its own module.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from tests.conftest import T0
from tests.flows.helpers import (
    add_event,
    add_order,
    entries,
    entry_count,
    make_contacts,
    sent_to,
    set_contact,
)
from winback.flows._sql import stable_uniform_py
from winback.store.schema import contacts, flow_entries, outbox
from winback.workspace import Workspace

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


def _steps_of(ws: Workspace, flow: str, contact_id: int) -> list[str]:
    with ws.engine.connect() as conn:
        return list(
            conn.execute(
                select(outbox.c.step)
                .where(outbox.c.flow == flow, outbox.c.contact_id == contact_id)
                .order_by(outbox.c.id)
            ).scalars()
        )


def test_browse_abandonment(workspace: Workspace) -> None:
    ws = workspace
    viewer, buyer, twice, no_consent = make_contacts(ws, 4, at=T0 - 100 * DAY)
    ws.store.set_consent(no_consent, "email", False, at=T0 - DAY, source="test")
    ws.flows.add("browse-abandonment", now=T0 - HOUR)
    for cid in (viewer, buyer, twice, no_consent):
        add_event(ws, cid, "product_view", at=T0 - HOUR, sku="A1")
    ws.flows.tick(T0)
    add_order(ws, buyer, at=T0 + 12 * HOUR)
    ws.flows.tick(T0 + DAY)
    add_event(ws, twice, "product_view", at=T0 + 2 * DAY, sku="B2")
    ws.flows.tick(T0 + 2 * DAY)
    ws.flows.tick(T0 + 3 * DAY)

    assert sent_to(ws, "browse-abandonment") == {
        viewer: ["browse-abandonment"],
        twice: ["browse-abandonment"],
    }
    state = entries(ws, "browse-abandonment")
    assert state[buyer]["exit_reason"] == "purchased"
    assert state[viewer]["status"] == "completed"
    assert no_consent not in state
    assert entry_count(ws, "browse-abandonment") == 3  # re-entry after 7d: `twice` once


def test_second_purchase(workspace: Workspace) -> None:
    ws = workspace
    one_order, comes_back, regular = make_contacts(ws, 3, at=T0 - 200 * DAY)
    add_order(ws, regular, at=T0 - 100 * DAY)
    ws.flows.add("second-purchase", now=T0 - 2 * HOUR)
    for cid in (one_order, comes_back, regular):
        add_order(ws, cid, at=T0 - HOUR)
    ws.flows.tick(T0)
    add_order(ws, comes_back, at=T0 + 10 * DAY)
    ws.flows.tick(T0 + 10 * DAY)
    ws.flows.tick(T0 + 21 * DAY)

    assert sent_to(ws, "second-purchase") == {one_order: ["second-purchase"]}
    state = entries(ws, "second-purchase")
    assert state[one_order]["status"] == "completed"
    assert state[comes_back]["exit_reason"] == "purchased"
    assert state[regular]["exit_reason"] == "not_first_order"
    assert entry_count(ws, "second-purchase") == 3  # the second order enrols no one again


def test_sunset(workspace: Workspace) -> None:
    ws = workspace
    monday_10 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    opens_again, silent, recent_opener, newcomer = make_contacts(ws, 4, at=T0 - 400 * DAY)
    set_contact(ws, silent, last_email_opened=T0 - 200 * DAY)
    set_contact(ws, recent_opener, last_email_opened=T0 - 10 * DAY)
    set_contact(ws, newcomer, created_at=T0 - 30 * DAY)
    ws.flows.add("sunset", now=T0)
    ws.flows.tick(monday_10 - HOUR)
    assert entry_count(ws, "sunset") == 0  # not Monday 10:00 yet
    ws.flows.tick(monday_10)
    add_event(ws, opens_again, "email_opened", at=monday_10 + 3 * DAY)
    ws.flows.tick(monday_10 + 3 * DAY)
    ws.flows.tick(monday_10 + 7 * DAY)  # next Monday: nobody enters twice
    ws.flows.tick(monday_10 + 14 * DAY)

    assert sent_to(ws, "sunset") == {
        opens_again: ["sunset-last-chance"],
        silent: ["sunset-last-chance"],
    }
    state = entries(ws, "sunset")
    assert state[opens_again]["exit_reason"] == "re-engaged"
    assert state[silent]["status"] == "completed"
    assert entry_count(ws, "sunset") == 2
    assert ws.store.tags_of(silent) == ["sunset"]
    assert ws.store.tags_of(opens_again) == []
    with ws.engine.connect() as conn:
        attrs = conn.execute(
            select(contacts.c.attributes).where(contacts.c.id == silent)
        ).scalar_one()
    assert attrs["email_suppressed"] is True
    # ... and on the suppression list that delivery checks at send time.
    listed = {s["contact_id"]: s for s in ws.delivery.suppressions()}
    assert set(listed) == {silent}
    assert listed[silent]["channel"] == "email" and listed[silent]["reason"] == "flow"
    with ws.engine.connect() as conn:
        email = conn.execute(select(contacts.c.email).where(contacts.c.id == silent)).scalar_one()
    assert listed[silent]["address"] == email.lower()


def test_cadence_retention(workspace: Workspace) -> None:
    ws = workspace
    people = make_contacts(ws, 5, at=T0 - 400 * DAY)
    by_analytics, by_median, not_due, analytics_says_no, single = people
    set_contact(ws, by_analytics, days_overdue=5.0)
    for days in (100, 70, 40):
        add_order(ws, by_median, at=T0 - days * DAY)
        add_order(ws, analytics_says_no, at=T0 - days * DAY)
    for days in (65, 35, 5):
        add_order(ws, not_due, at=T0 - days * DAY)
    set_contact(ws, analytics_says_no, days_overdue=-3.0)
    add_order(ws, single, at=T0 - 300 * DAY)
    add_order(ws, by_analytics, at=T0 - 50 * DAY)
    ws.flows.add("cadence-retention", now=T0)
    ten = T0 + HOUR  # T0 is 09:00 UTC, the schedule says 10:00
    ws.flows.tick(ten)
    add_order(ws, by_analytics, at=ten + 2 * DAY)
    ws.flows.tick(ten + 2 * DAY)
    ws.flows.tick(ten + 7 * DAY)

    state = entries(ws, "cadence-retention")
    assert set(state) == {by_analytics, by_median}
    with ws.engine.connect() as conn:
        entry_ids = {
            entry_id: path.split(" > ")[0].removeprefix("s0=")
            for entry_id, path in conn.execute(select(flow_entries.c.id, flow_entries.c.path))
        }
    sent = sent_to(ws, "cadence-retention")
    for entry_id, outcome in entry_ids.items():
        held = stable_uniform_py(entry_id, "cadence-retention:s0") < 0.1
        assert outcome == ("holdout" if held else "treatment")
    for cid in (by_analytics, by_median):
        expected = [] if state[cid]["holdout"] else ["cadence-nudge"]
        assert sent.get(cid, []) == expected
    assert state[by_analytics]["exit_reason"] == "purchased"  # goal during the 7-day window
    assert state[by_median]["status"] == "completed"


def test_post_holiday(workspace: Workspace) -> None:
    pytest.importorskip("winback.segments.service", reason="needs the segment refresh")
    ws = workspace
    start = datetime(2027, 1, 7, 0, 0, tzinfo=UTC)
    rome, new_york, no_zone, prospect, no_consent = make_contacts(ws, 5, at=start - 400 * DAY)
    set_contact(ws, rome, timezone="Europe/Rome")
    set_contact(ws, new_york, timezone="America/New_York")
    ws.store.set_consent(no_consent, "email", False, at=start - DAY, source="test")
    for cid in (rome, new_york, no_zone, no_consent):
        add_order(ws, cid, at=start - 50 * DAY)
    ws.flows.add("post-holiday", now=start)
    fire = datetime(2027, 1, 8, 6, 0, tzinfo=UTC)
    ws.flows.tick(fire)
    assert set(entries(ws, "post-holiday")) == {rome, new_york, no_zone}
    assert sent_to(ws, "post-holiday") == {}
    ws.flows.tick(datetime(2027, 1, 8, 9, 0, tzinfo=UTC))  # 10:00 in Rome
    assert set(sent_to(ws, "post-holiday")) == {rome}
    ws.flows.tick(datetime(2027, 1, 8, 10, 0, tzinfo=UTC))  # 10:00 UTC (shop zone)
    assert set(sent_to(ws, "post-holiday")) == {rome, no_zone}
    ws.flows.tick(datetime(2027, 1, 8, 15, 0, tzinfo=UTC))  # 10:00 in New York
    assert set(sent_to(ws, "post-holiday")) == {rome, no_zone, new_york}
    assert prospect not in entries(ws, "post-holiday")


def test_birthday(workspace: Workspace) -> None:
    ws = workspace
    today = datetime(2026, 3, 2, 0, 5, tzinfo=UTC)
    celebrates, other_day, no_consent = make_contacts(ws, 3, at=T0 - 400 * DAY)
    set_contact(ws, celebrates, birthday=datetime(1990, 3, 2).date(), timezone="Europe/Rome")
    set_contact(ws, other_day, birthday=datetime(1990, 3, 3).date())
    set_contact(ws, no_consent, birthday=datetime(1985, 3, 2).date())
    ws.store.set_consent(no_consent, "email", False, at=T0, source="test")
    ws.flows.add("birthday", now=T0)
    ws.flows.tick(today)
    assert set(entries(ws, "birthday")) == {celebrates}
    ws.flows.tick(datetime(2026, 3, 2, 7, 59, tzinfo=UTC))
    assert sent_to(ws, "birthday") == {}
    ws.flows.tick(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))  # 09:00 in Rome
    assert sent_to(ws, "birthday") == {celebrates: ["birthday"]}
    ws.flows.tick(datetime(2026, 3, 3, 0, 5, tzinfo=UTC))
    assert set(entries(ws, "birthday")) == {celebrates, other_day}
