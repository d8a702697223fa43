"""The segments, tags and contacts commands, through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert
from typer.testing import CliRunner

from tests.conftest import T0
from tests.test_segments import crafted_shop
from winback.cli import app
from winback.store.schema import outbox
from winback.workspace import Workspace

runner = CliRunner()


def run(ws: Workspace, *args: str) -> Any:
    result = runner.invoke(app, [*args, "-w", str(ws.path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output) if "--json" in args else result.output


def test_segments_commands(sqlite_workspace: Workspace, tmp_path: Path) -> None:
    ws = sqlite_workspace
    crafted_shop(ws)
    refreshed = run(ws, "segments", "refresh", "--now", T0.isoformat(), "--json")
    sizes = {s["name"]: s["members"] for s in refreshed["segments"]}
    assert sizes["Customers Not Active"] == 3
    assert refreshed["now"] == T0.isoformat()
    listed = run(ws, "segments", "list", "--json")
    assert {r["name"]: r["members"] for r in listed} == sizes
    shown = run(ws, "segments", "show", "customers not active", "--json")
    assert shown["name"] == "Customers Not Active"
    assert shown["depends_on"] == ["Customers - No Purchase last 90d", "Not Active Users"]
    members = run(ws, "segments", "members", "Customers Not Active", "--json")
    assert {m["customer_id"] for m in members} == {"dormant", "tagged", "proxied"}
    out = tmp_path / "x.csv"
    assert "Wrote 3 members" in run(
        ws, "segments", "export", "Customers Not Active", "--out", str(out)
    )
    assert out.read_text(encoding="utf-8").splitlines()[0].startswith("contact_id,customer_id")
    assert len(run(ws, "segments", "validate", "--json")) == 8
    # a day later, incremental: nothing moves
    again = run(ws, "segments", "refresh", "--now", "2026-03-02T09:00:00+00:00", "--json")
    assert {s["mode"] for s in again["segments"]} == {"incremental"}
    table = run(ws, "segments", "list")
    assert "members" in table and "Customers" in table


def test_tags_commands(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    crafted_shop(ws)
    run(ws, "segments", "refresh", "--now", T0.isoformat())
    added = run(ws, "tags", "add", "vip", "--contact", "ghost", "-c", "lead", "--json")
    assert added == {"tag": "vip", "requested": 2, "changed": 2}
    added = run(ws, "tags", "add", "vip", "--segment", "Customers Not Active", "--json")
    assert added == {"tag": "vip", "requested": 3, "changed": 3}
    counts = run(ws, "tags", "list", "--json")
    assert {r["tag"]: r["contacts"] for r in counts} == {
        "vip": 5,
        "customer_not-active_after-reactivation": 1,
    }
    removed = run(ws, "tags", "remove", "vip", "-c", "ghost", "--json")
    assert removed["changed"] == 1
    history = run(ws, "tags", "list", "--contact", "ghost", "--json")
    assert history["tags"] == []
    assert [h["action"] for h in history["history"]] == ["added", "removed"]


def test_contacts_show(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    ids = crafted_shop(ws)
    ws.segments.refresh()
    with ws.engine.begin() as c:
        c.execute(
            insert(outbox).values(
                dedup_key="reactivation:1:0",
                contact_id=ids["dormant"],
                channel="email",
                template="reactivation-1",
                flow="reactivation",
                step="0",
                status="sent",
                not_before=T0,
                created_at=T0,
                sent_at=T0,
            )
        )
    profile = run(ws, "contacts", "show", "dormant", "--json")
    assert profile["customer_id"] == "dormant"
    assert profile["consent"] == {"email": True, "sms": None, "push": None}
    assert profile["attributes"]["orders_count"] == 1
    assert {s["segment"] for s in profile["segments"]} == {
        "Customers",
        "Not Active Users",
        "Customers - No Purchase last 90d",
        "Customers Not Active",
    }
    assert profile["segments"][0]["entered_at"] == T0.isoformat()
    assert [m["template"] for m in profile["messages"]] == ["reactivation-1"]
    assert profile["tags"] == []
    tagged = run(ws, "contacts", "show", f"#{ids['tagged']}", "--json")
    assert [t["tag"] for t in tagged["tags"]] == ["customer_not-active_after-reactivation"]


@pytest.mark.slow
def test_errors_name_the_file_and_exit_2(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    (ws.path / "segments" / "bad.yaml").write_text(
        "name: Bad\nall:\n  - {event: purchase, within: ninety}\n", encoding="utf-8"
    )
    done = subprocess.run(
        [sys.executable, "-c", "from winback.cli import main; main()", "segments", "validate"],
        cwd=ws.path,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "WINBACK_HOME": str(ws.path), "COLUMNS": "200"},
        check=False,
    )
    assert done.returncode == 2
    assert "segments/bad.yaml:all[0].within: expected a duration like 90d" in done.stderr
