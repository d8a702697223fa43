"""SMS, push and webhooks through the generic HTTP adapter, against local HTTP servers that
stand in for an SMS provider (Twilio-shaped) and a webhook receiver."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from tests.delivery_support import (
    add_contact,
    add_message,
    configure,
    http_server,
    outbox_row,
    reply_json,
)
from winback.delivery.channels.http import _retry_after, load_providers
from winback.errors import InvalidSetting
from winback.workspace import Workspace


@contextmanager
def http_receiver(
    statuses: list[int | tuple[int, dict[str, str]]] | None = None,
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local HTTP server recording requests; answers ``statuses`` (a code, or a code and
    headers) in turn, then 201."""
    received: list[dict[str, Any]] = []
    queue = list(statuses or [])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(
                {"path": self.path, "headers": dict(self.headers.items()), "body": body}
            )
            answer = queue.pop(0) if queue else 201
            status, headers = answer if isinstance(answer, tuple) else (answer, None)
            reply_json(self, status, {"sid": f"SM{len(received):04d}"}, headers)

        def log_message(self, *args: Any) -> None:
            pass

    with http_server(Handler) as url:
        yield url, received


def _sms_template(ws: Workspace) -> None:
    (Path(ws.path) / "templates" / "sms-hello.yaml").write_text(
        'channel: sms\nbody: "Hi {{ contact.first_name }}, use {{ coupon.code }} today. '
        'Stop: reply STOP"\n',
        encoding="utf-8",
    )


def test_sms_through_twilio_preset_with_consent(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    _sms_template(workspace)
    yes = add_contact(workspace, "y", phone="+15550001", first_name="Ada", sms_consent=True)
    no = add_contact(workspace, "n", phone="+15550002", first_name="Bob", sms_consent=False)
    with http_receiver(statuses=[503]) as (url, received):
        workspace = configure(
            workspace,
            quiet_hours="",
            providers={
                "twilio": {
                    "channel": "sms",
                    "preset": "twilio",
                    "url": url + "/2010-04-01/Accounts/{account_sid}/Messages.json",
                    "account_sid": "AC123",
                    "auth_token": "${TEST_TWILIO_TOKEN}",
                    "from": "+15559999",
                    "retry_base_seconds": 0.01,
                }
            },
            sms_provider="twilio",
        )
        monkeypatch.setenv("TEST_TWILIO_TOKEN", "secret-token")  # ${...} in the provider
        sent = add_message(workspace, yes, "sms-hello", channel="sms", key="s1")
        skipped = add_message(workspace, no, "sms-hello", channel="sms", key="s2")
        report = workspace.delivery.deliver_due()
    assert report.counts == {"sent": 1, "skipped": 1}
    assert len(received) == 2  # a 503, retried, then accepted
    req = received[-1]
    assert req["path"] == "/2010-04-01/Accounts/AC123/Messages.json"
    assert req["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    import base64

    assert (
        req["headers"]["Authorization"]
        == "Basic " + base64.b64encode(b"AC123:secret-token").decode()
    )
    form = {k: v[0] for k, v in parse_qs(req["body"].decode()).items()}
    assert form["To"] == "+15550001" and form["From"] == "+15559999"
    assert form["Body"].startswith("Hi Ada, use WB-") and "Stop" in form["Body"]
    row = outbox_row(workspace, sent)
    assert row["status"] == "sent" and row["provider_id"] == "SM0002"
    assert req["headers"]["Idempotency-Key"] == row["message_id"]
    assert outbox_row(workspace, skipped)["status"] == "skipped"


def test_webhook_json_body_without_consent(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    cid = add_contact(ws, "c1", first_name="Ada", email_consent=None)
    with http_receiver() as (url, received):
        ws = configure(
            ws,
            providers={
                "crm": {
                    "channel": "webhook",
                    "url": url + "/hook",
                    "auth_header": "X-Token",
                    "auth_value": "t0k",
                    "body": '{"customer": {{ contact.customer_id|tojson }}, '
                    '"flow": {{ message.flow|tojson }}, "note": {{ data.note|tojson }}}',
                    "success_codes": [201],
                }
            },
            webhook_provider="crm",
        )
        oid = add_message(
            ws, cid, None, channel="webhook", key="w1", payload={"data": {"note": "call back"}}
        )
        report = ws.delivery.deliver_due()
    assert report.counts == {"sent": 1}
    [req] = received
    assert req["path"] == "/hook" and req["headers"]["X-Token"] == "t0k"
    assert json.loads(req["body"]) == {
        "customer": "c1",
        "flow": "reactivation",
        "note": "call back",
    }
    assert outbox_row(ws, oid)["status"] == "sent"


def test_provider_failure_codes(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    cid = add_contact(ws, "c1", phone="+1555", sms_consent=True)
    _sms_template(ws)
    with http_receiver(statuses=[400]) as (url, received):
        ws = configure(
            ws,
            quiet_hours="",
            sms_provider="gw",
            providers={"gw": {"channel": "sms", "url": url, "max_attempts": 2}},
        )
        oid = add_message(ws, cid, "sms-hello", channel="sms")
        ws.delivery.deliver_due()
    row = outbox_row(ws, oid)
    assert row["status"] == "failed" and row["last_error"].startswith("400")
    assert len(received) == 1  # 400 is not retried


def test_retry_after_is_slept_once_or_kept_in_the_outbox(sqlite_workspace: Workspace) -> None:
    """A short Retry-After is slept in line instead of the backoff (not on top of it); a long
    one ends the attempts and holds the message in the outbox until then."""
    ws = sqlite_workspace
    cid = add_contact(ws, "c1", phone="+1555", sms_consent=True)
    _sms_template(ws)
    provider = {"channel": "sms", "max_attempts": 3, "retry_base_seconds": 20}

    def use_provider(url: str) -> Workspace:
        gw = {**provider, "url": url}
        return configure(
            sqlite_workspace,
            quiet_hours="",
            frequency_caps={},
            sms_provider="gw",
            providers={"gw": gw},
        )

    with http_receiver(statuses=[(429, {"Retry-After": "0.2"})]) as (url, received):
        ws = use_provider(url)
        oid = add_message(ws, cid, "sms-hello", channel="sms", key="short")
        started = time.monotonic()
        ws.delivery.deliver_due()
        elapsed = time.monotonic() - started
    assert outbox_row(ws, oid)["status"] == "sent" and len(received) == 2
    assert 0.2 <= elapsed < 5  # Retry-After, not a 10-20 s backoff as well

    with http_receiver(statuses=[(503, {"Retry-After": "3600"})]) as (url, received):
        ws = use_provider(url)
        oid = add_message(ws, cid, "sms-hello", channel="sms", key="long")
        ws.delivery.deliver_due()
    row = outbox_row(ws, oid)
    assert len(received) == 1  # no inline retry
    assert row["status"] == "pending" and row["attempts"] == 1
    assert row["not_before"] >= ws.clock.now() + timedelta(seconds=3600)


def test_retry_after_forms() -> None:
    now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC).timestamp()

    def seconds(value: str) -> float | None:
        return _retry_after(httpx.Response(429, headers={"Retry-After": value}), now=now)

    assert seconds("120") == 120.0
    assert seconds("Mon, 02 Mar 2026 12:01:30 GMT") == 90.0
    assert seconds("Mon, 02 Mar 2026 11:00:00 GMT") == 0.0  # past: now
    assert seconds("soon") is None and seconds("-5") is None
    assert _retry_after(httpx.Response(429), now=now) is None


def test_provider_config_errors_name_the_problem() -> None:
    with pytest.raises(InvalidSetting, match="providers.t: the twilio preset needs"):
        load_providers({"t": {"channel": "sms", "preset": "twilio"}}, {})
    with pytest.raises(InvalidSetting, match="providers.x: channel = 'fax'"):
        load_providers({"x": {"channel": "fax", "url": "http://x"}}, {})
