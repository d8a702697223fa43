"""Each crash window of the delivery worker, with a real process killed by SIGKILL at an
injected fault point, then a fresh worker after the lease (docs/delivery.md)."""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import timedelta

import pytest

from tests.delivery_support import add_contact, add_message, configure, outbox_row, smtp_server
from winback.clock import FixedClock
from winback.workspace import Workspace

SCRIPT = """
import sys
from datetime import datetime
import winback
from winback.clock import FixedClock
path, url, fault, at = sys.argv[1:5]
ws = winback.open(path, clock=FixedClock(datetime.fromisoformat(at)))
ws.settings = ws.settings.model_copy(update={"smtp_url": url, "quiet_hours": ""})
ws.delivery.worker(fault=fault).run_once()
"""


def _crash(ws: Workspace, url: str, fault: str) -> None:
    env = {"WINBACK_DATABASE_URL": ws.database_url, "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(ws.path), url, fault, ws.clock.now().isoformat()],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["after_claim", "after_send"])
def test_crash_then_reconcile_resends_with_the_same_message_id(
    workspace: Workspace, fault: str
) -> None:
    clock = workspace.clock
    assert isinstance(clock, FixedClock)
    cid = add_contact(workspace, "c1", email="ada@example.com")
    oid = add_message(workspace, cid, key="reactivation:7:email-1")
    with smtp_server() as (url, inbox, _):
        configure(workspace, smtp_url=url, quiet_hours="", delivery_lease_seconds=300)
        _crash(workspace, url, fault)
        row = outbox_row(workspace, oid)
        assert row["status"] == "sending" and row["claimed_at"] == clock.now()
        before = len(inbox.messages)
        assert before == (1 if fault == "after_send" else 0)
        # Within the lease nobody touches the row.
        clock.advance(timedelta(seconds=299))
        assert workspace.delivery.deliver_due().claimed == 0
        clock.advance(timedelta(seconds=2))
        report = workspace.delivery.deliver_due()
        assert report.counts == {"sent": 1}
    row = outbox_row(workspace, oid)
    assert row["status"] == "sent" and row["attempts"] == 2
    ids = {m["Message-ID"] for m in inbox.messages}
    assert len(ids) == 1 and row["message_id"] in ids  # a copy, if any, is the same message
    assert len(inbox.messages) == before + 1


@pytest.mark.slow
def test_at_most_once_policy_marks_unknown_outcomes_failed(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    clock = ws.clock
    assert isinstance(clock, FixedClock)
    cid = add_contact(ws, "c1", email="ada@example.com")
    oid = add_message(ws, cid)
    with smtp_server() as (url, inbox, _):
        configure(ws, smtp_url=url, quiet_hours="", delivery_stale_policy="fail")
        _crash(ws, url, "after_send")
        clock.advance(timedelta(seconds=ws.settings.delivery_lease_seconds + 1))
        assert ws.delivery.deliver_due().claimed == 0
    row = outbox_row(ws, oid)
    assert row["status"] == "failed" and "outcome unknown" in row["last_error"]
    assert len(inbox.messages) == 1


def test_a_crash_between_send_and_mark_is_the_only_duplicate_window(
    sqlite_workspace: Workspace,
) -> None:
    """Without a crash, running the worker again sends nothing twice."""
    ws = sqlite_workspace
    cid = add_contact(ws, "c1", email="ada@example.com")
    add_message(ws, cid)
    with smtp_server() as (url, inbox, _):
        configure(ws, smtp_url=url, quiet_hours="")
        ws.delivery.deliver_due()
        ws.clock.advance(timedelta(days=1))  # type: ignore[attr-defined]
        ws.delivery.deliver_due()
    assert len(inbox.messages) == 1
