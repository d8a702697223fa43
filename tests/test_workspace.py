"""The workspace wires services from its settings, clock and store; ``replace`` gives one on
the same store with other settings or another clock."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

from tests.conftest import T0
from tests.shopdata import add_contact
from winback.analytics.analysis import day_of
from winback.clock import FixedClock
from winback.delivery.inbound import EventIn
from winback.ports import DeliveryFailed, OneAtATime, OutboundMessage, SendResult
from winback.workspace import Workspace

ACTIVE = "Active Users"


def test_replace_shares_the_store_and_builds_services_anew(workspace: Workspace) -> None:
    add_contact(workspace, "a")
    later = FixedClock(T0 + timedelta(days=10))
    settings = workspace.settings.model_copy(update={"dormant_days": 30})
    other = workspace.replace(settings=settings, clock=later)
    assert other.engine is workspace.engine and other.path == workspace.path
    assert other.store.count_contacts() == 1
    assert other.analytics.reference_day() == day_of((T0 + timedelta(days=10)).date())
    assert workspace.analytics.reference_day() == day_of(T0.date())
    assert "30 days" in other.segments.get(ACTIVE).description
    assert "90 days" in workspace.segments.get(ACTIVE).description
    assert other.replace().settings is settings and other.replace().clock is later


def test_services_outlive_close(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    add_contact(ws, "a")
    tags = ws.tags
    ws.close()
    assert tags.add("vip", contact_refs=["a"]).changed == [ws.contacts.resolve("a")]
    assert ws.tags is tags


def test_closing_a_workspace_closes_its_replacements(sqlite_workspace: Workspace) -> None:
    other = sqlite_workspace.replace(clock=FixedClock(T0 + timedelta(hours=1)))
    event = EventIn(customer_id="c1", type="page_view", occurred_at=T0, event_id="e1")
    assert other.delivery.event_intake.submit([event]).result(timeout=10) == 1
    assert _intake_threads() == 2  # the journal's appender and its applier
    sqlite_workspace.close()
    assert _intake_threads() == 0


def _intake_threads() -> int:
    return sum(t.name.startswith("winback-event-") for t in threading.enumerate())


def _message(to: str) -> OutboundMessage:
    return OutboundMessage(dedup_key=f"k-{to}", contact_id=1, channel="email", template=None, to=to)


class _Refusing(OneAtATime):
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, message: OutboundMessage) -> str | None:
        if message.to == "bad":
            raise DeliveryFailed("550 no such user", temporary=False, bounced=True, code=550)
        self.sent.append(str(message.to))
        return f"id-{message.to}"


def test_one_at_a_time_sends_in_turn_each_outcome_durable_first() -> None:
    channel = _Refusing()
    seen: list[str] = []

    def on_result(i: int, result: SendResult) -> Callable[[], None]:
        seen.append(f"{i}:{result.outcome}")
        return lambda: seen.append(f"durable {i} before {len(channel.sent)} sent")

    results = channel.send_many([_message("a"), None, _message("bad"), _message("c")], on_result)
    assert [r.outcome if r else None for r in results] == ["sent", None, "bounced", "sent"]
    assert results[0] is not None and results[0].provider_id == "id-a"
    assert seen == [
        "0:sent",
        "durable 0 before 1 sent",
        "2:bounced",
        "durable 2 before 1 sent",
        "3:sent",
        "durable 3 before 2 sent",
    ]
    stop = threading.Event()
    stop.set()
    assert channel.send_many([_message("d")], stop=stop) == [None]
    assert channel.submit(_message("e")).result().provider_id == "id-e"
    assert channel.sent == ["a", "c", "e"]
    channel.close()
