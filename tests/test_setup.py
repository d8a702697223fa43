"""`winback init` with the shop's details, `winback doctor`, and `run` refusing to send
through a remote relay while the links in the email point at a loopback address (real
subprocesses; a real SMTP server for the reachable relay)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.delivery_support import smtp_server
from winback.config import Settings
from winback.setup_checks import UnsafeSetup, check_can_send, is_loopback_host, relay_is_remote


def winback(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "winback.cli", *args],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "300", **env},
        stdin=subprocess.DEVNULL,  # not a terminal: init asks nothing
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_init_writes_the_shop_details(tmp_path: Path) -> None:
    made = winback(
        "init",
        "shop",
        "--shop-name",
        'Bottega "Rossi"',
        "--shop-url",
        "https://bottega.example",
        "--mail-from",
        "ciao@bottega.example",
        "--base-url",
        "https://wb.bottega.example/",
        "--currency",
        "eur",
        "--timezone",
        "Europe/Rome",
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    config = tomllib.loads((tmp_path / "shop" / "winback.toml").read_text("utf-8"))
    assert {k: config[k] for k in ("shop_name", "shop_url", "mail_from", "base_url")} == {
        "shop_name": 'Bottega "Rossi"',
        "shop_url": "https://bottega.example",
        "mail_from": "ciao@bottega.example",
        "base_url": "https://wb.bottega.example",
    }
    assert (config["currency"], config["timezone"]) == ("EUR", "Europe/Rome")
    assert "Still at their defaults" not in made.stdout


def test_init_without_a_terminal_keeps_defaults_and_says_so(tmp_path: Path) -> None:
    made = winback("init", "shop", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "Still at their defaults: shop_name, shop_url, mail_from, base_url" in made.stdout


@pytest.mark.slow
def test_init_refuses_bad_values_before_writing(tmp_path: Path) -> None:
    bad = winback("init", "shop", "--currency", "euro", "--base-url", "wb.example", cwd=tmp_path)
    assert bad.returncode == 2
    assert "currency 'EURO'" in bad.stderr and "base_url 'wb.example'" in bad.stderr
    assert not (tmp_path / "shop" / "winback.toml").exists()


@pytest.mark.slow
def test_doctor_names_what_to_fix_then_passes(tmp_path: Path) -> None:
    assert winback("init", "shop", cwd=tmp_path).returncode == 0
    ws = tmp_path / "shop"
    first = winback("doctor", "--json", "--workspace", str(ws), cwd=tmp_path)
    assert first.returncode == 1
    failing = {c["check"] for c in json.loads(first.stdout)["checks"] if not c["ok"]}
    assert failing == {"base_url", "mail_from", "shop_name", "smtp"}
    with smtp_server() as (url, _inbox, _):
        good = winback(
            "doctor",
            "--json",
            "--workspace",
            str(ws),
            cwd=tmp_path,
            WINBACK_BASE_URL="https://wb.bottega.example",
            WINBACK_MAIL_FROM="ciao@bottega.example",
            WINBACK_SHOP_NAME="Bottega",
            WINBACK_SMTP_URL=url,
        )
    assert good.returncode == 0, good.stdout
    assert json.loads(good.stdout)["ok"] is True


@pytest.mark.slow
def test_run_refuses_a_remote_relay_with_loopback_links(tmp_path: Path) -> None:
    assert winback("init", "shop", cwd=tmp_path).returncode == 0
    ws = str(tmp_path / "shop")
    refused = winback(
        "run",
        "--now",
        "2026-03-01T12:00:00",
        "--workspace",
        ws,
        cwd=tmp_path,
        WINBACK_SMTP_URL="smtp://smtp.example.com:587",
    )
    assert refused.returncode == 2
    assert "which no recipient can open" in refused.stderr
    local = winback(
        "run",
        "--now",
        "2026-03-01T12:00:00",
        "--workspace",
        ws,
        cwd=tmp_path,
        WINBACK_SMTP_URL="smtp://127.0.0.1:2525",
    )
    assert local.returncode == 0, local.stderr


def test_loopback_rules() -> None:
    assert is_loopback_host("localhost") and is_loopback_host("127.0.0.2")
    assert is_loopback_host("[::1]") and not is_loopback_host("10.0.0.1")
    remote = Settings(smtp_url="smtp://smtp.example.com", base_url="http://localhost:8000")
    assert relay_is_remote(remote)
    with pytest.raises(UnsafeSetup):
        check_can_send(remote)
    check_can_send(remote.model_copy(update={"delivery_sink": "file"}))  # nothing leaves
    check_can_send(remote.model_copy(update={"base_url": "https://wb.example"}))


@pytest.mark.slow
def test_summary_shows_the_workspace_currency(tmp_path: Path) -> None:
    assert winback("init", "shop", "--currency", "EUR", cwd=tmp_path).returncode == 0
    orders = tmp_path / "orders.csv"
    orders.write_text("order_id,customer_id,ordered_at,amount\no1,c1,2024-01-01,12.50\n")
    ws = str(tmp_path / "shop")
    assert winback("import", "orders", str(orders), "--workspace", ws, cwd=tmp_path).returncode == 0
    shown = winback("summary", "--workspace", ws, cwd=tmp_path)
    assert "12.50 EUR" in shown.stdout
