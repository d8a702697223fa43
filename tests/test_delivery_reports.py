"""Complaints (ARF feedback-loop reports) and bounces (RFC 3464 DSNs) coming back from
providers: parsed from real-looking samples (tests/fixtures/reports), matched to our
messages, recorded as events, suppressions and consent changes, idempotently; through the
Python API, the CLI and the running HTTP service."""

from __future__ import annotations

import json
from datetime import timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from tests.delivery_support import add_contact, add_message, configure
from tests.web_support import new_api_key, running_service
from winback.cli import app
from winback.delivery.links.tokens import TokenSigner
from winback.delivery.messages.mime import domain_of, message_id_for
from winback.delivery.reports.parse import InvalidReportFile, parse_report
from winback.errors import UnreadableFile
from winback.store.schema import consent_log, contacts, events, outbox, report_rejects, suppressions
from winback.workspace import Workspace

SAMPLES = Path(__file__).parent / "fixtures" / "reports"
runner = CliRunner()


def sent_message(ws: Workspace, customer_id: str, email: str) -> dict[str, Any]:
    """A contact and an email of ours that went out: its Message-ID and unsubscribe URL."""
    cid = add_contact(ws, customer_id, email=email, first_name="Ada")
    oid = add_message(ws, cid, key=f"reactivation:{cid}:email-1")
    mid = message_id_for(f"reactivation:{cid}:email-1", domain_of(ws.settings.mail_from))
    with ws.engine.begin() as conn:
        conn.execute(
            update(outbox)
            .where(outbox.c.id == oid)
            .values(status="sent", message_id=mid, sent_at=ws.clock.now())
        )
    token = TokenSigner(ws.settings.secret_key).sign("u", oid, cid)
    return {
        "contact_id": cid,
        "outbox_id": oid,
        "MESSAGE_ID": mid,
        "EMAIL": email,
        "FIRST_NAME": "Ada",
        "UNSUBSCRIBE_URL": f"http://127.0.0.1:8000/u/{token}",
    }


def sample(name: str, tag: str = "1", **values: str) -> bytes:
    text = (SAMPLES / name).read_text(encoding="utf-8").replace("{TAG}", tag)
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text.replace("\n", "\r\n").encode()


def fill(name: str, msg: dict[str, Any], tag: str = "1", **extra: str) -> bytes:
    values = {k: str(v) for k, v in msg.items() if k.isupper()}
    return sample(name, tag, **values, **extra)


def counts(ws: Workspace) -> dict[str, int]:
    with ws.engine.connect() as conn:
        return {
            t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in (events, suppressions, consent_log, report_rejects)
        }


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_arf_complaint_suppresses_revokes_consent_and_is_idempotent(
    workspace: Workspace, tmp_path: Path
) -> None:
    ws = workspace
    msg = sent_message(ws, "c1", "Ada@Example.com")
    path = write(tmp_path, "yahoo.eml", fill("arf-yahoo.eml", msg))
    result = ws.delivery.import_reports([path])
    assert (result.reports, result.complaints, result.suppressed, result.consent_revoked) == (
        1,
        1,
        1,
        1,
    )
    with ws.engine.connect() as conn:
        event = conn.execute(select(events).where(events.c.type == "email_complained")).one()
        assert event.contact_id == msg["contact_id"]
        assert event.message_id == msg["MESSAGE_ID"]
        assert event.properties["status"] == "abuse"
        assert event.occurred_at.isoformat() == "2026-11-16T09:12:44+00:00"  # Received-Date
        sup = conn.execute(select(suppressions)).one()
        assert (sup.address, sup.reason, sup.contact_id) == (
            "ada@example.com",
            "complained",
            msg["contact_id"],
        )
        assert conn.execute(select(contacts.c.email_consent)).scalar() is False
        log = conn.execute(select(consent_log)).one()
        assert (log.granted, log.source) == (False, "complaint:arf")
    before = counts(ws)
    again = ws.delivery.import_reports([path])
    assert (again.duplicates, again.complaints, again.suppressed) == (1, 0, 0)
    assert counts(ws) == before


@pytest.mark.parametrize("name", ["arf-microsoft.eml", "arf-gmail-token-only.eml"])
def test_complaint_matched_without_recipient_address(workspace: Workspace, name: str) -> None:
    """Microsoft redacts the recipient (matched by Message-ID in text/rfc822-headers); a
    forwarded copy with a foreign Message-ID is matched by our signed unsubscribe token."""
    ws = workspace
    add_contact(ws, "other", email="other@example.com")
    msg = sent_message(ws, "c1", "ada@example.com")
    result = ws.delivery.record_report(fill(name, msg))
    assert (result.complaints, result.suppressed, result.rejected) == (1, 1, 0)
    with ws.engine.connect() as conn:
        assert conn.execute(select(events.c.contact_id)).scalar() == msg["contact_id"]
        assert conn.execute(select(suppressions.c.address)).scalar() == "ada@example.com"


def test_forged_token_does_not_match(workspace: Workspace) -> None:
    ws = workspace
    msg = sent_message(ws, "c1", "ada@example.com")
    forged = dict(
        msg, UNSUBSCRIBE_URL="http://127.0.0.1:8000/u/eyJtIjoxLCJjIjoxfQ.AAAAAAAAAAAAAAAAAAAAAA"
    )
    result = ws.delivery.record_report(fill("arf-gmail-token-only.eml", forged))
    assert (result.complaints, result.rejected) == (0, 1)
    assert "no recipient address" in result.errors[0]
    assert counts(ws)["suppressions"] == 0


def test_dsn_hard_bounce_and_multi_recipient(workspace: Workspace) -> None:
    ws = workspace
    msg = sent_message(ws, "c1", "gone@example.com")
    result = ws.delivery.record_report(fill("dsn-gmail-hard.eml", msg))
    assert (result.hard_bounces, result.suppressed) == (1, 1)
    with ws.engine.connect() as conn:
        event = conn.execute(select(events)).one()
        assert event.type == "email_bounced" and event.message_id == msg["MESSAGE_ID"]
        assert event.properties["severity"] == "hard"
        assert event.properties["status"] == "5.1.1"
        assert "does not exist" in event.properties["detail"]
        assert conn.execute(select(suppressions.c.reason)).scalar() == "bounced"
        # a bounce does not touch consent
        assert conn.execute(select(contacts.c.email_consent)).scalar() is True
    msg2 = sent_message(ws, "c2", "full@example.com")
    multi = ws.delivery.record_report(
        fill("dsn-exchange-multi.eml", msg2, OTHER_EMAIL="late@example.com")
    )
    assert (multi.reports, multi.hard_bounces, multi.ignored) == (2, 1, 1)
    with ws.engine.connect() as conn:
        assert sorted(conn.execute(select(suppressions.c.address)).scalars()) == [
            "full@example.com",
            "gone@example.com",
        ]


def test_gmail_dsn_without_the_original_names_it_in_the_status_part(
    workspace: Workspace,
) -> None:
    ws = workspace
    msg = sent_message(ws, "c1", "gone@example.com")
    raw = fill("dsn-gmail-hard.eml", msg)
    cut = raw.index(b"--000000000000dsnb\r\nContent-Type: message/rfc822")
    result = ws.delivery.record_report(raw[:cut] + b"--000000000000dsnb--\r\n")
    assert result.hard_bounces == 1
    with ws.engine.connect() as conn:
        assert conn.execute(select(events.c.message_id)).scalar() == msg["MESSAGE_ID"]


def test_soft_bounces_suppress_after_the_limit_within_the_window(workspace: Workspace) -> None:
    ws = workspace
    ws = configure(ws, soft_bounce_limit=2, soft_bounce_window_days=30)
    msg = sent_message(ws, "c1", "full@example.com")
    now = ws.clock.now()

    def soft(tag: str, when: timedelta) -> Any:
        return ws.delivery.record_report(
            fill("dsn-postfix-soft.eml", msg, tag, DATE=format_datetime(now - when))
        )

    assert soft("a", timedelta(days=40)).soft_bounces == 1
    second = soft("b", timedelta(days=1))  # the first is outside the 30-day window
    assert (second.soft_bounces, second.suppressed) == (1, 0)
    assert soft("b", timedelta(days=1)).duplicates == 1  # the same report again
    third = soft("c", timedelta(0))
    assert (third.soft_bounces, third.suppressed) == (1, 1)
    with ws.engine.connect() as conn:
        sup = conn.execute(select(suppressions)).one()
    assert sup.reason == "bounced" and sup.detail.startswith("2 soft bounces within 30 days")


def test_unmatched_report_suppresses_the_address_only(workspace: Workspace) -> None:
    ws = workspace
    fake = {
        "MESSAGE_ID": "<not-ours@elsewhere.example>",
        "EMAIL": "Stranger@Example.org",
        "FIRST_NAME": "X",
        "UNSUBSCRIBE_URL": "http://elsewhere.example/unsub",
    }
    result = ws.delivery.record_report(fill("arf-yahoo.eml", fake))
    assert (result.unmatched, result.suppressed, result.complaints) == (1, 1, 0)
    with ws.engine.connect() as conn:
        sup = conn.execute(select(suppressions)).one()
    assert (sup.address, sup.contact_id, sup.reason) == ("stranger@example.org", None, "complained")
    assert counts(ws)["events"] == 0


def test_mbox_and_folder_with_rejects(workspace: Workspace, tmp_path: Path) -> None:
    ws = workspace
    a = sent_message(ws, "c1", "a@example.com")
    b = sent_message(ws, "c2", "b@example.com")
    mbox = b"".join(
        b"From MAILER-DAEMON Mon Nov 16 09:13:02 2026\n" + part.replace(b"\r\n", b"\n") + b"\n"
        for part in (
            fill("arf-yahoo.eml", a),
            fill("dsn-gmail-hard.eml", b),
            sample("not-a-report.eml"),
        )
    )
    folder = tmp_path / "reports"
    (folder / "sub").mkdir(parents=True)
    write(folder, "fbl.mbox", mbox)
    write(folder / "sub", "ms.eml", fill("arf-microsoft.eml", b, "2"))
    result = ws.delivery.import_reports([folder])
    assert (result.reports, result.complaints, result.hard_bounces, result.rejected) == (
        4,
        2,
        1,
        1,
    )
    assert "fbl.mbox#3" in result.errors[0] and "not a feedback report" in result.errors[0]
    rejects = ws.delivery.report_rejects()
    assert len(rejects) == 1 and rejects[0]["source"].endswith("fbl.mbox#3")
    with ws.engine.connect() as conn:
        raw = conn.execute(select(report_rejects.c.raw)).scalar_one()
    assert b"Please stop sending me these!" in raw  # kept, not lost
    before = counts(ws)
    again = ws.delivery.import_reports([folder])
    assert (again.duplicates, again.rejected) == (3, 1)
    assert counts(ws) == before  # the reject is not stored twice


def test_bad_files_are_named_with_what_was_expected(
    sqlite_workspace: Workspace, tmp_path: Path
) -> None:
    ws = sqlite_workspace
    csv = write(tmp_path, "bounces.csv", b"email,reason\nx@example.com,bounce\n")
    with pytest.raises(InvalidReportFile, match=r"bounces.csv: expected an email message"):
        ws.delivery.import_reports([csv])
    empty = write(tmp_path, "empty.eml", b"")
    with pytest.raises(InvalidReportFile, match=r"empty.eml: .*found 'an empty file'"):
        ws.delivery.import_reports([empty])
    with pytest.raises(UnreadableFile, match=r"missing.mbox: no such file"):
        ws.delivery.import_reports([tmp_path / "missing.mbox"])
    good = write(tmp_path, "ok.eml", sample("not-a-report.eml"))
    with pytest.raises(InvalidReportFile):  # checked before anything is written
        ws.delivery.import_reports([good, csv])
    assert counts(ws)["report_rejects"] == 0
    cli = runner.invoke(app, ["feedback-loop", "import", str(csv), "-w", str(ws.path)])
    assert cli.exit_code != 0 and "expected an email message" in str(cli.exception)


def test_parse_rejects_malformed_reports() -> None:
    with pytest.raises(Exception, match="Feedback-Type"):
        parse_report(
            b"From: a@b\nContent-Type: multipart/report; report-type=feedback-report; "
            b'boundary="x"\n\n--x\nContent-Type: message/feedback-report\n\nVersion: 1\n\n--x--\n',
            source="t",
        )


def test_cli_import_and_rejects(sqlite_workspace: Workspace, tmp_path: Path) -> None:
    ws = sqlite_workspace
    msg = sent_message(ws, "c1", "ada@example.com")
    path = write(tmp_path, "r.eml", fill("dsn-gmail-hard.eml", msg))
    bad = write(tmp_path, "n.eml", sample("not-a-report.eml"))
    w = ["-w", str(ws.path)]
    out = runner.invoke(app, ["feedback-loop", "import", str(path), str(bad), "--json", *w])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert (data["hard_bounces"], data["rejected"]) == (1, 1)
    listed = runner.invoke(app, ["feedback-loop", "rejects", "--json", *w])
    assert json.loads(listed.stdout)[0]["source"] == str(bad)


def test_http_raw_and_json_reports(workspace: Workspace) -> None:
    ws = workspace
    msg = sent_message(ws, "c1", "ada@example.com")
    other = sent_message(ws, "c2", "bob@example.com")
    key = new_api_key(ws, "esp")
    auth = {"Authorization": f"Bearer {key}"}
    with running_service(ws) as base:
        denied = httpx.post(f"{base}/api/v1/feedback-reports/raw", content=b"x")
        assert denied.status_code == 401
        raw = fill("arf-yahoo.eml", msg)
        headers = {**auth, "Content-Type": "message/rfc822"}
        r = httpx.post(f"{base}/api/v1/feedback-reports/raw", content=raw, headers=headers)
        assert r.status_code == 200 and r.json()["complaints"] == 1
        r = httpx.post(f"{base}/api/v1/feedback-reports/raw", content=raw, headers=headers)
        assert r.json()["duplicates"] == 1
        junk = httpx.post(
            f"{base}/api/v1/feedback-reports/raw", content=b"\x00\x01 garbage", headers=headers
        )
        assert junk.status_code == 200 and junk.json()["rejected"] == 1
        body = {
            "reports": [
                {"type": "bounce", "email": "BOB@example.com", "status": "5.1.1"},
                {"type": "complaint", "message_id": other["MESSAGE_ID"].strip("<>")},
            ]
        }
        j = httpx.post(f"{base}/api/v1/feedback-reports", json=body, headers=auth)
        assert j.status_code == 200, j.text
        assert (j.json()["hard_bounces"], j.json()["complaints"]) == (1, 1)
        assert (
            httpx.post(f"{base}/api/v1/feedback-reports", json=body, headers=auth).json()[
                "duplicates"
            ]
            == 2
        )
        bad = httpx.post(
            f"{base}/api/v1/feedback-reports", json={"reports": [{"type": "spam"}]}, headers=auth
        )
        assert bad.status_code == 422
    with ws.engine.connect() as conn:
        reasons = dict(conn.execute(select(suppressions.c.address, suppressions.c.reason)).all())
        assert reasons == {"ada@example.com": "complained", "bob@example.com": "bounced"}
        assert (
            conn.execute(
                select(contacts.c.email_consent).where(contacts.c.id == other["contact_id"])
            ).scalar()
            is False
        )
    assert len(ws.delivery.report_rejects()) == 1


def test_complaint_about_an_erased_contact_keeps_no_address(workspace: Workspace) -> None:
    from winback.erasure import erase_contacts

    ws = workspace
    msg = sent_message(ws, "c1", "ada@example.com")
    with ws.engine.begin() as conn:
        erase_contacts(conn, [msg["contact_id"]], at=ws.clock.now(), source="test")
    result = ws.delivery.record_report(fill("arf-yahoo.eml", msg))
    assert (result.complaints, result.suppressed) == (1, 0)
    assert ws.delivery.suppressions() == []
    with ws.engine.connect() as conn:
        props = conn.execute(
            select(events.c.properties).where(events.c.type == "email_complained")
        ).scalar_one()
    assert props == {"source": "arf", "status": "abuse"}
