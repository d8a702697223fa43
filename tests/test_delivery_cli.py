"""`winback api-keys`, `winback coupons`, `winback suppressions`, `winback deliver`."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tests.delivery_support import add_contact, add_message, smtp_server
from winback.cli import app
from winback.store import apikeys
from winback.workspace import Workspace

runner = CliRunner()


def _run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def test_cli_keys_coupons_suppressions_deliver(sqlite_workspace: Workspace, tmp_path: Path) -> None:
    ws = sqlite_workspace
    w = ["-w", str(ws.path)]
    key = _run("api-keys", "create", "shop", *w).strip()
    found = apikeys.lookup(ws.engine, key)
    assert key.startswith("wbk_") and found is not None and found.name == "shop"
    listed = json.loads(_run("api-keys", "list", "--json", *w))
    assert [k["name"] for k in listed] == ["shop"] and key not in json.dumps(listed)
    codes = tmp_path / "codes.txt"
    codes.write_text("A-1\nA-2\n", encoding="utf-8")
    assert "Added 2 codes to pool 'spring'" in _run(
        "coupons", "import", str(codes), "--pool", "spring", *w
    )
    assert json.loads(_run("coupons", "status", "--json", *w))["codes"] == 2
    _run("suppressions", "add", "No@Example.com", *w)
    assert json.loads(_run("suppressions", "list", "--json", *w))[0]["address"] == (
        "no@example.com"
    )
    cid = add_contact(ws, "c1", email="ada@example.com", first_name="Ada")
    add_message(ws, cid)
    with smtp_server() as (url, inbox, _):
        with (ws.path / "winback.toml").open("a", encoding="utf-8") as toml:
            toml.write(f'\nsmtp_url = "{url}"\nquiet_hours = ""\n')
        out = json.loads(_run("deliver", "--json", *w))
    assert out["outcomes"] == {"sent": 1} and out["outbox"] == {"sent": 1}
    assert len(inbox.messages) == 1
    assert "Revoked shop" in _run("api-keys", "revoke", "shop", *w)
