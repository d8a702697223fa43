"""The flows of the source documents (feedback for a discount, no email clicks, sales
follow-up without reply, first-order anniversary), each run on the injected clock with the
exact path of every contact."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from tests.conftest import T0
from tests.flows.helpers import (
    add_event,
    add_order,
    entries,
    make_contacts,
    sent_to,
    set_contact,
)
from winback.flows.labels import step_labels
from winback.flows.program import load_program
from winback.flows.service import library_root
from winback.store.schema import outbox
from winback.workspace import Workspace

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


def _steps_of(ws: Workspace, flow: str) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    with ws.engine.connect() as conn:
        for cid, step in conn.execute(
            select(outbox.c.contact_id, outbox.c.step)
            .where(outbox.c.flow == flow)
            .order_by(outbox.c.id)
        ):
            out.setdefault(int(cid), []).append(step)
    return out


@pytest.mark.slow
def test_feedback_discount_follows_the_source(workspace: Workspace) -> None:
    ws = workspace
    (
        quick,
        clicked,
        clicked_late_done,
        silent,
        reminder_done,
        reminder_then_done,
        second_only,
        second_then_done,
    ) = make_contacts(ws, 8, at=T0 - 100 * DAY)
    (no_consent,) = make_contacts(ws, 1, at=T0 - 100 * DAY, consent=False, prefix="n")
    everyone = [
        quick,
        clicked,
        clicked_late_done,
        silent,
        reminder_done,
        reminder_then_done,
        second_only,
        second_then_done,
        no_consent,
    ]
    ws.flows.add("feedback-discount", now=T0 - HOUR)
    ws.store.add_tag(everyone, "inactive", at=T0, source="import")
    ws.flows.tick(T0)

    # (day, contact, the feedback email clicked or None for a completed feedback), in the
    # order they happen; a tick each morning.
    happenings: list[tuple[float, int, str | None]] = [
        (0.8, quick, "feedback-request"),
        (0.8, quick, None),
        (0.9, clicked, "feedback-request"),
        (0.9, clicked_late_done, "feedback-request"),
        (3.9, reminder_done, "feedback-reminder"),
        (3.9, reminder_done, None),
        (4.5, clicked_late_done, None),
        (4.5, reminder_then_done, "feedback-reminder"),
        (5.5, reminder_then_done, None),
        (7.5, second_only, "feedback-reminder-last"),
        (8.5, second_then_done, "feedback-reminder-last"),
        (11.5, second_then_done, None),
    ]
    for day in (1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 21):
        for at_day, cid, template in happenings:
            if day - 1 < at_day <= day:
                at = T0 + at_day * DAY
                if template is None:
                    add_event(ws, cid, "feedback_submitted", at=at, score=8)
                else:
                    add_event(ws, cid, "email_clicked", at=at, link="feedback", template=template)
        ws.flows.tick(T0 + day * DAY)
        if day == 1:
            # The click alone tags the contact partially active.
            assert ws.store.tags_of(clicked) == ["inactive", "partially_active"]
            assert ws.store.tags_of(silent) == ["inactive"]
        if day == 8:
            # So does a click on the last reminder.
            assert ws.store.tags_of(second_only) == ["inactive", "partially_active"]

    reminded = ["feedback-request", "feedback-reminder"]
    reminded_twice = [*reminded, "feedback-reminder-last"]
    clicked_reminders = ["feedback-reminder-clicked", "feedback-reminder-clicked"]
    assert sent_to(ws, "feedback-discount") == {
        quick: ["feedback-request", "feedback-coupon"],
        clicked: ["feedback-request", *clicked_reminders],
        clicked_late_done: ["feedback-request", "feedback-reminder-clicked", "feedback-coupon"],
        silent: reminded_twice,
        reminder_done: [*reminded, "feedback-coupon"],
        reminder_then_done: [*reminded, "feedback-coupon"],
        second_only: [*reminded_twice, *clicked_reminders],
        second_then_done: [*reminded_twice, "feedback-reminder-clicked", "feedback-coupon"],
    }
    steps = _steps_of(ws, "feedback-discount")
    assert steps[clicked] == ["request", "reminder-clicked-1", "reminder-clicked-2"]
    assert steps[silent] == ["request", "reminder-unopened-1", "reminder-unopened-2"]
    assert steps[second_only] == [
        "request",
        "reminder-unopened-1",
        "reminder-unopened-2",
        "reminder-clicked-1",
        "reminder-clicked-2",
    ]
    # Message days: the clicked sequence restarts from the click on the last reminder.
    with ws.engine.connect() as conn:
        days = [
            (created - T0) / DAY
            for (created,) in conn.execute(
                select(outbox.c.created_at)
                .where(outbox.c.contact_id == second_only)
                .order_by(outbox.c.id)
            )
        ]
    assert days == [0, 3, 7, 10, 14]

    state = entries(ws, "feedback-discount")
    coupon = " > completed.then.0=tagged > completed.then.1=untagged > completed.then.2=queued"
    assert state[quick]["path"] == (
        "request=queued > clicked=waiting > clicked=event > partially-active=tagged"
        " > completed=then" + coupon
    )
    assert state[silent]["path"] == (
        "request=queued > clicked=waiting > clicked=timeout > reminder-unopened-1=queued"
        " > await-unopened-1=waiting > await-unopened-1=timeout > reminder-unopened-2=queued"
        " > await-unopened-2=waiting > await-unopened-2=timeout > lost-unopened=tagged"
    )
    assert state[reminder_done]["path"] == (
        "request=queued > clicked=waiting > clicked=timeout > reminder-unopened-1=queued"
        " > await-unopened-1=waiting > await-unopened-1=event > partially-active=tagged"
        " > completed=then" + coupon
    )
    assert state[reminder_then_done]["path"] == (
        "request=queued > clicked=waiting > clicked=timeout > reminder-unopened-1=queued"
        " > await-unopened-1=waiting > await-unopened-1=event > partially-active=tagged"
        " > completed=else > await-clicked=waiting > await-clicked=event"
        " > await-clicked.then.0=tagged > await-clicked.then.1=untagged"
        " > await-clicked.then.2=queued"
    )
    assert state[second_only]["path"] == (
        "request=queued > clicked=waiting > clicked=timeout > reminder-unopened-1=queued"
        " > await-unopened-1=waiting > await-unopened-1=timeout > reminder-unopened-2=queued"
        " > await-unopened-2=waiting > await-unopened-2=event > partially-active=tagged"
        " > completed=else > await-clicked=waiting > await-clicked=timeout"
        " > reminder-clicked-1=queued > await-clicked-1=waiting > await-clicked-1=timeout"
        " > reminder-clicked-2=queued > await-clicked-2=waiting > await-clicked-2=timeout"
        " > lost-clicked=tagged"
    )
    assert state[second_then_done]["path"] == (
        "request=queued > clicked=waiting > clicked=timeout > reminder-unopened-1=queued"
        " > await-unopened-1=waiting > await-unopened-1=timeout > reminder-unopened-2=queued"
        " > await-unopened-2=waiting > await-unopened-2=event > partially-active=tagged"
        " > completed=else > await-clicked=waiting > await-clicked=timeout"
        " > reminder-clicked-1=queued > await-clicked-1=waiting > await-clicked-1=event"
        " > await-clicked-1.then.0=tagged > await-clicked-1.then.1=untagged"
        " > await-clicked-1.then.2=queued"
    )
    completed = [quick, clicked_late_done, reminder_done, reminder_then_done, second_then_done]
    for cid in completed:
        assert state[cid]["exit_reason"] == "feedback_completed"
        assert ws.store.tags_of(cid) == ["active", "partially_active"]
    for cid in (clicked, second_only):
        assert state[cid]["exit_reason"] == "temporary_lost"
        assert ws.store.tags_of(cid) == ["inactive", "partially_active", "temporary_lost"]
    assert state[silent]["exit_reason"] == "temporary_lost"
    assert ws.store.tags_of(silent) == ["inactive", "temporary_lost"]
    assert ws.store.tags_of(no_consent) == ["inactive"]


def test_no_email_clicks(workspace: Workspace) -> None:
    ws = workspace
    monday = T0 + DAY + HOUR  # T0 is Sunday 2026-03-01 09:00 UTC; Mondays fire at 10:00
    later_clicks, never_clicks, never_clicked, recent, long_ago, not_opening = make_contacts(
        ws, 6, at=T0 - 400 * DAY
    )
    for cid, opened, clicked in [
        (later_clicks, T0 - 10 * DAY, T0 - 120 * DAY),
        (never_clicks, T0 - 10 * DAY, T0 - 150 * DAY),
        (never_clicked, T0 - 5 * DAY, None),
        (recent, T0 - 5 * DAY, T0 - 30 * DAY),
        (long_ago, T0 - 5 * DAY, T0 - 300 * DAY),
        (not_opening, T0 - 200 * DAY, T0 - 120 * DAY),
    ]:
        set_contact(ws, cid, last_email_opened=opened, last_email_link_clicked=clicked)
    ws.flows.add("no-email-clicks", now=T0)
    ws.flows.tick(T0)
    assert entries(ws, "no-email-clicks") == {}
    ws.flows.tick(monday)
    assert set(sent_to(ws, "no-email-clicks")) == {later_clicks, never_clicks, never_clicked}
    add_event(ws, later_clicks, "email_clicked", at=monday + 4 * DAY)
    ws.flows.tick(monday + 5 * DAY)
    ws.flows.tick(monday + 7 * DAY)  # the next Monday: no second chance within 180 days
    ws.flows.tick(monday + 14 * DAY)
    state = entries(ws, "no-email-clicks")
    assert state[later_clicks]["path"] == (
        "another-chance=queued > await-click=waiting > await-click=event"
    )
    assert state[later_clicks]["exit_reason"] == "clicked"
    for cid in (never_clicks, never_clicked):
        assert state[cid]["path"] == (
            "another-chance=queued > await-click=waiting > await-click=timeout > non-clicker=tagged"
        )
        assert ws.store.tags_of(cid) == ["non_clicker"]
    assert sent_to(ws, "no-email-clicks") == {
        cid: ["no-clicks-another-chance"] for cid in (later_clicks, never_clicks, never_clicked)
    }


@pytest.mark.slow
def test_sales_follow_up_without_reply_with_backfill(workspace: Workspace) -> None:
    ws = workspace
    waiting, replied, just_late, too_old, live, live_buyer, live_replies = make_contacts(
        ws, 7, at=T0 - 100 * DAY
    )
    for cid, ago in [(waiting, 2 * DAY), (replied, 2 * DAY), (just_late, 3.5 * DAY)]:
        add_event(ws, cid, "sales_call", at=T0 - ago)
    add_event(ws, too_old, "sales_call", at=T0 - 6 * DAY)
    add_event(ws, replied, "sales_reply", at=T0 - DAY)
    ws.flows.add("sales-follow-up", now=T0)  # back-fills the calls of the last 14 days
    ws.flows.tick(T0)
    # Timed out half a day ago (within late_by): the follow-up goes out at once.
    assert sent_to(ws, "sales-follow-up") == {just_late: ["sales-follow-up"]}
    for cid in (live, live_buyer, live_replies):
        add_event(ws, cid, "sales_call", at=T0 + 20 * HOUR)
    ws.flows.tick(T0 + DAY)  # 3 days after the call of 2 days before enable
    assert sent_to(ws, "sales-follow-up") == {
        just_late: ["sales-follow-up"],
        waiting: ["sales-follow-up"],
    }
    add_order(ws, live_buyer, at=T0 + 2 * DAY)
    add_event(ws, live_replies, "sales_reply", at=T0 + 3 * DAY)
    for day in (2, 3, 4, 5, 8, 12, 15):
        ws.flows.tick(T0 + day * DAY)
    state = entries(ws, "sales-follow-up")
    assert too_old not in state
    assert state[replied]["exit_reason"] == state[live_replies]["exit_reason"] == "replied"
    assert state[replied]["path"] == "await-reply=event > replied=replied"
    assert state[live_buyer]["exit_reason"] == "purchased"
    follow_ups = ["sales-follow-up", "sales-follow-up-last"]
    assert sent_to(ws, "sales-follow-up") == {
        just_late: follow_ups,
        waiting: follow_ups,
        live: follow_ups,
    }
    assert state[waiting]["path"] == (
        "await-reply=timeout > follow-up=queued > await-reply-2=waiting > await-reply-2=timeout"
        " > follow-up-last=queued > await-reply-3=waiting > await-reply-3=timeout"
        " > no-reply=tagged"
    )
    assert state[live]["path"] == "await-reply=waiting > " + state[waiting]["path"]
    assert ws.store.tags_of(live) == ["sales_no_reply"]


def test_first_order_anniversary(workspace: Workspace) -> None:
    ws = workspace
    rome, new_york, this_year, other_day = make_contacts(ws, 4, at=T0 - 1000 * DAY)
    add_order(ws, rome, at=datetime(2025, 3, 1, 10, 0, tzinfo=UTC))
    add_order(ws, rome, at=datetime(2025, 9, 1, 10, 0, tzinfo=UTC))
    add_order(ws, new_york, at=datetime(2023, 3, 1, 18, 0, tzinfo=UTC))
    add_order(ws, this_year, at=datetime(2026, 3, 1, 6, 0, tzinfo=UTC))
    add_order(ws, other_day, at=datetime(2024, 3, 2, 6, 0, tzinfo=UTC))
    set_contact(ws, rome, timezone="Europe/Rome")
    set_contact(ws, new_york, timezone="America/New_York")
    ws.flows.add("first-order-anniversary", now=T0 - DAY)
    ws.flows.tick(datetime(2026, 3, 1, 0, 5, tzinfo=UTC))
    assert set(entries(ws, "first-order-anniversary")) == {rome, new_york}
    ws.flows.tick(datetime(2026, 3, 1, 8, 0, tzinfo=UTC))  # 09:00 in Rome
    assert sent_to(ws, "first-order-anniversary") == {rome: ["first-order-anniversary"]}
    ws.flows.tick(datetime(2026, 3, 1, 14, 0, tzinfo=UTC))  # 09:00 in New York
    ws.flows.tick(datetime(2026, 3, 2, 0, 5, tzinfo=UTC))
    assert sent_to(ws, "first-order-anniversary") == {
        rome: ["first-order-anniversary"],
        new_york: ["first-order-anniversary"],
    }
    assert entries(ws, "first-order-anniversary")[rome]["path"] == "anniversary=queued"
    assert other_day in entries(ws, "first-order-anniversary")


def test_signup_anniversary_audience(workspace: Workspace) -> None:
    ws = workspace
    (two_years,) = make_contacts(ws, 1, at=datetime(2024, 3, 1, 12, 0, tzinfo=UTC), prefix="a")
    (today,) = make_contacts(ws, 1, at=datetime(2026, 3, 1, 1, 0, tzinfo=UTC), prefix="b")
    (tomorrow,) = make_contacts(ws, 1, at=datetime(2025, 3, 2, 1, 0, tzinfo=UTC), prefix="c")
    ws.flows.folder.mkdir(exist_ok=True)
    (ws.flows.folder / "signup.yaml").write_text(
        "name: Sign-up anniversary\n"
        'trigger: {schedule: {every: day, at: "00:05", anniversary: signup}}\n'
        "entry: {consent: email, reentry: after 300d}\n"
        "steps:\n  - send: {channel: email, template: first-order-anniversary}\n"
    )
    ws.flows.enable("signup", now=T0 - DAY)
    ws.flows.tick(datetime(2026, 3, 1, 0, 5, tzinfo=UTC))
    ws.flows.tick(datetime(2026, 3, 1, 2, 0, tzinfo=UTC))
    assert set(entries(ws, "signup")) == {two_years}
    ws.flows.tick(datetime(2026, 3, 2, 0, 5, tzinfo=UTC))
    assert set(entries(ws, "signup")) == {two_years, tomorrow}
    assert today not in sent_to(ws, "signup")


@pytest.mark.parametrize(
    "template",
    ["feedback-discount", "no-email-clicks", "sales-follow-up", "first-order-anniversary"],
)
def test_every_step_of_the_source_flows_is_named(template: str) -> None:
    program = load_program(library_root() / template / "flow.yaml")
    unnamed = [n.id for n in program.ordered() if n.step is not None and n.step.name is None]
    assert unnamed == []
    first = program.nodes[program.first]
    assert step_labels(program)[first.id] == first.step.name
