"""`winback flows ...`, `winback run`, `winback simulate` and the file sink."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import T0
from tests.flows.helpers import add_order, make_contacts
from winback.cli import app
from winback.errors import DefinitionError
from winback.flows.sinks import FileSink
from winback.ports import OutboundMessage
from winback.workspace import Workspace

runner = CliRunner()
DAY = timedelta(days=1)


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def dormant_shop(ws: Workspace, n: int = 6) -> list[int]:
    people = make_contacts(ws, n, at=T0 - 400 * DAY)
    for cid in people:
        add_order(ws, cid, at=T0 - 200 * DAY)
    return people


def test_add_run_stats_show_list(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    people = dormant_shop(ws)
    w = str(ws.path)
    ws.close()
    assert "flows/reactivation.yaml" in invoke("flows", "add", "reactivation", "-w", w)
    out = json.loads(
        invoke("run", "--now", "2026-03-01T09:00", "-w", w, "--sink", "file", "--json")
    )
    assert out["enrolled"] == {"reactivation": len(people)}
    assert out["delivered"] == len(people)
    files = sorted((ws.path / "outbox").glob("*.json"))
    assert len(files) == len(people)
    message = json.loads(files[0].read_text())
    assert message["template"] == "reactivation-1" and message["to"].endswith("@example.com")
    again = json.loads(
        invoke("run", "--now", "2026-03-01T09:00", "-w", w, "--sink", "file", "--json")
    )
    assert again["enrolled"] == {} and again["delivered"] == 0
    assert len(list((ws.path / "outbox").glob("*.json"))) == len(people)

    stats = json.loads(invoke("flows", "stats", "reactivation", "-w", w, "--json"))
    assert stats["entered"] == len(people)
    assert stats["active_per_step"] == {"s2": len(people)}
    assert stats["messages_per_step"] == {"s0": {"sent": len(people)}}
    assert stats["step_names"]["s0"] == "Email 1"
    shown = json.loads(invoke("flows", "show", "reactivation", "-w", w, "--json"))
    assert [s["id"] for s in shown["steps"]][:3] == ["s0", "s1", "s2"]
    assert [s["name"] for s in shown["steps"]][:2] == ["Email 1", "Wait 4 days"]
    assert "Email 1 (s0)" in invoke("flows", "stats", "reactivation", "-w", w)
    assert "Email 1" in invoke("flows", "show", "reactivation", "-w", w)
    listed = json.loads(invoke("flows", "list", "-w", w, "--json"))
    assert {f["key"]: f["active"] for f in listed}["reactivation"] == len(people)
    invoke("flows", "pause", "reactivation", "-w", w)
    assert {f["key"]: f["status"] for f in json.loads(invoke("flows", "list", "-w", w, "--json"))}[
        "reactivation"
    ] == "paused"
    assert "Stopped" not in invoke("flows", "enable", "reactivation", "-w", w)
    assert "ok" in invoke("flows", "validate", "-w", w)


@pytest.mark.slow
def test_validate_reports_file_and_place(sqlite_workspace: Workspace, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\ntrigger: {tag_added: x}\nsteps:\n  - wait: soon\n")
    result = runner.invoke(app, ["flows", "validate", str(bad), "-w", str(sqlite_workspace.path)])
    assert isinstance(result.exception, DefinitionError)
    assert "steps[0].wait: expected a duration like 4d" in str(result.exception)
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "winback"), "flows", "validate", str(bad),
         "-w", str(sqlite_workspace.path)],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, COLUMNS="300"),
    )  # fmt: skip
    assert proc.returncode == 2 and "steps[0].wait" in proc.stderr


@pytest.mark.slow
def test_simulate_uses_ground_truth_on_a_copy(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    people = dormant_shop(ws, 40)
    ws.flows.add("reactivation", now=T0 - DAY)
    truth = ws.path / "ground_truth.csv"
    lines = ["customer_id,purchase_rate_per_year,dropout_p,alive_at_end,p_buy_30d_no_contact,"
             "p_buy_30d_if_contacted,mean_spend"]  # fmt: skip
    lines += [f"c{i},1,0.1,1,0.0,{1.0 if i < 20 else 0.0},80" for i in range(40)]
    truth.write_text("\n".join(lines) + "\n")
    w = str(ws.path)
    ws.close()
    out = json.loads(
        invoke(
            "simulate",
            "reactivation",
            "--start",
            "2026-03-01T09:00",
            "--days",
            "31",
            "-w",
            w,
            "--json",
        )
    )
    assert out["entered"] == 40 and out["response_model"].endswith("ground_truth.csv")
    assert out["messages_per_step"]["s0"] == 40
    assert out["step_names"]["s2.then.0"] == "Email 2"
    results = {g["group"]: g for g in out["results"]["groups"]}
    assert results["treatment"]["contacts"] == 40 and results["treatment"]["converted"] == 20
    assert out["results"]["lift"]["holdout"] is None
    assert {s["step"] for s in out["results"]["steps"]} == {"s0", "s2.then.0"}
    # Exactly the 20 certain responders bought (within 30 days of entry), nobody else.
    assert out["simulated_orders"] == 20
    assert out["treatment"]["reactivated"] == 20 and out["treatment"]["revenue"] > 0
    # Non-responders got both emails and were tagged; responders left when they bought.
    assert out["exits"]["reactivated"] + out["exits"]["completed"] == 40
    assert out["exits"]["completed"] >= 20 and out["messages_per_step"]["s2.then.0"] >= 20
    # With a holdout: held-out contacts get no message and (p_no_contact = 0) never buy.
    held = json.loads(
        invoke("simulate", "reactivation", "--start", "2026-03-01T09:00", "--days", "31",
               "--holdout", "0.5", "-w", w, "--json")
    )  # fmt: skip
    assert 0 < held["holdout"]["contacts"] < 40
    assert held["holdout"]["reactivated"] == 0 and held["holdout"]["revenue"] == 0
    assert held["messages_per_step"]["s0"] == held["treatment"]["contacts"]
    lift = held["results"]["lift"]["holdout"]["conversion"]
    assert lift["n_control"] == held["holdout"]["contacts"] and lift["control"] == 0
    shown = invoke("simulate", "reactivation", "--start", "2026-03-01T09:00", "--days", "31",
                   "--holdout", "0.5", "-w", w)  # fmt: skip
    assert "incremental conversion" in shown and "Email 1" in shown
    # The workspace itself is untouched.
    stats = json.loads(invoke("flows", "stats", "reactivation", "-w", w, "--json"))
    assert stats["entered"] == 0 and len(people) == 40


def test_file_sink_writes_each_message_once(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "outbox")
    msg = OutboundMessage(dedup_key="f:1:s0", contact_id=1, channel="email", template="t")
    sink.send(msg)
    first = (tmp_path / "outbox" / "f_1_s0.json").stat().st_mtime_ns
    time.sleep(0.01)
    sink.send(msg)  # after a crash before the row was marked sent
    assert (tmp_path / "outbox" / "f_1_s0.json").stat().st_mtime_ns == first
    assert [p.name for p in (tmp_path / "outbox").iterdir()] == ["f_1_s0.json"]


@pytest.mark.slow
def test_run_loop_stops_cleanly_on_sigterm(sqlite_workspace: Workspace) -> None:
    w = str(sqlite_workspace.path)
    sqlite_workspace.close()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "winback"), "run", "-w", w, "--interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, COLUMNS="200"),
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the banner: the loop is running
    assert "Running flows" in line
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Stopped cleanly" in out


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01"])
def test_run_rejects_bad_instants(sqlite_workspace: Workspace, bad: str) -> None:
    result = runner.invoke(app, ["run", "--now", bad, "-w", str(sqlite_workspace.path)])
    assert "expected an ISO date-time" in str(result.exception)


def test_contact_flows_in_progress(sqlite_workspace: Workspace) -> None:
    from winback.flows.inspect import contact_flows

    ws = sqlite_workspace
    people = dormant_shop(ws, 2)
    ws.flows.add("reactivation", now=T0 - DAY)
    ws.flows.tick(T0)
    [entry] = contact_flows(ws.engine, people[0])
    assert entry["flow"] == "reactivation" and entry["step"] == "s2" and entry["step_kind"] == "if"
    assert entry["step_name"] == "Still dormant?"
    assert entry["wakes_at"] == T0 + 4 * DAY and entry["holdout"] is False


def test_enable_with_backfill(sqlite_workspace: Workspace) -> None:
    from datetime import UTC, datetime

    from tests.flows.helpers import add_event

    ws = sqlite_workspace
    viewed, old = make_contacts(ws, 2, at=T0 - 400 * DAY)
    now = datetime.now(UTC)
    add_event(ws, viewed, "product_view", at=now - 3 * DAY)
    add_event(ws, old, "product_view", at=now - 30 * DAY)
    ws.flows.folder.mkdir(exist_ok=True)
    (ws.flows.folder / "remind.yaml").write_text(
        "name: Remind\ntrigger: {event: product_view}\nsteps:\n"
        "  - send: {channel: email, template: day-0}\n  - wait: 4d\n"
        "  - send: {channel: email, template: day-4}\n"
    )
    w = str(ws.path)
    ws.close()
    bad = runner.invoke(app, ["flows", "enable", "remind", "--backfill", "two weeks", "-w", w])
    assert bad.exit_code != 0 and "--backfill" in bad.output
    out = invoke("flows", "enable", "remind", "--backfill", "14d", "-w", w)
    assert "Back-filled 1 contacts" in out
    again = invoke("flows", "enable", "remind", "--backfill", "14d", "-w", w)
    assert "enabled already" in again and "Pause it first" in again
