"""Secrets are masked by one rule: `winback config`, error messages, log lines and
tracebacks; and the secret key can be rotated without breaking the links already sent."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.delivery_support import add_contact, add_message, configure, free_port
from tests.web_support import running_service
from winback.config import Settings
from winback.delivery.links.tokens import TokenSigner
from winback.masking import HIDDEN, KNOWN_SECRETS, is_secret_key, mask_handlers
from winback.workspace import Workspace


def winback(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "winback.cli", *args],
        cwd=cwd,
        env=_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _env(**extra: str) -> dict[str, str]:
    """The environment of a winback subprocess: this interpreter's import path (the
    package under test) plus ``extra``."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": ":".join(sys.path),
        **extra,
    }


def _secret_settings() -> list[str]:
    return [name for name in Settings.model_fields if is_secret_key(name)]


@pytest.mark.slow
def test_no_setting_marked_secret_appears_in_config_output(tmp_path: Path) -> None:
    """Every setting whose name marks it secret, and every password inside a URL setting,
    is absent from `winback config` (table and --json)."""
    names = _secret_settings()
    assert {"secret_key", "previous_secret_keys"} <= set(names)
    assert winback("init", "shop", cwd=tmp_path).returncode == 0
    config = tmp_path / "shop" / "winback.toml"
    text = config.read_text(encoding="utf-8")
    text = re.sub(r'(?m)^secret_key = ".*"$', 'secret_key = "current-key-0001"', text)
    planted = {"current-key-0001", "old-key-0002", "older-key-0003", "db-pass-0004", "mail-0005"}
    text += (
        'previous_secret_keys = ["old-key-0002", "older-key-0003"]\n'
        'database_url = "postgresql://winback:db-pass-0004@127.0.0.1:1/winback"\n'
        'smtp_url = "smtp://mailer:mail-0005@relay.example:587"\n'
    )
    config.write_text(text, encoding="utf-8")
    for args in (["config", "--json"], ["config"]):
        shown = winback(*args, "--workspace", "shop", cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        for secret in planted:
            assert secret not in shown.stdout, (args, secret)
    data = json.loads(winback("config", "--json", "--workspace", "shop", cwd=tmp_path).stdout)
    for name in names:
        value = data[name]
        assert value in (HIDDEN, [HIDDEN, HIDDEN], None, []), (name, value)
    assert data["previous_secret_keys"] == [HIDDEN, HIDDEN]


@pytest.mark.slow
def test_a_refused_secret_setting_is_not_echoed(tmp_path: Path) -> None:
    """A setting error names the setting and the problem but never a secret value."""
    assert winback("init", "shop", cwd=tmp_path).returncode == 0
    config = tmp_path / "shop" / "winback.toml"
    good = config.read_text(encoding="utf-8")
    config.write_text(good + 'previous_secret_keys = "old-key-12345"\n', encoding="utf-8")
    shown = winback("config", "--workspace", "shop", cwd=tmp_path)
    assert shown.returncode == 2
    assert "previous_secret_keys" in shown.stderr and "list" in shown.stderr
    assert "old-key-12345" not in shown.stderr
    config.write_text(good, encoding="utf-8")
    bad_url = winback(
        "db",
        "upgrade",
        "--workspace",
        "shop",
        cwd=tmp_path,
        env=_env(WINBACK_DATABASE_URL="postgresql+psycopg://bob:hunter2-db@h:notaport/db"),
    )
    assert bad_url.returncode == 2, bad_url.stderr
    assert "database_url" in bad_url.stderr and "notaport" in bad_url.stderr
    assert "hunter2-db" not in bad_url.stderr and "Traceback" not in bad_url.stderr


@pytest.mark.slow
def test_failed_connection_log_lines_hide_the_password(tmp_path: Path) -> None:
    """`winback run` against an unreachable PostgreSQL logs each failed pass (with its
    traceback) to stderr; neither the store password nor the secret key is in it."""
    assert winback("init", "shop", cwd=tmp_path).returncode == 0
    secret = re.search(
        r'(?m)^secret_key = "(.*)"$', (tmp_path / "shop" / "winback.toml").read_text()
    )
    assert secret is not None
    url = f"postgresql+psycopg://bob:pg-pass-4242@127.0.0.1:{free_port()}/winback"
    env = _env(WINBACK_DATABASE_URL=url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "winback.cli", "run", "--interval", "0.2", "--workspace", "shop"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        lines: list[str] = []
        assert proc.stderr is not None
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            if "Traceback" in line:
                break
    finally:
        proc.terminate()
        rest = proc.communicate(timeout=30)[1]
    log = "".join(lines) + rest
    assert "engine pass failed" in log and "Traceback" in log
    assert "pg-pass-4242" not in log and secret.group(1) not in log


def test_log_records_are_masked_by_the_handler_filter() -> None:
    """A record whose message and exception carry a URL with a password, a secret query
    parameter and a known secret value is written with all three hidden."""
    KNOWN_SECRETS.add(["the-signing-key-xyz"])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    mask_handlers([handler])
    logger = logging.getLogger("winback.test-masking")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ConnectionError("smtp://mailer:smtp-pass-77@relay:587 refused")
        except ConnectionError:
            logger.exception(
                "sending via %s failed (key %s)",
                "https://hooks.example/send?api_key=hook-key-88&x=1",
                "the-signing-key-xyz",
            )
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "ERROR sending via https://hooks.example/send?api_key=********&x=1" in out
    assert "smtp://mailer:********@relay:587" in out and "Traceback" in out
    for secret in ("smtp-pass-77", "hook-key-88", "the-signing-key-xyz"):
        assert secret not in out


@pytest.mark.parametrize("listed", [True, False])
def test_links_signed_with_a_previous_key_verify_while_it_is_listed(
    workspace: Workspace, listed: bool
) -> None:
    """After a rotation, an unsubscribe link signed with the former key still opens its
    page while the key is in previous_secret_keys, and is a 404 once it is removed; new
    links are signed with the new key only."""
    cid = add_contact(workspace, "c1", email="ada@example.com", first_name="Ada")
    mid = add_message(workspace, cid)
    old = TokenSigner("former-key-aaaa").sign("u", mid, cid)
    workspace = configure(
        workspace,
        secret_key="current-key-bbbb",
        previous_secret_keys=["former-key-aaaa"] if listed else [],
    )
    fresh = TokenSigner("current-key-bbbb").sign("u", mid, cid)
    assert TokenSigner("former-key-aaaa").verify("u", fresh) is None
    with running_service(workspace) as base:
        answer = httpx.get(f"{base}/u/{old}")
        assert answer.status_code == (200 if listed else 404)
        assert httpx.get(f"{base}/u/{fresh}").status_code == 200
