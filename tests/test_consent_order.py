"""Consent changes take effect in the order they happened: a change applied late (an
unsubscribe kept in the inbox while the store was busy, an old event) never undoes a newer
one, whichever path writes it; the consent log keeps both."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from tests.delivery_support import add_contact, add_message
from winback.contact_edit import change_consent
from winback.delivery.inbound import EventIn
from winback.delivery.unsubscribes import Unsubscribe, apply_pending_unsubscribes, keep
from winback.segments.history import consent_at
from winback.store import activity
from winback.store.schema import consent_log, contacts
from winback.workspace import Workspace

H = timedelta(hours=1)


def _consent(ws: Workspace, cid: int) -> Any:
    with ws.engine.connect() as conn:
        return conn.execute(select(contacts.c.email_consent).where(contacts.c.id == cid)).scalar()


def _log(ws: Workspace, cid: int) -> list[tuple[bool, Any, str]]:
    with ws.engine.connect() as conn:
        return [
            (bool(r.granted), r.at, r.source)
            for r in conn.execute(
                select(consent_log.c.granted, consent_log.c.at, consent_log.c.source)
                .where(consent_log.c.contact_id == cid, consent_log.c.channel == "email")
                .order_by(consent_log.c.id)
            )
        ]


def _at(ws: Workspace, cid: int, when: Any) -> Any:
    c = contacts
    with ws.engine.connect() as conn:
        return conn.execute(select(consent_at("email", c, when)).where(c.c.id == cid)).scalar()


def test_a_kept_unsubscribe_does_not_revoke_a_later_grant(workspace: Workspace) -> None:
    ws = workspace
    now = ws.clock.now()
    cid = add_contact(ws, "c1", email="ada@example.com", email_consent=False)
    oid = add_message(ws, cid, key="first")
    clicked = now - 2 * H
    keep(  # the store was busy when the person clicked one-click unsubscribe
        ws.path,
        Unsubscribe(oid, cid, "ada@example.com", None, None, None, "one-click", clicked),
    )
    change = change_consent(ws.engine, cid, "email", True, at=now - H, source="api")
    assert change.changed
    assert apply_pending_unsubscribes(ws.engine, ws.store, ws.path) == 1
    assert _consent(ws, cid) is True  # the newer grant stands
    assert _log(ws, cid) == [
        (True, now - H, "api"),
        (False, clicked, "unsubscribe:one-click"),
    ]
    # At every instant the history answers as the changes happened.
    assert _at(ws, cid, clicked) is False
    assert _at(ws, cid, now - H) is True
    assert _at(ws, cid, now) is True
    # A change newer than every logged one applies.
    assert change_consent(ws.engine, cid, "email", False, at=now, source="api").changed
    assert _consent(ws, cid) is False


def test_every_consent_path_applies_changes_in_their_order(workspace: Workspace) -> None:
    """The event API, the store's consent change (feedback reports, the unsubscribe route)
    and the set-based writer for imports (one instant, or one per contact) all keep a newer
    grant over an older revocation written after it."""
    ws = workspace
    now = ws.clock.now()
    ids = [add_contact(ws, f"p{i}", email_consent=False) for i in range(4)]
    with ws.engine.begin() as conn:  # granted again an hour ago (an import, the API)
        assert activity.set_consent(
            conn, ids, "email", True, source="import:contacts.csv", at=now - H, now=now - H
        ) == sorted(ids)
    old = now - 3 * H
    ws.delivery.ingest(
        [EventIn(customer_id="p0", type="email_unsubscribed", occurred_at=old, event_id="u0")]
    )
    assert not ws.store.set_consent(ids[1], "email", False, at=old, source="complaint:arf")
    with ws.engine.begin() as conn:
        assert (
            activity.set_consent(
                conn, [ids[2]], "email", False, source="import:old.csv", at=old, now=now
            )
            == []
        )
        assert (
            activity.set_consent(
                conn,
                {ids[3]: old},
                "email",
                False,
                source="import:events.csv",
                at={ids[3]: old},
                now=now,
            )
            == []
        )
    for cid in ids:
        assert _consent(ws, cid) is True
        granted = [g for g, _at, _source in _log(ws, cid)]
        assert granted == [True, False]  # the log keeps the late revocation too
    # A revocation stamped after the grant applies on every path.
    later = now - H / 2
    ws.delivery.ingest(
        [EventIn(customer_id="p0", type="email_unsubscribed", occurred_at=later, event_id="u1")]
    )
    assert ws.store.set_consent(ids[1], "email", False, at=later, source="complaint:arf")
    with ws.engine.begin() as conn:
        assert (
            activity.set_consent(
                conn, ids[2:], "email", False, source="import:new.csv", at=later, now=now
            )
            == ids[2:]
        )
    assert [_consent(ws, cid) for cid in ids] == [False] * 4


def test_old_unsubscribes_imported_after_a_newer_consent_statement(
    workspace: Workspace, tmp_path: Path
) -> None:
    """A contacts file states consent today; an events file then brings an unsubscribe of
    2024: the file's statement is the newer change and stands, the unsubscribe is logged."""
    ws = workspace
    contacts_file = tmp_path / "contacts.csv"
    contacts_file.write_text("customer_id,email,email_consent\nc1,a@example.com,yes\n")
    events_file = tmp_path / "events.csv"
    events_file.write_text(
        "event_id,customer_id,type,occurred_at\ne1,c1,email_unsubscribed,2024-03-07T10:00:00Z\n"
    )
    ws.imports.contacts(contacts_file)
    report = ws.imports.events(events_file)
    assert report.imported == 1 and report.consent_changes == 0
    cid = int(ws.store.get_contact("c1")["id"])
    assert _consent(ws, cid) is True
    assert [(g, source) for g, _at, source in _log(ws, cid)] == [
        (True, "import:contacts.csv"),
        (False, "import:events.csv"),
    ]
