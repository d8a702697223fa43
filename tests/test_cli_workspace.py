from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def winback(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "winback.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_init_then_config_and_upgrade(tmp_path: Path) -> None:
    made = winback("init", "shop", "--timezone", "Europe/Rome", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    shown = winback("config", "--json", "--workspace", "shop", cwd=tmp_path)
    data = json.loads(shown.stdout)
    assert data["timezone"] == "Europe/Rome"
    assert data["secret_key"] == "********"
    again = winback("db", "upgrade", cwd=tmp_path / "shop")
    assert again.returncode == 0 and "up to date" in again.stdout


def test_missing_workspace_is_a_clear_error(tmp_path: Path) -> None:
    result = winback("config", cwd=tmp_path)
    assert result.returncode == 2
    assert "no winback workspace" in result.stderr and "winback init" in result.stderr


@pytest.mark.slow
def test_init_refuses_an_existing_workspace(tmp_path: Path) -> None:
    assert winback("init", "shop", cwd=tmp_path).returncode == 0
    again = winback("init", "shop", cwd=tmp_path)
    assert again.returncode == 2 and "already a winback workspace" in again.stderr


@pytest.mark.slow
def test_config_hides_every_secret_and_shows_the_rest(tmp_path: Path) -> None:
    assert winback("init", "shop", cwd=tmp_path).returncode == 0
    config = tmp_path / "shop" / "winback.toml"
    config.write_text(
        config.read_text(encoding="utf-8")
        + 'smtp_url = "smtp://mailer:smtp-pass-1@relay.example:587?starttls=true"\n'
        'database_url = "postgresql://winback:db-pass-2@127.0.0.1:1/winback"\n'
        'sms_provider = "sms"\n'
        "[providers.sms]\n"
        'preset = "twilio"\n'
        'account_sid = "AC123"\n'
        'auth_token = "twilio-token-3"\n'
        "[providers.hook]\n"
        'url = "https://hooks.example/in"\n'
        'auth_header = "Authorization"\n'
        'auth_value = "Bearer hook-token-4"\n'
        'headers = { "X-Api-Key" = "header-key-5", "X-Shop" = "demo" }\n'
        "[providers.push]\n"
        'url = "https://push.example/send"\n'
        'auth_value = "Bearer ${PUSH_TOKEN}"\n'
        'access_token_file = "/run/secrets/push"\n',
        encoding="utf-8",
    )
    for args in (["config", "--json"], ["config"]):
        shown = winback(*args, "--workspace", "shop", cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        for secret in (
            "smtp-pass-1",
            "db-pass-2",
            "twilio-token-3",
            "hook-token-4",
            "header-key-5",
        ):
            assert secret not in shown.stdout, (args, secret)
    data = json.loads(winback("config", "--json", "--workspace", "shop", cwd=tmp_path).stdout)
    assert data["smtp_url"] == "smtp://mailer:********@relay.example:587?starttls=true"
    assert data["database_url"] == "postgresql://winback:********@127.0.0.1:1/winback"
    providers = data["providers"]
    assert (
        providers["sms"]["account_sid"] == "AC123" and providers["sms"]["auth_token"] == "********"
    )
    assert providers["hook"]["auth_header"] == "Authorization"
    assert providers["hook"]["headers"] == {"X-Api-Key": "********", "X-Shop": "demo"}
    assert providers["push"]["auth_value"] == "Bearer ${PUSH_TOKEN}"  # a reference, not a secret
    assert providers["push"]["access_token_file"] == "/run/secrets/push"
