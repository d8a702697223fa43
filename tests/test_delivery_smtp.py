"""Email end to end against a real SMTP server (aiosmtpd in a thread)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from tests.delivery_support import add_contact, add_message, configure, outbox_row, smtp_server
from winback.delivery.channels.smtp import parse_smtp_url
from winback.delivery.links.tokens import TokenSigner
from winback.delivery.messages.mime import message_id_for
from winback.errors import InvalidSetting
from winback.store.schema import contacts, events, orders, suppressions
from winback.workspace import Workspace

T0_MAIL = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _parts(msg: EmailMessage) -> tuple[str, str]:
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def test_email_arrives_with_headers_parts_links_and_signatures(workspace: Workspace) -> None:
    cid = add_contact(workspace, "c1", email="ada@example.com", first_name="Ada")
    with workspace.engine.begin() as conn:
        conn.execute(
            orders.insert().values(
                order_id="o1",
                contact_id=cid,
                ordered_at=workspace.clock.now(),
                amount=25,
                currency="EUR",
                items=[{"name": "Blue mug", "price": 12.5, "url": "https://shop.example/mug"}],
            )
        )
    oid = add_message(workspace, cid, "reactivation-1", key="reactivation:1:email-1")
    with smtp_server() as (url, inbox, _):
        workspace = configure(
            workspace, smtp_url=url, mail_from="news@shop.example", mail_from_name="Shop"
        )
        report = workspace.delivery.deliver_due()
    assert report.counts["sent"] == 1
    [msg] = inbox.messages
    assert inbox.envelopes == [("news@shop.example", ["ada@example.com"])]
    assert msg["Subject"] == "Ada, it's been a while"
    assert msg["From"] == "Shop <news@shop.example>"
    assert msg["Message-ID"] == message_id_for("reactivation:1:email-1", "shop.example")
    assert msg["Date"] is not None
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsub = re.fullmatch(r"<(http://127\.0\.0\.1:8000/u/([^>]+))>", msg["List-Unsubscribe"])
    assert unsub is not None
    text, html = _parts(msg)
    assert "Blue mug" in html and "Ada" in text and "<" not in text.split("\n")[0]
    signer = TokenSigner(workspace.settings.secret_key)
    u = signer.verify("u", unsub.group(2))
    assert u is not None and u.message == oid and u.contact == cid
    # Every outside link goes through a signed click redirect; the pixel is signed.
    clicks = re.findall(r'href="http://127\.0\.0\.1:8000/c/([^"]+)"', html)
    assert clicks, html
    urls = {signer.verify("c", t).url for t in clicks}  # type: ignore[union-attr]
    assert "https://shop.example/mug" in urls and "https://example.com" in urls
    assert "https://shop.example/mug" not in html.replace("&amp;", "&").split("/c/")[0]
    [pixel] = re.findall(r'src="http://127\.0\.0\.1:8000/o/([^"]+)\.gif"', html)
    assert signer.verify("o", pixel) is not None
    # The text part carries the same tracked links, not the raw ones.
    assert "/c/" in text and "(https://shop.example/mug)" not in text
    row = outbox_row(workspace, oid)
    assert row["status"] == "sent" and row["message_id"] == msg["Message-ID"]
    assert row["sent_at"] == workspace.clock.now() and row["attempts"] == 1
    with workspace.engine.connect() as conn:
        assert conn.execute(
            select(events.c.type).where(events.c.contact_id == cid)
        ).scalars().all() == ["email_sent"]


def test_4xx_then_accept_is_retried_on_the_same_run(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    cid = add_contact(ws, "c1", email="bob@example.com")
    oid = add_message(ws, cid)
    with smtp_server(data_failures=2) as (url, inbox, handler):
        ws = configure(ws, smtp_url=url)
        report = ws.delivery.deliver_due()
    assert handler.data_attempts == 3
    assert report.counts["sent"] == 1 and len(inbox.messages) == 1
    assert outbox_row(ws, oid)["status"] == "sent"


def test_internationalised_address_needs_smtputf8(sqlite_workspace: Workspace) -> None:
    """RFC 6531: a non-ASCII address goes out with SMTPUTF8 where the server offers it, and
    fails that one message (not the run) where it does not."""
    ws = sqlite_workspace
    zoe = add_message(ws, add_contact(ws, "c1", email="zoë@example.com"))
    bob = add_message(ws, add_contact(ws, "c2", email="bob@example.com"))
    with smtp_server(smtputf8=False) as (url, inbox, _):
        ws = configure(ws, smtp_url=url)
        ws.delivery.deliver_due()
    assert outbox_row(ws, bob)["status"] == "sent" and len(inbox.messages) == 1
    row = outbox_row(ws, zoe)
    assert row["status"] == "failed" and "SMTPUTF8" in row["last_error"]

    other = add_message(ws, add_contact(ws, "c3", email="zoë@exämple.com"))
    with smtp_server(smtputf8=True) as (url, inbox, _):
        ws = configure(ws, smtp_url=url)
        ws.delivery.deliver_due()
    assert outbox_row(ws, other)["status"] == "sent" and len(inbox.messages) == 1


def test_persistent_4xx_requeues_with_backoff(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    cid = add_contact(ws, "c1", email="bob@example.com")
    oid = add_message(ws, cid)
    with smtp_server(data_failures=100) as (url, inbox, _):
        ws = configure(ws, smtp_url=url, delivery_retry_seconds=60)
        ws.delivery.deliver_due()
    row = outbox_row(ws, oid)
    assert row["status"] == "pending" and row["attempts"] == 1 and "451" in row["last_error"]
    assert ws.clock.now() < row["not_before"] <= ws.clock.now() + timedelta(seconds=60)
    assert inbox.messages == []


def test_hard_bounce_suppresses_and_records_event(workspace: Workspace) -> None:
    cid = add_contact(workspace, "c1", email="Gone@Example.com")
    ok = add_contact(workspace, "c2", email="ok@example.com")
    bounced = add_message(workspace, cid, key="k1")
    add_message(workspace, ok, key="k2")
    with smtp_server(rcpt_codes={"Gone@Example.com": "550 5.1.1 No such user"}) as (
        url,
        inbox,
        _,
    ):
        workspace = configure(workspace, smtp_url=url)
        report = workspace.delivery.deliver_due()
        assert report.counts == {"sent": 1, "bounced": 1}
        # A later message to the bounced address is suppressed, never sent.
        again = add_message(workspace, cid, key="k3")
        workspace.delivery.deliver_due()
    assert [m["To"] for m in inbox.messages] == ["ok@example.com"]
    assert outbox_row(workspace, bounced)["status"] == "failed"
    assert outbox_row(workspace, again)["status"] == "suppressed"
    with workspace.engine.connect() as conn:
        sup = conn.execute(select(suppressions)).mappings().one()
        ev = conn.execute(select(events).where(events.c.type == "email_bounced")).mappings().one()
    assert sup["address"] == "gone@example.com" and sup["reason"] == "bounced"
    assert ev["contact_id"] == cid and ev["properties"]["code"] == 550


def test_dropped_connection_is_retried(sqlite_workspace: Workspace) -> None:
    """The relay closes idle connections: the next send reconnects transparently."""
    ws = sqlite_workspace
    cid = add_contact(ws, "c1", email="a@example.com")
    with smtp_server() as (url, inbox, _):
        ws = configure(ws, smtp_url=url, smtp_connections=1)
        worker = ws.delivery.worker()
        add_message(ws, cid, key="a")
        worker.drain()
        smtp = worker.channels["email"]
        for pooled in smtp._idle:  # type: ignore[attr-defined]
            pooled.smtp.sock.close()  # the server side now sees a dead connection
        ws = configure(ws, frequency_caps={})
        worker.decider.caps = {}
        add_message(ws, cid, key="b")
        report = worker.drain()
        worker.close()
    assert report.counts["sent"] == 1 and len(inbox.messages) == 2


def test_no_consent_and_no_address_are_skipped(workspace: Workspace) -> None:
    a = add_contact(workspace, "a", email="a@example.com", email_consent=False)
    b = add_contact(workspace, "b", email=None)
    c = add_contact(workspace, "c", email="c@example.com", email_consent=None)
    ids = [add_message(workspace, x, key=f"k{x}") for x in (a, b, c)]
    with smtp_server() as (url, inbox, _):
        workspace = configure(workspace, smtp_url=url)
        workspace.delivery.deliver_due()
    assert inbox.messages == []
    rows = [outbox_row(workspace, i) for i in ids]
    assert [r["status"] for r in rows] == ["skipped", "skipped", "skipped"]
    assert "consent" in rows[0]["last_error"] and "address" in rows[1]["last_error"]
    with workspace.engine.connect() as conn:
        assert conn.execute(select(contacts.c.id)).all()


def test_smtp_url_forms() -> None:
    t = parse_smtp_url("smtp://us%40er:p%3Ass@mail.example:587?starttls=true&timeout=5")
    assert (t.host, t.port, t.user, t.password, t.starttls, t.timeout) == (
        "mail.example",
        587,
        "us@er",
        "p:ss",
        True,
        5.0,
    )
    assert "p:ss" not in repr(t)
    s = parse_smtp_url("smtps://u:p@mail.example")
    assert s.implicit_tls and s.port == 465
    with pytest.raises(InvalidSetting, match="scheme 'http'"):
        parse_smtp_url("http://mail.example")
    with pytest.raises(InvalidSetting, match="unknown option.*tls"):
        parse_smtp_url("smtp://mail.example?tls=1")


def test_worker_delivers_through_any_ports_channel(sqlite_workspace: Workspace) -> None:
    """One protocol: the flows file sink (a plain winback.ports.Channel) works as a channel
    of the delivery worker, with rendered content and the deterministic Message-ID."""
    import json

    from winback.flows.sinks import FileSink

    ws = sqlite_workspace
    cid = add_contact(ws, "c1", email="ada@example.com", first_name="Ada")
    oid = add_message(ws, cid, "reactivation-1", key="reactivation:9:email-1")
    ws = configure(ws, quiet_hours="")
    sink = FileSink(ws.path / "outbox")
    report = ws.delivery.deliver_due(channels={"email": sink})
    assert report.counts == {"sent": 1}
    written = json.loads(sink.path_of("reactivation:9:email-1").read_text())
    assert written["message_id"] == message_id_for("reactivation:9:email-1", "localhost")
    assert "Subject: Ada, it's been a while" in written["content"]
    assert outbox_row(ws, oid)["status"] == "sent"


def test_demo_smtp_sink_writes_eml_files(sqlite_workspace: Workspace, tmp_path: Path) -> None:
    import email
    import email.policy

    from winback.delivery.channels.demo_sink import demo_smtp_sink

    ws = sqlite_workspace
    cid = add_contact(ws, "c1", email="ada@example.com", first_name="Ada")
    add_message(ws, cid, "reactivation-1")
    with demo_smtp_sink(tmp_path / "mailbox") as sink:
        ws = configure(ws, smtp_url=sink.url, quiet_hours="")
        assert ws.delivery.deliver_due().counts == {"sent": 1}
    [path] = sink.messages()
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert msg["To"] == "ada@example.com" and msg["Subject"] == "Ada, it's been a while"


@pytest.mark.parametrize(
    "subject",
    ["Chloé, it's been a while", "日本語の件名です " * 8, "Zoë 🎉 " * 20, "a" * 44 + "é"],
)
def test_non_ascii_subject_is_encoded_words_that_decode_back(subject: str) -> None:
    from email import message_from_bytes, policy
    from email.header import decode_header, make_header

    from winback.delivery.messages.mime import build_email

    data = build_email(
        from_addr="shop@example.com",
        from_name="Café Shop",
        to="c@example.com",
        subject=subject,
        text="Bonjour Chloé",
        html="<p>Bonjour Chloé</p>",
        message_id="<x@example.com>",
        date=T0_MAIL,
    )
    raw = data.split(b"\r\n\r\n", 1)[0].decode("ascii")  # headers are 7-bit
    assert all(len(line) <= 78 for line in raw.split("\r\n")), raw
    folded = re.search(r"^Subject: (.*?)\r\n(?![ \t])", raw + "\r\n", re.M | re.S)
    assert folded is not None and "=?utf-8?b?" in folded.group(1)
    assert str(make_header(decode_header(folded.group(1)))) == " ".join(subject.split())
    msg = message_from_bytes(data, policy=policy.default)
    assert msg["Subject"] == " ".join(subject.split())


@pytest.mark.parametrize("first", ["Hello", ".starts with a dot"])
def test_dot_stuffing_with_and_without_dotted_lines(first: str) -> None:
    """The lean DATA path sends a message without dotted lines as is; lines that start with
    a dot are doubled (RFC 5321 4.5.2) and arrive intact; a 4xx on DATA is a retry."""
    from winback.delivery.channels import OutboundMessage
    from winback.delivery.channels.smtp import SmtpChannel

    body = f"{first}\r\n.\r\n..two\r\nend" if first.startswith(".") else f"{first}\r\nend\r\n"
    content = f"From: a@example.com\r\nTo: b@example.com\r\nSubject: dots\r\n\r\n{body}"
    msg = OutboundMessage(
        "k", 1, "email", None, to="b@example.com", sender="a@example.com", content=content
    )
    with smtp_server(data_failures=1) as (url, inbox, handler):
        channel = SmtpChannel(parse_smtp_url(url), connections=1, retry_base=0.01)
        try:
            result = channel.send_one(msg)
        finally:
            channel.close()
    assert result.outcome == "sent" and handler.data_attempts == 2
    [received] = inbox.messages
    payload = received.get_payload()
    assert isinstance(payload, str)
    assert payload.replace("\r\n", "\n").rstrip("\n") == body.replace("\r\n", "\n").rstrip("\n")


_ATOM = st.text(alphabet="abcXYZ019!#$%&'*+/=?^_`{|}~-", min_size=1, max_size=8)
_LABEL = st.text(alphabet="abcXYZ019-", min_size=1, max_size=8)


@given(
    local=st.lists(_ATOM, min_size=1, max_size=3).map(".".join),
    domain=st.lists(_LABEL, min_size=1, max_size=3).map(".".join),
)
def test_plain_addresses_are_quoted_as_smtplib_quotes_them(local: str, domain: str) -> None:
    """The MAIL FROM / RCPT TO shortcut applies only to addresses smtplib would send as they
    are; anything else (display names, spaces, quotes, comments) takes smtplib's path."""
    import smtplib

    from winback.delivery.channels.smtp import _PLAIN_ADDRESS

    address = f"{local}@{domain}"
    assert _PLAIN_ADDRESS.match(address)
    assert smtplib.quoteaddr(address) == f"<{address}>"
    for other in (f"Ada <{address}>", f'"a b"@{domain}', f"{address} (work)", f" {address}"):
        assert not _PLAIN_ADDRESS.match(other)
