"""The reference flow end to end through the delivery worker to a real SMTP server:
`winback run` with channels configured sends each flow message once, as a rendered email."""

from __future__ import annotations

from datetime import timedelta

from tests.conftest import T0
from tests.delivery_support import configure, smtp_server
from tests.flows.test_cli import dormant_shop
from winback.clock import FixedClock
from winback.flows.runner import run_once
from winback.workspace import Workspace

DAY = timedelta(days=1)


def test_reference_flow_through_smtp(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    people = dormant_shop(ws, 3)
    ws.flows.add("reactivation", now=T0 - DAY)
    with smtp_server() as (url, inbox, _handler):
        ws = configure(ws, smtp_url=url)
        first = run_once(ws, T0)  # sink "auto": channels are configured
        assert first.tick.enrolled == {"reactivation": 3}
        assert len(inbox.messages) == 3 and first.delivery.sent == 3
        assert run_once(ws, T0).delivery.sent == 0  # same instant: nothing more
        assert isinstance(ws.clock, FixedClock)
        ws.clock.set(T0 + 4 * DAY)
        run_once(ws, T0 + 4 * DAY)
        assert len(inbox.messages) == 6
    recipients = sorted(rcpt for _, rcpts in inbox.envelopes for rcpt in rcpts)
    assert recipients == sorted(f"c{i}@example.com" for i in range(3) for _ in range(2))
    assert len({m["Subject"] for m in inbox.messages}) == 2
    assert not (ws.path / "outbox").exists()  # the file sink was not used
    assert len(people) == 3
