"""Send-time policies on both databases, with a fixed clock: frequency caps defer, quiet
hours defer to the end of the night in the contact's zone, transactional bypasses both."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.delivery_support import add_contact, add_message, configure, outbox_row, smtp_server
from winback.clock import FixedClock
from winback.delivery.worker.policies import (
    Cap,
    cap_next_allowed,
    parse_cap,
    parse_quiet_hours,
)
from winback.errors import InvalidSetting
from winback.workspace import Workspace

NOON = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def test_frequency_cap_defers_to_the_next_allowed_time(workspace: Workspace) -> None:
    clock = workspace.clock
    assert isinstance(clock, FixedClock)
    clock.set(NOON)
    cid = add_contact(workspace, "c1", email="a@example.com")
    with smtp_server() as (url, inbox, _):
        workspace = configure(
            workspace, smtp_url=url, frequency_caps={"email": "2/7d"}, quiet_hours=""
        )
        first = add_message(workspace, cid, key="f1:1:a")
        workspace.delivery.deliver_due()
        clock.advance(timedelta(days=1))
        second = add_message(workspace, cid, key="f2:1:a", flow="other")
        workspace.delivery.deliver_due()
        clock.advance(timedelta(days=1))
        third = add_message(workspace, cid, key="f3:1:a", flow="third")
        report = workspace.delivery.deliver_due()
        assert report.counts == {"deferred": 1}
        row = outbox_row(workspace, third)
        # The first message leaves the 7-day window at NOON + 7 days.
        assert row["status"] == "pending" and row["not_before"] == NOON + timedelta(days=7)
        assert "frequency cap" in row["last_error"] and row["attempts"] == 0
        clock.set(NOON + timedelta(days=7))
        assert workspace.delivery.deliver_due().counts == {"sent": 1}
    assert [outbox_row(workspace, i)["status"] for i in (first, second, third)] == ["sent"] * 3
    assert len(inbox.messages) == 3


def test_transactional_bypasses_caps_and_quiet_hours(workspace: Workspace) -> None:
    clock = workspace.clock
    assert isinstance(clock, FixedClock)
    clock.set(datetime(2026, 3, 2, 23, 30, tzinfo=UTC))  # night in UTC
    cid = add_contact(workspace, "c1", email="a@example.com", timezone="UTC")
    with smtp_server() as (url, inbox, _):
        workspace = configure(workspace, smtp_url=url, frequency_caps={"email": "1/7d"})
        marketing = add_message(workspace, cid, key="m")
        transactional = add_message(
            workspace, cid, "feedback-coupon", key="t", priority="transactional"
        )
        workspace.delivery.deliver_due()
    assert outbox_row(workspace, transactional)["status"] == "sent"
    m = outbox_row(workspace, marketing)
    assert m["status"] == "pending" and "quiet hours" in m["last_error"]
    assert m["not_before"] == datetime(2026, 3, 3, 8, 0, tzinfo=UTC)
    assert len(inbox.messages) == 1


def test_quiet_hours_follow_the_contacts_time_zone(workspace: Workspace) -> None:
    clock = workspace.clock
    assert isinstance(clock, FixedClock)
    clock.set(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))  # 23:00 in Sydney, 13:00 in Rome
    sydney = add_contact(workspace, "s", email="s@example.com", timezone="Australia/Sydney")
    rome = add_contact(workspace, "r", email="r@example.com", timezone="Europe/Rome")
    with smtp_server() as (url, inbox, _):
        workspace = configure(workspace, smtp_url=url, quiet_hours="21:00-08:00")
        s_id = add_message(workspace, sydney, key="s")
        r_id = add_message(workspace, rome, key="r")
        workspace.delivery.deliver_due()
        s_row = outbox_row(workspace, s_id)
        # 08:00 next morning in Sydney (UTC+11 in March) is 21:00 UTC the same day.
        assert s_row["not_before"] == datetime(2026, 3, 2, 21, 0, tzinfo=UTC)
        assert outbox_row(workspace, r_id)["status"] == "sent"
        clock.set(s_row["not_before"])
        assert workspace.delivery.deliver_due().counts == {"sent": 1}
    assert sorted(m["To"] for m in inbox.messages) == ["r@example.com", "s@example.com"]


def test_suppression_list_wins_over_consent(workspace: Workspace) -> None:
    cid = add_contact(workspace, "c1", email="A@Example.com")
    workspace.delivery.suppress("email", "a@example.COM")
    oid = add_message(workspace, cid)
    with smtp_server() as (url, inbox, _):
        workspace = configure(workspace, smtp_url=url, quiet_hours="")
        workspace.delivery.deliver_due()
    assert outbox_row(workspace, oid)["status"] == "suppressed" and inbox.messages == []


def test_claims_only_due_rows_and_transactional_first(workspace: Workspace) -> None:
    ws = workspace
    cid = add_contact(ws, "c1", email="a@example.com")
    now = ws.clock.now()
    future = add_message(ws, cid, key="later", not_before=now + timedelta(hours=1))
    for i in (3, 2, 1):  # marketing, older than the transactional ones
        add_message(ws, cid, key=f"m{i}", not_before=now - timedelta(hours=i + 10))
    add_message(ws, cid, "feedback-coupon", key="t2", priority="transactional")
    add_message(
        ws,
        cid,
        "feedback-coupon",
        key="t1",
        priority="transactional",
        not_before=now - timedelta(minutes=1),
    )
    ws = configure(ws, smtp_url="smtp://127.0.0.1:1", delivery_batch_size=3)
    worker = ws.delivery.worker()
    assert [r["dedup_key"] for r in worker.claim(now)] == ["t1", "t2", "m3"]
    assert [r["dedup_key"] for r in worker.claim(now)] == ["m2", "m1"]
    assert outbox_row(ws, future)["status"] == "pending"
    assert worker.claim(now) == []  # claimed rows are not claimed again
    worker.close()


def test_policy_parsing() -> None:
    assert parse_cap("email", "2/7d") == Cap(2, timedelta(days=7))
    assert parse_cap("sms", "1/12h") == Cap(1, timedelta(hours=12))
    with pytest.raises(InvalidSetting, match="frequency_caps.email = 'often'"):
        parse_cap("email", "often")
    with pytest.raises(InvalidSetting, match="quiet_hours = '25:00-08:00'"):
        parse_quiet_hours("25:00-08:00")
    assert parse_quiet_hours("") is None
    now = NOON
    recent = [now - timedelta(days=1), now - timedelta(days=3), now - timedelta(days=9)]
    assert cap_next_allowed(recent, Cap(2, timedelta(days=7)), now) == now + timedelta(days=4)
    assert cap_next_allowed(recent, Cap(3, timedelta(days=7)), now) is None


def test_concurrent_claims_never_share_a_row(workspace: Workspace) -> None:
    """Several workers claiming at once (SKIP LOCKED on PostgreSQL, serialised writers on
    SQLite) split the due rows between them: every row claimed exactly once."""
    import threading

    cids = [add_contact(workspace, f"c{i}", email=f"c{i}@example.com") for i in range(40)]
    for cid in cids:
        add_message(workspace, cid, key=f"k{cid}")
    workspace = configure(workspace, smtp_url="smtp://127.0.0.1:1", delivery_batch_size=7)
    workers = [workspace.delivery.worker() for _ in range(4)]
    claimed: list[list[int]] = [[] for _ in workers]
    barrier = threading.Barrier(len(workers))

    def claim(i: int) -> None:
        barrier.wait()
        while rows := workers[i].claim(workspace.clock.now()):
            claimed[i].extend(int(r["id"]) for r in rows)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    every = [oid for ids in claimed for oid in ids]
    assert len(every) == len(set(every)) == 40
    for w in workers:
        w.close()
