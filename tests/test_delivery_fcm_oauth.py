"""FCM access tokens minted from a service account key: a real RSA key, a local HTTP server
standing in for Google's token endpoint (it verifies the signed JWT with the public key), and
the FCM stand-in checking the bearer token on every send."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.delivery_support import add_contact, add_message, http_server, outbox_row, reply_json
from tests.test_delivery_push import _fcm, _push_template, fcm_server
from winback.delivery.channels import OutboundMessage
from winback.delivery.channels.http import HttpChannel, load_providers
from winback.delivery.channels.oauth import (
    FCM_SCOPE,
    JWT_GRANT,
    REFRESH_MARGIN,
    ServiceAccountTokens,
)
from winback.errors import InvalidSetting
from winback.workspace import Workspace

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EMAIL = "winback@shop-app.iam.gserviceaccount.com"


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@contextmanager
def token_server(
    expires_in: int = 3600, refuse: bool = False
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Google's token endpoint, for the test key: checks the grant and the JWT's signature
    and claims, then answers ``ya29.minted-N``."""
    claims_seen: list[dict[str, Any]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
            assert form["grant_type"] == [JWT_GRANT]
            header, claims, signature = form["assertion"][0].split(".")
            KEY.public_key().verify(  # raises on a bad signature: the test fails
                _unb64(signature),
                f"{header}.{claims}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
            assert json.loads(_unb64(header)) == {"alg": "RS256", "typ": "JWT"}
            seen = json.loads(_unb64(claims))
            with lock:
                claims_seen.append(seen)
                n = len(claims_seen)
            if refuse:
                reply_json(self, 400, {"error": "invalid_grant", "error_description": "bad key"})
                return
            reply_json(
                self,
                200,
                {
                    "access_token": f"ya29.minted-{n}",
                    "expires_in": expires_in,
                    "token_type": "Bearer",
                },
            )

        def log_message(self, *args: Any) -> None:
            pass

    with http_server(Handler) as url:
        yield url + "/token", claims_seen


def _key_file(tmp_path: Path, token_uri: str, **changes: Any) -> str:
    pem = KEY.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    account = {
        "type": "service_account",
        "project_id": "shop-app",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": EMAIL,
        "token_uri": token_uri,
        **changes,
    }
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps(account), encoding="utf-8")
    return str(path)


def test_pushes_carry_a_token_minted_from_the_service_account(
    workspace: Workspace, tmp_path: Path
) -> None:
    ws = workspace
    _push_template(ws)
    people = [
        add_contact(
            ws, who, first_name=who, push_consent=True, attributes={"push_token": f"t-{who}"}
        )
        for who in ("Ada", "Bob", "Cy")
    ]
    with (
        token_server() as (token_uri, claims),
        fcm_server({}, token="ya29.minted-1") as (
            url,
            received,
        ),
    ):
        ws = _fcm(ws, url, service_account_file=_key_file(tmp_path, token_uri))
        ids = [add_message(ws, cid, "push-back", channel="push", key=f"p{cid}") for cid in people]
        report = ws.delivery.deliver_due()
    assert report.counts == {"sent": 3}
    assert all(outbox_row(ws, oid)["status"] == "sent" for oid in ids)
    # every send had the minted token (the stand-in answers 401 otherwise); minted once
    assert {r["headers"]["Authorization"] for r in received} == {"Bearer ya29.minted-1"}
    [seen] = claims
    assert (seen["iss"], seen["scope"], seen["aud"]) == (EMAIL, FCM_SCOPE, token_uri)
    assert seen["exp"] - seen["iat"] == 3600


def test_the_token_is_kept_until_a_minute_before_it_expires(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    with token_server(expires_in=3600) as (token_uri, claims), httpx.Client() as client:
        tokens = ServiceAccountTokens(
            _key_file(tmp_path, token_uri), client=client, clock=lambda: now[0]
        )
        assert tokens.token() == tokens.token() == "ya29.minted-1"
        now[0] += 3600 - REFRESH_MARGIN - 1
        assert tokens.token() == "ya29.minted-1"
        now[0] += 2  # less than a minute left: a new one
        assert tokens.token() == "ya29.minted-2"
        tokens.forget()  # the provider refused it (401): minted again
        assert tokens.token() == "ya29.minted-3"
    assert [c["iat"] for c in claims] == [1_800_000_000, 1_800_003_541, 1_800_003_541]


def test_a_refused_grant_leaves_the_push_pending_for_later(
    workspace: Workspace, tmp_path: Path
) -> None:
    ws = workspace
    _push_template(ws)
    cid = add_contact(
        ws, "ada", first_name="Ada", push_consent=True, attributes={"push_token": "t1"}
    )
    with token_server(refuse=True) as (token_uri, _), fcm_server({}) as (url, received):
        ws = _fcm(ws, url, service_account_file=_key_file(tmp_path, token_uri))
        oid = add_message(ws, cid, "push-back", channel="push", key="p1")
        report = ws.delivery.deliver_due()
    assert report.counts == {"retry": 1} and received == []  # nothing sent without a token
    row = outbox_row(ws, oid)
    assert row["status"] == "pending" and "token endpoint answered 400" in row["last_error"]
    assert "invalid_grant" in row["last_error"]


def test_a_401_from_fcm_drops_the_token_and_retries(tmp_path: Path) -> None:
    with token_server() as (token_uri, claims), fcm_server({}, token="ya29.other") as (url, _):
        config = load_providers(
            {
                "fcm": {
                    "channel": "push",
                    "preset": "fcm",
                    "project_id": "shop-app",
                    "url": url + "/v1/projects/{project_id}/messages:send",
                    "service_account_file": _key_file(tmp_path, token_uri),
                }
            },
            {},
        )["fcm"]
        channel = HttpChannel("fcm", config)
        msg = OutboundMessage("k", 1, "push", None, to="t1", fields={"title": "Hi", "body": "x"})
        try:
            first, second = channel.send_one(msg), channel.send_one(msg)
        finally:
            channel.close()
    assert (first.outcome, first.code, second.outcome) == ("retry", 401, "retry")
    assert len(claims) == 2  # the refused token was dropped: the next send minted another


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"private_key": ""}, r"service-account.json'?: no private_key"),
        ({"client_email": None}, r"no client_email"),
        (
            {"private_key": "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"},
            r"not a PEM private key",
        ),
    ],
)
def test_a_bad_key_file_is_a_clear_setting_error(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    with httpx.Client() as client, pytest.raises(InvalidSetting, match=message):
        ServiceAccountTokens(
            _key_file(tmp_path, "http://127.0.0.1:9/token", **changes), client=client
        )
    with httpx.Client() as client, pytest.raises(InvalidSetting, match=r"cannot read"):
        ServiceAccountTokens(str(tmp_path / "missing.json"), client=client)
