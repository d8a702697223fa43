"""The setup page: what is configured and missing by the checks of ``winback doctor``, with
every secret masked as ``winback config`` masks it; the SMTP relay checked apart."""

from __future__ import annotations

import httpx

from tests.delivery_support import configure, smtp_server
from tests.web_support import new_api_key, running_service
from winback.setup_checks import configuration_checks
from winback.store.apikeys import Scope
from winback.workspace import Workspace

SECRET = "s3cret-key-that-must-never-show-up"
PASSWORD = "hunter2-password"
TOKEN = "tok-0123456789abcdef"


def test_setup_shows_what_is_set_and_missing_and_no_secret(sqlite_workspace: Workspace) -> None:
    with smtp_server() as (smtp_url, _inbox, _handler):
        relay = smtp_url.replace("smtp://", f"smtp://bob:{PASSWORD}@")
        ws = configure(
            sqlite_workspace,
            smtp_url=relay,
            secret_key=SECRET,
            previous_secret_keys=[SECRET + "-old"],
            shopify_webhook_secret="shpss_" + TOKEN,
            shop_name="Tea & Cake",
            currency="EUR",
            timezone="Europe/Berlin",
            mail_from="news@teaandcake.example",
            sms_provider="twilio",
            providers={
                "twilio": {"channel": "sms", "preset": "twilio", "auth_token": TOKEN},
            },
        )
        key = new_api_key(ws, "reader", Scope.READ)
        auth = {"Authorization": f"Bearer {key}"}
        with running_service(ws) as base:
            page = httpx.get(f"{base}/setup", headers=auth)
            row = httpx.get(f"{base}/setup/smtp", headers={**auth, "HX-Request": "true"})
            plain = httpx.get(f"{base}/setup/smtp", headers=auth)
    html = page.text
    assert page.status_code == 200
    for secret in (SECRET, PASSWORD, TOKEN):
        assert secret not in html and secret not in row.text and secret not in plain.text
    assert "bob:********@127.0.0.1" in html
    assert (
        '<tr data-setting="secret_key"><th scope="row"><code>secret_key</code></th><td class="">set</td>'
        in html
    )
    assert "set (1)" in html  # one previous key, not shown
    assert "Tea &amp; Cake" in html and "EUR" in html and "Europe/Berlin" in html
    assert "twilio" in html
    # The findings are those of `winback doctor`: base_url is still loopback.
    findings = {f.check: f for f in configuration_checks(ws.settings)}
    assert not findings["base_url"].ok and findings["mail_from"].ok
    assert findings["base_url"].fix in html
    assert 'hx-get="/setup/smtp"' in html  # the relay is checked after the page
    assert row.status_code == 200 and "<html" not in row.text
    assert "answers &#39;220" in row.text and "status ok" in row.text
    assert "<html" in plain.text and "answers &#39;220" in plain.text


def test_setup_of_a_bare_workspace_lists_what_is_missing(sqlite_workspace: Workspace) -> None:
    ws = configure(sqlite_workspace, secret_key=None, smtp_url=None)
    key = new_api_key(ws, "reader", Scope.READ)
    auth = {"Authorization": f"Bearer {key}"}
    with running_service(ws) as base:
        page = httpx.get(f"{base}/setup", headers=auth)
        smtp = httpx.get(f"{base}/setup/smtp", headers={**auth, "HX-Request": "true"})
    assert "set WINBACK_SECRET_KEY" in page.text
    assert '<td class="muted">not set</td>' in page.text
    assert "no smtp_url" in smtp.text and "status missing" in smtp.text
