"""The reference flow's emails on the wire: `winback run` and `winback serve` (engine loop in
the background) hand the outbox to the delivery worker, which delivers to a real SMTP
server."""

from __future__ import annotations

import json
import time
from datetime import timedelta

from typer.testing import CliRunner

from tests.conftest import T0
from tests.delivery_support import smtp_server
from tests.flows.helpers import add_order, make_contacts
from tests.web_support import running_service
from winback.cli import app
from winback.workspace import Workspace

DAY = timedelta(days=1)


def _dormant(ws: Workspace, n: int) -> list[int]:
    people = make_contacts(ws, n, at=T0 - 400 * DAY, first_name="Ada")
    for cid in people:
        add_order(ws, cid, at=T0 - 200 * DAY)
    return people


def test_winback_run_delivers_the_reference_flow_over_smtp(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    people = _dormant(ws, 3)
    ws.flows.add("reactivation", now=T0 - DAY)
    w = str(ws.path)
    ws.close()
    runner = CliRunner()
    with smtp_server() as (url, inbox, _):
        with (ws.path / "winback.toml").open("a", encoding="utf-8") as toml:
            toml.write(f'\nsmtp_url = "{url}"\nmail_from = "hello@shop.example"\n')
        for now in ("2026-03-01T09:00", "2026-03-05T09:00"):
            result = runner.invoke(app, ["run", "--now", now, "-w", w, "--json"])
            assert result.exit_code == 0, result.output
            assert json.loads(result.stdout)["delivered"] == len(people)
    subjects = sorted(m["Subject"] for m in inbox.messages)
    assert len(inbox.messages) == 2 * len(people)
    # The shipped library emails, personalised: email 1 then email 2 for every contact.
    assert sum(s.endswith("it's been a while") for s in subjects) == len(people)
    assert sum(s.startswith("A little something to welcome you back") for s in subjects) == len(
        people
    )
    assert any("Ada" in s for s in subjects)
    assert all(m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click" for m in inbox.messages)
    assert len({m["Message-ID"] for m in inbox.messages}) == len(inbox.messages)
    assert not (ws.path / "outbox").exists() or not list((ws.path / "outbox").glob("*.json"))


def test_serve_runs_the_engine_and_delivers_in_the_background(
    sqlite_workspace: Workspace,
) -> None:
    ws = sqlite_workspace
    _dormant(ws, 2)
    ws.flows.add("reactivation", now=T0 - DAY)
    with smtp_server() as (url, inbox, _):
        ws = ws.replace(settings=ws.settings.model_copy(update={"smtp_url": url}))
        with running_service(ws, background=True, interval=0.2):
            deadline = time.monotonic() + 30
            while len(inbox.messages) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
    assert len(inbox.messages) == 2
    assert {m["To"] for m in inbox.messages} == {"c0@example.com", "c1@example.com"}
