"""Erasing a contact's personal data: `winback contacts delete` and the flows'
`delete_contact` step (the sunset template configured to delete), on both databases."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select
from typer.testing import CliRunner

from tests.conftest import T0
from tests.delivery_support import add_contact, add_message, configure, outbox_row
from tests.flows.helpers import (
    add_event,
    add_order,
    entries,
    make_contacts,
    sent_to,
    set_contact,
)
from winback.cli import app
from winback.delivery.worker.policies import hashed_address, suppressed_addresses
from winback.erasure import erasure_log
from winback.store.schema import (
    consent_log,
    contact_tags,
    contacts,
    events,
    flow_entries,
    flows,
    orders,
    suppressions,
)
from winback.workspace import Workspace

runner = CliRunner()
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


def contact(ws: Workspace, cid: int) -> dict[str, Any]:
    with ws.engine.connect() as conn:
        return dict(conn.execute(select(contacts).where(contacts.c.id == cid)).mappings().one())


def test_contacts_delete_erases_keeps_orders_and_blocks_reimport(
    workspace: Workspace, tmp_path: Path
) -> None:
    ws = workspace
    cid = add_contact(
        ws,
        "c1",
        email="ada@example.com",
        phone="+15550001",
        first_name="Ada",
        last_name="Lovelace",
        birthday=date(1990, 12, 10),
        timezone="Europe/London",
        sms_consent=True,
        attributes={"city": "London", "push_token": "tok"},
        rfm_segment="Champions",
        p_alive=0.9,
    )
    keep = add_contact(ws, "c2", email="bob@example.com", first_name="Bob")
    add_order(ws, cid, at=T0 - 10 * DAY, amount=80.0)
    add_event(ws, cid, "feedback_submitted", at=T0 - DAY, answer="call me on +15550001")
    ws.store.add_tag([cid, keep], "vip", at=T0, source="test")
    ws.delivery.suppress("email", "ada@example.com")
    with ws.engine.begin() as conn:
        conn.execute(
            insert(suppressions).values(
                channel="sms", address="+15550001", contact_id=cid, reason="manual", created_at=T0
            )
        )
    with ws.engine.begin() as conn:
        fid = conn.execute(
            insert(flows)
            .values(
                key="other",
                name="Other",
                definition={},
                version=1,
                status="enabled",
                updated_at=T0,
            )
            .returning(flows.c.id)
        ).scalar_one()
        for who in (cid, keep):
            conn.execute(
                insert(flow_entries).values(
                    flow_id=fid,
                    contact_id=who,
                    entered_at=T0,
                    step="s1",
                    step_at=T0,
                    status="active",
                    wake_at=T0 + DAY,
                    waiting=False,
                    holdout=False,
                )
            )
    pending = add_message(ws, cid, key="m1")
    other_pending = add_message(ws, keep, key="m2")

    w = ["-w", str(ws.path)]
    env = {"WINBACK_DATABASE_URL": ws.database_url}
    out = runner.invoke(
        app,
        ["contacts", "delete", "c1", "--yes", "--reason", "request 12", "--json", *w],
        env=env,
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["erased"] is True

    row = contact(ws, cid)
    for column in ("email", "phone", "first_name", "last_name", "birthday", "timezone"):
        assert row[column] is None, column
    assert row["attributes"] == {} and row["rfm_segment"] is None and row["p_alive"] is None
    assert (row["email_consent"], row["sms_consent"], row["push_consent"]) == (False,) * 3
    assert row["erased_at"] is not None and row["customer_id"] == "c1"
    # orders kept for aggregate reporting, tied only to the empty tombstone
    assert row["orders_count"] == 1 and float(row["revenue_total"]) == 80.0
    with ws.engine.connect() as conn:
        assert conn.execute(select(orders.c.amount).where(orders.c.contact_id == cid)).scalar()
        assert (
            conn.execute(select(events.c.properties).where(events.c.contact_id == cid)).scalar()
            is None
        )
        assert (
            conn.execute(
                select(func.count())
                .select_from(contact_tags)
                .where(contact_tags.c.contact_id == cid)
            ).scalar()
            == 0
        )
        assert conn.execute(select(contact_tags.c.contact_id)).scalar() == keep
        # the suppressions of the contact and of its address stay, but hashed: no address is
        # kept in clear, nor the contact, nor the detail
        kept = conn.execute(
            select(
                suppressions.c.channel,
                suppressions.c.address,
                suppressions.c.contact_id,
                suppressions.c.detail,
            ).order_by(suppressions.c.channel)
        ).all()
        assert [tuple(r) for r in kept] == [
            ("email", hashed_address("email", "ada@example.com"), None, None),
            ("sms", hashed_address("sms", "+15550001"), None, None),
        ]
        assert hashed_address("email", " Ada@Example.com") == kept[0][1]
        assert kept[0][1].startswith("sha256:") and "ada" not in kept[0][1]
        revoked = conn.execute(
            select(consent_log.c.channel, consent_log.c.source)
            .where(consent_log.c.contact_id == cid)
            .order_by(consent_log.c.channel)
        ).all()
        assert [tuple(r) for r in revoked] == [
            ("email", "erasure:cli"),
            ("push", "erasure:cli"),
            ("sms", "erasure:cli"),
        ]
        audit = erasure_log(conn, cid)
    assert audit == [{"at": row["erased_at"], "source": "cli", "reason": "request 12"}]
    assert outbox_row(ws, pending)["status"] == "skipped"
    assert outbox_row(ws, pending)["last_error"] == "contact erased"
    assert outbox_row(ws, other_pending)["status"] == "pending"
    with ws.engine.connect() as conn:
        states = dict(
            conn.execute(select(flow_entries.c.contact_id, flow_entries.c.exit_reason)).all()
        )
    assert states == {cid: "erased", keep: None}

    # again: nothing to do, no second audit row
    again = runner.invoke(app, ["contacts", "delete", "c1", "--yes", *w], env=env)
    assert again.exit_code == 0 and "erased already" in again.stdout
    with ws.engine.connect() as conn:
        assert len(erasure_log(conn, cid)) == 1

    # a re-import of the same customer does not bring the person back
    csv = tmp_path / "contacts.csv"
    csv.write_text(
        "customer_id,email,first_name,email_consent\n"
        "c1,ada@example.com,Ada,true\n"
        "c3,cy@example.com,Cy,true\n",
        encoding="utf-8",
    )
    report = ws.imports.contacts(csv)
    assert (report.imported, report.rejected) == (1, 1)
    assert report.reject_file is not None
    assert "personal data was erased" in report.reject_file.read_text(encoding="utf-8")
    row = contact(ws, cid)
    assert row["email"] is None and row["email_consent"] is False

    # the address comes back under another customer id, with consent: its unsubscribe still
    # holds (checked through the hashed entry), and the message is suppressed at send time
    newcomer = add_contact(ws, "c4", email="ADA@example.com", email_consent=True)
    with ws.engine.connect() as conn:
        assert suppressed_addresses(conn, [("email", "ada@example.com")]) == {
            ("email", "ada@example.com")
        }
        assert suppressed_addresses(conn, [("email", "cy@example.com")]) == set()
    message = add_message(ws, newcomer, key="m3")
    ws = configure(ws, smtp_url="smtp://127.0.0.1:1")  # decided only: nothing is sent
    worker = ws.delivery.worker()
    try:
        decided = {int(d.row["id"]): d for d in worker.decide(worker.claim(ws.clock.now()), T0)}
    finally:
        worker.close()
    assert decided[message].status == "suppressed"
    assert decided[other_pending].status != "suppressed"

    # without --yes the command asks, and "no" changes nothing
    asked = runner.invoke(app, ["contacts", "delete", "c2", *w], input="n\n", env=env)
    assert asked.exit_code != 0 and contact(ws, keep)["email"] == "bob@example.com"
    unknown = runner.invoke(app, ["contacts", "delete", "nobody", "--yes", *w], env=env)
    assert unknown.exit_code != 0


def test_sunset_configured_to_delete(workspace: Workspace) -> None:
    """The sunset template with its `else` branch replaced by `delete_contact`, driven in
    simulated time: the non-opener is erased; the one who opens exits re-engaged."""
    ws = workspace
    monday_10 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    opens_again, silent, recent_opener = make_contacts(ws, 3, at=T0 - 400 * DAY)
    set_contact(ws, silent, last_email_opened=T0 - 200 * DAY, first_name="Sil")
    set_contact(ws, recent_opener, last_email_opened=T0 - 10 * DAY)
    add_order(ws, silent, at=T0 - 300 * DAY, amount=42.0)
    ws.flows.add("sunset", now=T0)
    path = ws.path / "flows" / "sunset.yaml"
    text = path.read_text(encoding="utf-8")
    start = text.index("    else:\n")
    path.write_text(
        text[:start] + "    else:\n      - delete_contact: {reason: sunset}\n",
        encoding="utf-8",
    )
    ws.flows.sync(T0)

    ws.flows.tick(monday_10)
    add_event(ws, opens_again, "email_opened", at=monday_10 + 3 * DAY)
    ws.flows.tick(monday_10 + 3 * DAY)
    ws.flows.tick(monday_10 + 7 * DAY)
    ws.flows.tick(monday_10 + 14 * DAY + HOUR)

    assert sent_to(ws, "sunset") == {
        opens_again: ["sunset-last-chance"],
        silent: ["sunset-last-chance"],
    }
    state = entries(ws, "sunset")
    assert state[opens_again]["exit_reason"] == "re-engaged"
    assert state[silent]["status"] == "completed"
    erased = contact(ws, silent)
    assert erased["erased_at"] is not None and erased["email"] is None
    assert erased["first_name"] is None and erased["email_consent"] is False
    assert float(erased["revenue_total"]) == 42.0
    assert contact(ws, opens_again)["erased_at"] is None
    assert contact(ws, opens_again)["email"] == "c0@example.com"
    with ws.engine.connect() as conn:
        audit = erasure_log(conn, silent)
    assert [(a["source"], a["reason"]) for a in audit] == [("flow:sunset", "sunset")]
    assert ws.delivery.suppressions() == []  # erased, not suppressed: no address is kept
