"""Push through the HTTP adapter's presets, against a local HTTP server that checks what an
FCM HTTP v1 endpoint (or a JSON web-push gateway) would: path, bearer token, body shape;
answering 429 / 503 (retried) and 404 UNREGISTERED (a bounce: the token is suppressed and
removed from the contact)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.delivery_support import (
    add_contact,
    add_message,
    configure,
    http_server,
    outbox_row,
    reply_json,
)
from winback.delivery.channels.http import load_providers
from winback.delivery.messages.mime import message_id_for
from winback.errors import InvalidSetting
from winback.store.schema import contacts, suppressions
from winback.workspace import Workspace

UNREGISTERED = {
    "error": {
        "code": 404,
        "message": "Requested entity was not found.",
        "status": "NOT_FOUND",
        "details": [
            {
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": "UNREGISTERED",
            }
        ],
    }
}


@contextmanager
def fcm_server(
    script: dict[str, list[tuple[int, dict[str, Any]]]], token: str = "ya29.test-token"
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A stand-in for FCM: checks the request, answers per device token from ``script``
    (in turn), then 200 with a message name."""
    received: list[dict[str, Any]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            with lock:
                received.append({"path": self.path, "headers": dict(self.headers), "body": body})
                device = body.get("message", {}).get("token") or body.get("to")
                queue = script.get(device, [])
                status, answer = queue.pop(0) if queue else (200, {})
            if self.headers.get("Authorization") != f"Bearer {token}":
                status, answer = 401, {"error": {"status": "UNAUTHENTICATED"}}
            if status == 200 and not answer:
                answer = {"name": f"projects/shop-app/messages/0:{len(received)}"}
            reply_json(self, status, answer, {"Retry-After": "0"} if status == 429 else None)

        def log_message(self, *args: Any) -> None:
            pass

    with http_server(Handler) as url:
        yield url, received


def _push_template(ws: Workspace) -> None:
    (Path(ws.path) / "templates" / "push-back.yaml").write_text(
        "channel: push\n"
        'title: "We miss you, {{ contact.first_name }}"\n'
        'body: "New arrivals are in."\n'
        'url: "https://shop.example/new"\n',
        encoding="utf-8",
    )


def _fcm(ws: Workspace, url: str, **extra: Any) -> Workspace:
    return configure(
        ws,
        quiet_hours="",
        providers={
            "fcm": {
                "channel": "push",
                "preset": "fcm",
                "project_id": "shop-app",
                "url": url + "/v1/projects/{project_id}/messages:send",
                "retry_base_seconds": 0.01,
                **extra,
            }
        },
        push_provider="fcm",
    )


def test_fcm_preset_body_headers_retry_and_unregistered(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = workspace
    _push_template(ws)
    ok = add_contact(
        ws, "ok", first_name="Ada", push_consent=True, attributes={"push_token": "tok-ok"}
    )
    dead = add_contact(
        ws, "dead", first_name="Bob", push_consent=True, attributes={"push_token": "tok-dead"}
    )
    busy = add_contact(
        ws, "busy", first_name="Cy", push_consent=True, attributes={"push_token": "tok-busy"}
    )
    nope = add_contact(
        ws, "nope", first_name="Di", push_consent=False, attributes={"push_token": "tok-no"}
    )
    script: dict[str, list[tuple[int, dict[str, Any]]]] = {
        "tok-ok": [(429, {"error": {"status": "RESOURCE_EXHAUSTED"}})],
        "tok-busy": [(503, {"error": {"status": "UNAVAILABLE"}})] * 5,
        "tok-dead": [(404, UNREGISTERED)],
    }
    monkeypatch.setenv("TEST_FCM_TOKEN", "ya29.test-token")
    with fcm_server(script) as (url, received):
        ws = _fcm(ws, url, access_token="${TEST_FCM_TOKEN}", max_attempts=2)
        ids = {
            who: add_message(
                ws, cid, "push-back", channel="push", key=f"p-{who}", payload={"data": {"n": 1}}
            )
            for who, cid in (("ok", ok), ("dead", dead), ("busy", busy), ("nope", nope))
        }
        report = ws.delivery.deliver_due()
    assert report.counts == {"sent": 1, "bounced": 1, "retry": 1, "skipped": 1}
    # consent is checked: nothing was sent to the contact without push consent
    assert {r["body"]["message"]["token"] for r in received} == {"tok-ok", "tok-dead", "tok-busy"}
    first = next(r for r in received if r["body"]["message"]["token"] == "tok-ok")
    assert first["path"] == "/v1/projects/shop-app/messages:send"
    assert first["headers"]["Authorization"] == "Bearer ya29.test-token"
    assert first["headers"]["Content-Type"] == "application/json"
    sent = outbox_row(ws, ids["ok"])
    assert first["body"] == {
        "message": {
            "token": "tok-ok",
            "notification": {"title": "We miss you, Ada", "body": "New arrivals are in."},
            "data": {"n": "1", "url": "https://shop.example/new", "message_id": sent["message_id"]},
        }
    }
    # 429 then 200: retried in line
    assert sum(r["body"]["message"]["token"] == "tok-ok" for r in received) == 2
    assert sent["status"] == "sent"
    assert sent["provider_id"].startswith("projects/shop-app/messages/0:")
    # 503 twice (max_attempts=2): back to pending for a later retry, not failed
    busy_row = outbox_row(ws, ids["busy"])
    assert busy_row["status"] == "pending" and "503" in busy_row["last_error"]
    # 404 UNREGISTERED: failed, token suppressed and removed from the contact
    dead_row = outbox_row(ws, ids["dead"])
    assert dead_row["status"] == "failed" and "UNREGISTERED" in dead_row["last_error"]
    with ws.engine.connect() as conn:
        sup = conn.execute(select(suppressions)).one()
        attrs = conn.execute(
            select(contacts.c.attributes).where(contacts.c.id == dead)
        ).scalar_one()
    assert (sup.channel, sup.address, sup.reason, sup.contact_id) == (
        "push",
        "tok-dead",
        "bounced",
        dead,
    )
    assert "push_token" not in attrs and attrs["push_unreachable_at"]
    # a later push to that contact has no address any more
    again = add_message(ws, dead, "push-back", channel="push", key="p-dead-2")
    ws.delivery.deliver_due()
    assert outbox_row(ws, again)["last_error"] == "no push address"


def test_fcm_token_file_is_reread_and_404_without_unregistered_is_not_a_bounce(
    sqlite_workspace: Workspace, tmp_path: Path
) -> None:
    ws = sqlite_workspace
    _push_template(ws)
    cid = add_contact(ws, "a", first_name="Ada", push_consent=True, attributes={"push_token": "t1"})
    token_file = tmp_path / "fcm-token"
    token_file.write_text("ya29.test-token\n", encoding="utf-8")
    with fcm_server({"t1": [(404, {"error": {"status": "NOT_FOUND"}})]}) as (url, received):
        ws = _fcm(ws, url, access_token_file=str(token_file))
        first = add_message(ws, cid, "push-back", channel="push", key="k1")
        ws.delivery.deliver_due()
        second = add_message(
            ws, cid, "push-back", channel="push", key="k2", priority="transactional"
        )
        ws.delivery.deliver_due()
    assert [r["headers"]["Authorization"] for r in received] == ["Bearer ya29.test-token"] * 2
    assert outbox_row(ws, first)["status"] == "failed"  # 404 for another reason: no bounce
    assert outbox_row(ws, second)["status"] == "sent"
    assert ws.delivery.suppressions() == []


def test_webpush_gateway_preset_410_gone_is_a_bounce(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    _push_template(ws)
    cid = add_contact(
        ws, "a", first_name="Ada", push_consent=True, attributes={"push_token": "sub-1"}
    )
    with fcm_server({"sub-1": [(410, {"error": "gone"})]}) as (url, received):
        ws = configure(
            ws,
            quiet_hours="",
            providers={
                "gw": {
                    "channel": "push",
                    "preset": "webpush-gateway",
                    "url": url + "/send",
                    "auth_header": "Authorization",
                    "auth_value": "Bearer ya29.test-token",
                }
            },
            push_provider="gw",
        )
        oid = add_message(ws, cid, "push-back", channel="push", key="w1")
        report = ws.delivery.deliver_due()
    assert report.counts == {"bounced": 1}
    body = received[0]["body"]
    assert body["to"] == "sub-1" and body["title"] == "We miss you, Ada"
    assert body["url"] == "https://shop.example/new"
    assert body["message_id"] == message_id_for("w1", "localhost")
    assert outbox_row(ws, oid)["status"] == "failed"
    assert [s["address"] for s in ws.delivery.suppressions()] == ["sub-1"]


def test_fcm_preset_config_errors() -> None:
    with pytest.raises(InvalidSetting, match=r"providers.p: the fcm preset needs project_id"):
        load_providers({"p": {"channel": "push", "preset": "fcm", "access_token": "x"}}, {})
    with pytest.raises(
        InvalidSetting, match=r"providers.p: the fcm preset needs service_account_file"
    ):
        load_providers({"p": {"channel": "push", "preset": "fcm", "project_id": "x"}}, {})
    cfg = load_providers(
        {"p": {"channel": "push", "preset": "fcm", "project_id": "app", "access_token": "$"}}, {}
    )["p"]
    assert cfg.url == "https://fcm.googleapis.com/v1/projects/app/messages:send"
    assert (cfg.bounce_codes, cfg.bounce_match, cfg.id_field) == ([404], "UNREGISTERED", "name")
