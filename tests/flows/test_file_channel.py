"""The dry run is a real channel: `winback run` without a provider hands the outbox to the
delivery worker, whose file channel gets consent, suppression, frequency caps and quiet
hours exactly as SMTP would; every message not sent is reported under its reason."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from tests.conftest import T0
from tests.flows.helpers import add_order, make_contacts, set_contact
from winback.cli import app
from winback.clock import FixedClock
from winback.config import Settings
from winback.delivery.channels.setup import build_channels
from winback.flows.sinks import FileSink
from winback.workspace import Workspace

runner = CliRunner()
DAY = timedelta(days=1)

SECOND_FLOW = """\
name: Second chance
trigger: {segment_entry: Customers Not Active}
entry: {consent: email}
steps:
  - send: {channel: email, template: reactivation-2}
"""


def _run(w: str, instant: str, *args: str) -> dict[str, Any]:
    result = runner.invoke(app, ["run", "--now", instant, "-w", w, "--json", *args])
    assert result.exit_code == 0, (result.output, result.exception)
    return dict(json.loads(result.stdout))


def _shop(ws: Workspace, n: int, **settings: str) -> list[int]:
    """Dormant contacts in two flows that both send an email on entry."""
    people = make_contacts(ws, n, at=T0 - 400 * DAY, first_name="Ada")
    for cid in people:
        add_order(ws, cid, at=T0 - 200 * DAY)
    ws.flows.add("reactivation", now=T0 - DAY)
    (ws.path / "flows" / "second-chance.yaml").write_text(SECOND_FLOW, encoding="utf-8")
    ws.flows.enable("second-chance", now=T0 - DAY)
    with (ws.path / "winback.toml").open("a", encoding="utf-8") as toml:
        for name, value in settings.items():
            toml.write(f"{name} = {value}\n")
    return people


def _files(ws: Workspace) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((ws.path / "outbox").glob("*.json"))]


def test_frequency_cap_holds_across_flows_in_the_dry_run(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    people = _shop(ws, 3, frequency_caps='{email = "1/1d"}', quiet_hours='""')
    w = str(ws.path)
    ws.close()
    first = _run(w, "2026-03-01T09:00")
    assert first["enrolled"] == {"reactivation": 3, "second-chance": 3}
    # One email per contact on the first day; the other flow's email waits for the cap.
    assert first["delivered"] == 3
    assert first["not_sent"] == {"deferred_frequency_cap": 3}
    files = _files(ws)
    assert sorted(f["contact_id"] for f in files) == sorted(people)
    # The file holds the rendered message: subject, text and HTML.
    email = files[0]
    assert email["subject"] and "Ada" in email["text"] and "<html" in email["html"].lower()
    assert email["to"].endswith("@example.com") and email["message_id"]
    assert "/u/" in email["text"]  # the signed unsubscribe link, as sent by SMTP
    later = _run(w, "2026-03-02T09:00")  # a day later: the deferred ones go out
    assert later["delivered"] == 3 and later["not_sent"] == {}
    per_contact = {c: 0 for c in people}
    for f in _files(ws):
        per_contact[f["contact_id"]] += 1
    assert set(per_contact.values()) == {2}


def test_quiet_hours_consent_and_suppression_apply(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    people = _shop(ws, 4, frequency_caps="{}", quiet_hours='"21:00-08:00"')
    set_contact(ws, people[0], email_consent=False)  # enrolled first, then withdrew
    ws.delivery.suppress("email", "c1@example.com")
    w = str(ws.path)
    ws.close()
    night = _run(w, "2026-03-01T23:00")
    assert night["delivered"] == 0
    # c0 no longer consents (entry needs it: not enrolled); c1 is suppressed at once; the
    # other two wait for the morning.
    assert night["not_sent"] == {"deferred_quiet_hours": 4, "suppressed": 2}
    assert _files(ws) == []
    with Workspace(Path(w)) as again:  # c2 withdraws consent during the night
        set_contact(again, people[2], email_consent=False)
    morning = _run(w, "2026-03-02T09:00")
    assert morning["not_sent"] == {"skipped_no_consent": 2}
    assert morning["delivered"] == 2
    assert {f["contact_id"] for f in _files(ws)} == {people[3]}


def test_text_output_names_the_reasons(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    _shop(ws, 2, frequency_caps='{email = "1/1d"}', quiet_hours='""')
    w = str(ws.path)
    ws.close()
    result = runner.invoke(app, ["run", "--now", "2026-03-01T09:00", "-w", w])
    assert result.exit_code == 0, result.output
    line = " ".join(result.stdout.split())  # as the terminal wrapped it
    assert "2 delivered, 2 deferred (frequency cap)." in line
    assert "skipped" not in line


def test_sink_channels_leaves_email_pending_without_smtp(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    _shop(ws, 2, quiet_hours='""')
    w = str(ws.path)
    ws.close()
    out = _run(w, "2026-03-01T09:00", "--sink", "channels")
    assert out["delivered"] == 0 and out["not_sent"] == {}
    assert not (ws.path / "outbox").exists() or _files(ws) == []
    assert _run(w, "2026-03-01T09:00", "--sink", "file")["delivered"] == 4


def test_build_channels_chooses_the_file_channel(tmp_path: Path) -> None:
    files = build_channels(Settings(), outbox=tmp_path)
    assert set(files) == {"email", "sms", "push"}
    assert all(isinstance(c, FileSink) for c in files.values())
    hook = {"channel": "webhook", "url": "http://127.0.0.1:9/hook"}
    real = build_channels(Settings(providers={"crm": hook}), outbox=tmp_path)
    assert set(real) == {"webhook:crm"} and not isinstance(real["webhook:crm"], FileSink)
    forced = build_channels(
        Settings(providers={"crm": hook}, delivery_sink="file"), outbox=tmp_path
    )
    assert set(forced) == {"email", "sms", "push", "webhook:crm"}
    assert isinstance(forced["webhook:crm"], FileSink) and forced["webhook:crm"].config


def test_run_once_caps_the_file_channel_on_each_store(workspace: Workspace) -> None:
    from winback.flows.runner import run_once

    people = _shop(workspace, 2)
    ws = workspace.replace(
        settings=workspace.settings.model_copy(
            update={"frequency_caps": {"email": "1/1d"}, "quiet_hours": ""}
        )
    )
    report = run_once(ws, T0)
    assert report.delivery.sent == 2
    assert report.delivery.not_sent == {"deferred_frequency_cap": 2}
    assert sorted(f["contact_id"] for f in _files(ws)) == sorted(people)
    ws = ws.replace(clock=FixedClock(T0 + DAY))
    assert run_once(ws, T0 + DAY).delivery.sent == 2
