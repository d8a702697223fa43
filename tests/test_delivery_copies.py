"""One address never receives two copies of a flow message, whether the two contacts that
share it are in one delivery batch or in two (real SMTP server, both databases)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, text, update

from tests.delivery_support import (
    add_contact,
    add_message,
    configure,
    http_server,
    outbox_row,
    reply_json,
    smtp_server,
)
from winback.clock import FixedClock
from winback.delivery.copies import REASON, lock_key
from winback.store.schema import contacts, flow_entries, flows, outbox
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


def _flow_entry(ws: Workspace, contact_id: int, entered_days_ago: float, **values: Any) -> int:
    """A flow entry of ``reactivation`` (the flow created once) for the contact."""
    now = ws.clock.now()
    with ws.engine.begin() as conn:
        flow_id = conn.execute(select(flows.c.id).where(flows.c.key == "reactivation")).scalar()
        if flow_id is None:
            flow_id = conn.execute(
                insert(flows)
                .values(key="reactivation", name="reactivation", definition={}, updated_at=now)
                .returning(flows.c.id)
            ).scalar_one()
        entered = now - timedelta(days=entered_days_ago)
        return int(
            conn.execute(
                insert(flow_entries)
                .values(
                    flow_id=flow_id,
                    contact_id=contact_id,
                    entered_at=entered,
                    step="email-1",
                    step_at=entered,
                    **values,
                )
                .returning(flow_entries.c.id)
            ).scalar_one()
        )


def _set_entry(ws: Workspace, outbox_id: int, entry_id: int) -> None:
    with ws.engine.begin() as conn:
        conn.execute(update(outbox).where(outbox.c.id == outbox_id).values(entry_id=entry_id))


def test_the_flow_window_is_the_overlap_of_the_two_stints(workspace: Workspace) -> None:
    """Ann got email-1 days ago and is still in the flow: her twin's email-1 is a copy
    however many days later it comes. A twin whose stint began after Ann's ended is a later
    pass through the flow and gets it."""
    ann = add_contact(workspace, "a1", email="ann@example.com")
    twin = add_contact(workspace, "a2", email="ann@example.com")
    eve = add_contact(workspace, "e1", email="eve@example.com")
    eve_twin = add_contact(workspace, "e2", email="eve@example.com")
    with smtp_server() as (url, inbox, _):
        ws = configure(workspace, smtp_url=url, quiet_hours="", frequency_caps={})
        clock = ws.clock
        assert isinstance(clock, FixedClock)
        first = add_message(ws, ann, key="k1")
        _set_entry(ws, first, _flow_entry(ws, ann, 0))
        eve_first = add_message(ws, eve, key="k3")
        _set_entry(ws, eve_first, _flow_entry(ws, eve, 0, status="completed"))
        ws.delivery.deliver_due()
        clock.advance(timedelta(days=10))
        with ws.engine.begin() as conn:  # Eve's stint ended nine days ago
            conn.execute(
                update(flow_entries)
                .where(flow_entries.c.contact_id == eve)
                .values(exited_at=clock.now() - timedelta(days=9))
            )
        late = add_message(ws, twin, key="k2")
        _set_entry(ws, late, _flow_entry(ws, twin, 1))
        again = add_message(ws, eve_twin, key="k4")
        _set_entry(ws, again, _flow_entry(ws, eve_twin, 1))
        ws.delivery.deliver_due()
    status = {i: outbox_row(ws, i)["status"] for i in (first, late, eve_first, again)}
    assert status == {first: "sent", late: "skipped", eve_first: "sent", again: "sent"}
    assert sorted(m["To"] for m in inbox.messages) == [
        "ann@example.com",
        "eve@example.com",
        "eve@example.com",
    ]


def test_messages_outside_flows_and_sms_by_number(workspace: Workspace, tmp_path: Path) -> None:
    """A per-contact message outside any flow (the same template and payload) is one copy
    per address; another payload is another message; SMS compares the E.164 number."""
    ann = add_contact(workspace, "a1", email="ann@example.com", phone="+393281234567")
    twin = add_contact(
        workspace, "a2", email="ann@example.com", phone="+393281234567", sms_consent=True
    )
    with ws_sms(workspace) as (ws, received):
        with ws.engine.begin() as conn:
            conn.execute(update(contacts).values(sms_consent=True))
        one = _feedback(ws, ann, "f1", "1001")
        copy = _feedback(ws, twin, "f2", "1001")
        other = _feedback(ws, twin, "f3", "1002")
        sms = add_message(ws, ann, "sms-hello", key="s1", channel="sms")
        sms_copy = add_message(ws, twin, "sms-hello", key="s2", channel="sms")
        ws.delivery.deliver_due()
        # Outside flows the window is delivery_copy_window_hours: two days on, still a copy;
        # past the window, the same message is a new one.
        clock = ws.clock
        assert isinstance(clock, FixedClock)
        clock.advance(timedelta(days=2))
        later_copy = _feedback(ws, twin, "f4", "1001")
        ws.delivery.deliver_due()
        clock.advance(timedelta(hours=ws.settings.delivery_copy_window_hours))
        renewed = _feedback(ws, twin, "f5", "1001")
        ws.delivery.deliver_due()
    ids = (one, copy, other, sms, sms_copy, later_copy, renewed)
    status = {i: outbox_row(ws, i)["status"] for i in ids}
    assert status == {
        one: "sent",
        copy: "skipped",
        other: "sent",
        sms: "sent",
        sms_copy: "skipped",
        later_copy: "skipped",
        renewed: "sent",
    }
    assert len(received) == 1  # one SMS to +393281234567


def _feedback(ws: Workspace, contact_id: int, key: str, order: str) -> int:
    """A transactional message outside any flow: a feedback request for ``order``."""
    oid = add_message(ws, contact_id, "feedback", key=key, priority="transactional")
    with ws.engine.begin() as conn:
        conn.execute(
            update(outbox)
            .where(outbox.c.id == oid)
            .values(flow=None, step=None, entry_id=None, payload={"order": order})
        )
    return oid


@contextmanager
def ws_sms(workspace: Workspace) -> Iterator[tuple[Workspace, list[bytes]]]:
    """The workspace with an SMS gateway (a local HTTP server) and an SMTP server."""
    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            reply_json(self, 201, {"sid": f"SM{len(received)}"})

        def log_message(self, *args: Any) -> None:
            pass

    (Path(workspace.path) / "templates" / "sms-hello.yaml").write_text(
        'channel: sms\nbody: "Hi {{ contact.first_name }}"\n'
    )
    (Path(workspace.path) / "templates" / "feedback.yaml").write_text(
        'subject: "How was it?"\nhtml: "<p>Tell us</p>"\n'
    )
    with http_server(Handler) as gateway, smtp_server() as (url, _inbox, _):
        yield (
            configure(
                workspace,
                smtp_url=url,
                quiet_hours="",
                frequency_caps={},
                sms_provider="gw",
                providers={"gw": {"channel": "sms", "url": gateway}},
            ),
            received,
        )


def test_two_workers_send_one_copy(workspace: Workspace) -> None:
    """Two delivery workers each claim one of two copies (batch size 1) and decide at the
    same time: one goes out, the other is skipped, in every round. While one worker holds an
    address (PostgreSQL: its advisory lock; SQLite: the write lock), the other waits for it
    instead of reading a stale state."""
    ws = configure(workspace, quiet_hours="", frequency_caps={}, delivery_batch_size=1)
    with smtp_server() as (url, inbox, _):
        ws = configure(ws, smtp_url=url)
        rounds = 4
        for n in range(rounds):
            ann = add_contact(ws, f"a{n}", email=f"ann{n}@example.com")
            twin = add_contact(ws, f"t{n}", email=f"ann{n}@example.com")
            add_message(ws, ann, key=f"k{n}a")
            add_message(ws, twin, key=f"k{n}b")
            workers = [ws.delivery.worker(), ws.delivery.worker()]
            claimed = [w.claim(ws.clock.now()) for w in workers]
            assert [len(c) for c in claimed] == [1, 1]
            start = threading.Barrier(2)
            decided: list[Any] = [None, None]

            def decide(i: int, start: threading.Barrier = start) -> None:
                start.wait()
                decided[i] = workers[i].decide(claimed[i], ws.clock.now())  # noqa: B023

            threads = [threading.Thread(target=decide, args=(i,)) for i in (0, 1)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            going = [d for ds in decided for d in ds if d.outgoing is not None]
            skipped = [d for ds in decided for d in ds if d.reason == REASON]
            assert (len(going), len(skipped)) == (1, 1), n
            for w in workers:
                w.close()

        # A worker holding the address (its transaction open) makes the other one wait,
        # and the other then sees the address taken.
        ann = add_contact(ws, "held", email="held@example.com")
        twin = add_contact(ws, "held2", email="held@example.com")
        mine = add_message(ws, ann, key="h1")
        add_message(ws, twin, key="h2")
        worker = ws.delivery.worker()
        with ws.engine.begin() as conn:
            conn.execute(update(outbox).where(outbox.c.id == mine).values(status="sending"))
        claimed_rows = worker.claim(ws.clock.now())
        result: list[Any] = []
        with ws.engine.connect() as holder:
            tx = holder.begin()
            if ws.engine.dialect.name == "postgresql":
                holder.execute(
                    text("SELECT pg_advisory_xact_lock(:k)"),
                    {"k": lock_key("email", "held@example.com")},
                )
            else:  # the write lock: BEGIN IMMEDIATE takes it with the first statement
                holder.execute(update(outbox).where(outbox.c.id == -1).values(status="x"))
            thread = threading.Thread(
                target=lambda: result.extend(worker.decide(claimed_rows, ws.clock.now()))
            )
            thread.start()
            thread.join(0.5)
            assert thread.is_alive()  # waiting for the address
            holder.execute(update(outbox).where(outbox.c.id == mine).values(message_id="<held@x>"))
            tx.commit()
        thread.join(30)
        assert [d.reason for d in result] == [REASON]
        worker.close()
    assert len(inbox.messages) == 0  # nothing was sent: the workers only decided
