"""The delivery worker's crash windows and failures, with real worker processes killed by
SIGKILL and a real SMTP server (docs/delivery.md, "Exactly once to the wire").

A kill can duplicate only the messages on the wire (one per connection): each message the
server accepts is recorded as accepted before its connection sends another. A worker that
fails without dying hands back at once the rows it claimed and did not send."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from datetime import timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, insert, select, text

import winback
from tests.delivery_support import (
    CollectingHandler,
    Inbox,
    add_contact,
    add_message,
    configure,
    free_port,
    http_server,
    outbox_row,
    reply_json,
    smtp_server,
)
from winback.clock import FixedClock
from winback.delivery.channels import Durable, OnResult, OutboundMessage, SendResult, StopSignal
from winback.delivery.channels.setup import build_channels
from winback.delivery.worker import DeliveryWorker
from winback.store.schema import contacts, events, outbox
from winback.workspace import Workspace

#: A worker process: delivers what is due at the given instant, through SMTP channels wrapped
#: so that it kills itself (SIGKILL) at the point named, if any (handed to the worker as its
#: channels).
SCRIPT = """
import json, os, signal, sys
from datetime import datetime
import winback
from winback.clock import FixedClock
from winback.delivery.channels.setup import build_channels
path, at, settings, point = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

class Killing:
    def __init__(self, inner):
        self.inner = inner

    def send(self, message):
        return self.inner.send(message)

    def submit(self, message):
        return self.inner.submit(message)

    def send_many(self, messages, on_result=None, stop=None):
        if point == "before_send":
            die()

        def report(i, result):
            if point == "after_send":  # the server accepted it; nothing recorded yet
                die()
            durable = on_result(i, result)
            if point == "after_accept":  # its acceptance is recorded
                durable()
                die()
            return durable

        return self.inner.send_many(messages, report, stop)

    def close(self):
        self.inner.close()

opened = winback.open(path, clock=FixedClock(datetime.fromisoformat(at)))
ws = opened.replace(settings=opened.settings.model_copy(update=settings))
channels = build_channels(ws.settings, outbox=ws.path / "outbox")
worker = ws.delivery.worker(channels={key: Killing(c) for key, c in channels.items()})
try:
    worker.drain()
finally:
    worker.close()
"""

NOTE = """\
subject: "A note for {{ contact.first_name or 'you' }}"
html: "<p>Hello {{ contact.first_name or 'there' }}, here is {{ shop.name }}.</p>"
text: "Hello {{ contact.first_name or 'there' }}, here is {{ shop.name }}."
"""


def _worker(ws: Workspace, point: str = "", **settings: Any) -> subprocess.Popen[bytes]:
    env = {
        "WINBACK_DATABASE_URL": ws.database_url,
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(Path(winback.__file__).parents[1]),  # the code under test
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            SCRIPT,
            str(ws.path),
            ws.clock.now().isoformat(),
            json.dumps({"quiet_hours": "", "frequency_caps": {}, **settings}),
            point,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _crash(ws: Workspace, point: str, **settings: Any) -> None:
    proc = _worker(ws, point, **settings)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.decode()


def _copies(inbox: Inbox) -> Counter[str]:
    with inbox.lock:
        return Counter(str(m["Message-ID"]) for m in inbox.messages)


def _statuses(ws: Workspace) -> dict[str, int]:
    return ws.delivery.outbox_counts()


@pytest.mark.slow
@pytest.mark.parametrize("point", ["before_send", "after_send"])
def test_crash_then_reconcile_resends_with_the_same_message_id(
    workspace: Workspace, point: str
) -> None:
    clock = workspace.clock
    assert isinstance(clock, FixedClock)
    cid = add_contact(workspace, "c1", email="ada@example.com")
    oid = add_message(workspace, cid, key="reactivation:7:email-1")
    with smtp_server() as (url, inbox, _):
        workspace = configure(workspace, smtp_url=url, quiet_hours="", delivery_lease_seconds=300)
        _crash(workspace, point, smtp_url=url)
        row = outbox_row(workspace, oid)
        assert row["status"] == "sending" and row["claimed_at"] == clock.now()
        assert row["sent_at"] is None  # not known to have been accepted
        before = len(inbox.messages)
        assert before == (1 if point == "after_send" else 0)
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


def test_a_message_recorded_as_accepted_is_not_sent_again_after_a_crash(
    workspace: Workspace,
) -> None:
    """Killed after the acceptance was recorded but before the batch's outcomes were
    written: after the lease the row is finished as sent (Message-ID, email_sent event),
    not resent."""
    clock = workspace.clock
    assert isinstance(clock, FixedClock)
    cid = add_contact(workspace, "c1", email="ada@example.com")
    oid = add_message(workspace, cid, key="reactivation:8:email-1")
    with smtp_server() as (url, inbox, _):
        workspace = configure(workspace, smtp_url=url, quiet_hours="")
        _crash(workspace, "after_accept", smtp_url=url)
        row = outbox_row(workspace, oid)
        assert row["status"] == "sending" and row["sent_at"] == clock.now()
        clock.advance(timedelta(seconds=workspace.settings.delivery_lease_seconds + 1))
        assert workspace.delivery.deliver_due().claimed == 0
    assert len(inbox.messages) == 1
    row = outbox_row(workspace, oid)
    assert row["status"] == "sent" and row["attempts"] == 1
    assert row["message_id"] == inbox.messages[0]["Message-ID"]
    with workspace.engine.connect() as conn:
        sent = conn.execute(
            select(events.c.message_id).where(events.c.type == "email_sent")
        ).scalars()
        assert list(sent) == [row["message_id"]]


def test_at_most_once_policy_marks_unknown_outcomes_failed(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    clock = ws.clock
    assert isinstance(clock, FixedClock)
    cid = add_contact(ws, "c1", email="ada@example.com")
    oid = add_message(ws, cid)
    with smtp_server() as (url, inbox, _):
        ws = configure(ws, smtp_url=url, quiet_hours="", delivery_stale_policy="fail")
        _crash(ws, "after_send", smtp_url=url, delivery_stale_policy="fail")
        clock.advance(timedelta(seconds=ws.settings.delivery_lease_seconds + 1))
        assert ws.delivery.deliver_due().claimed == 0
    row = outbox_row(ws, oid)
    assert row["status"] == "failed" and "outcome unknown" in row["last_error"]
    assert len(inbox.messages) == 1


def test_without_a_crash_nothing_is_sent_twice(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    cid = add_contact(ws, "c1", email="ada@example.com")
    add_message(ws, cid)
    with smtp_server() as (url, inbox, _):
        ws = configure(ws, smtp_url=url, quiet_hours="")
        ws.delivery.deliver_due()
        ws.clock.advance(timedelta(days=1))  # type: ignore[attr-defined]
        ws.delivery.deliver_due()
    assert len(inbox.messages) == 1


# -- kill -9 at random moments -------------------------------------------------------------


def _backlog(ws: Workspace, n: int) -> None:
    """``n`` contacts with one pending email each (the light ``note`` template)."""
    (ws.path / "templates" / "note.yaml").write_text(NOTE, encoding="utf-8")
    now = ws.clock.now()
    with ws.engine.begin() as conn:
        conn.execute(
            insert(contacts),
            [
                {
                    "customer_id": f"k{i}",
                    "email": f"k{i}@example.com",
                    "first_name": f"K{i}",
                    "email_consent": True,
                    "attributes": {},
                    "orders_count": 0,
                    "revenue_total": 0,
                    "created_at": now,
                }
                for i in range(n)
            ],
        )
        ids = conn.execute(select(contacts.c.id).order_by(contacts.c.id)).scalars().all()
        conn.execute(
            insert(outbox),
            [
                {
                    "dedup_key": f"note:{cid}",
                    "contact_id": cid,
                    "channel": "email",
                    "template": "note",
                    "flow": "note",
                    "entry_id": cid,
                    "step": "email-1",
                    "priority": "marketing",
                    "payload": {},
                    "status": "pending",
                    "not_before": now,
                    "attempts": 0,
                    "created_at": now,
                }
                for cid in ids
            ],
        )


def _wait_for(inbox: Inbox, count: int, proc: subprocess.Popen[bytes], limit: float) -> None:
    """Until the server has received ``count`` messages, the process ended or ``limit``
    seconds passed."""
    deadline = time.monotonic() + limit
    assert inbox.received is not None
    with inbox.received:
        while len(inbox.messages) < count and proc.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            inbox.received.wait(min(left, 0.05))


@pytest.mark.slow
def test_kill_9_at_random_moments_duplicates_at_most_one_message_per_connection(
    workspace: Workspace,
) -> None:
    """A worker process delivering a backlog is killed (SIGKILL) at random moments,
    restarted after the lease each time, then left to finish: every message arrives, and
    the copies number at most connections x kills."""
    ws = workspace
    clock = ws.clock
    assert isinstance(clock, FixedClock)
    n, connections, kills = 1200, 4, 6
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    _backlog(ws, n)
    lease = ws.settings.delivery_lease_seconds
    settings: dict[str, Any] = {
        "smtp_connections": connections,
        "delivery_batch_size": 150,
        "delivery_max_attempts": 50,  # a row claimed at every kill is still resent
        "delivery_stale_policy": "resend",
        "delivery_processes": 1,
    }
    with smtp_server() as (url, inbox, _):
        killed_while_sending = 0
        for _ in range(kills):
            proc = _worker(ws, smtp_url=url, **settings)
            try:
                before = len(inbox.messages)
                _wait_for(inbox, before + rng.randrange(1, 200), proc, limit=30)
                proc.send_signal(signal.SIGKILL)
                proc.communicate(timeout=30)
                if proc.returncode != -signal.SIGKILL:
                    break  # it finished before the kill: nothing left to interrupt
                killed_while_sending += len(inbox.messages) > before
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            clock.advance(timedelta(seconds=lease + 1))  # the next one reconciles
        proc = _worker(ws, smtp_url=url, **settings)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        copies = _copies(inbox)
    context = f"seed {seed}, {killed_while_sending} kills while sending"
    assert killed_while_sending >= 1, context
    with ws.engine.connect() as conn:
        rows = conn.execute(select(outbox.c.status, outbox.c.message_id)).all()
        sent_events = conn.execute(
            select(func.count()).select_from(events).where(events.c.type == "email_sent")
        ).scalar_one()
    assert Counter(status for status, _ in rows) == {"sent": n}, context
    assert {mid for _, mid in rows} == set(copies), context  # each delivered at least once
    duplicates = sum(c - 1 for c in copies.values())
    assert duplicates <= connections * kills, f"{duplicates} duplicates; {context}"
    assert sent_events == n


# -- failures without a crash ----------------------------------------------------------------


class _Failing:
    """Wraps a real channel: raises ``error`` once ``after`` outcomes were reported (0: before
    sending anything), or sets ``stop`` instead when given."""

    def __init__(
        self,
        inner: Any,
        after: int,
        *,
        error: BaseException | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.inner, self.after, self.error, self.stop = inner, after, error, stop
        self.reported = 0
        self.lock = threading.Lock()

    def send(self, message: OutboundMessage) -> str | None:
        provider_id: str | None = self.inner.send(message)
        return provider_id

    def submit(self, message: OutboundMessage) -> Future[SendResult]:
        future: Future[SendResult] = self.inner.submit(message)
        return future

    def send_many(
        self,
        messages: Sequence[OutboundMessage | None],
        on_result: OnResult | None = None,
        stop: StopSignal | None = None,
    ) -> list[SendResult | None]:
        if self.after == 0 and self.error is not None:
            raise self.error

        def report(i: int, result: SendResult) -> Durable | None:
            assert on_result is not None
            durable = on_result(i, result)
            with self.lock:
                self.reported += 1
                reached = self.reported == self.after
            if reached and self.stop is not None:
                self.stop.set()
            elif reached and self.error is not None:
                raise self.error
            return durable

        return list(self.inner.send_many(messages, report, stop))

    def close(self) -> None:
        self.inner.close()


def _worker_through(ws: Workspace, wrap: Callable[[Any], Any]) -> DeliveryWorker:
    """A worker whose channels (those the settings configure) are wrapped by ``wrap``."""
    channels = build_channels(ws.settings, outbox=ws.path / "outbox")
    return ws.delivery.worker(channels={key: wrap(c) for key, c in channels.items()})


def _messages(ws: Workspace, n: int) -> list[int]:
    return [
        add_message(ws, add_contact(ws, f"c{i}", email=f"c{i}@example.com"), key=f"m:{i}")
        for i in range(n)
    ]


@pytest.mark.parametrize("after", [0, 7])
def test_an_error_after_the_claim_releases_the_unsent_rows_at_once(
    workspace: Workspace, after: int
) -> None:
    """An exception in a channel (before any send, or after 7 messages) fails the batch:
    the rows not sent are ``pending`` again at once with the error noted and their attempts
    unchanged, the sent ones are recorded, and a run at the same instant (no lease waited)
    sends the rest exactly once."""
    ws = workspace
    ids = _messages(ws, 40)
    with smtp_server() as (url, inbox, _):
        ws = configure(ws, smtp_url=url, quiet_hours="", smtp_connections=3)
        worker = _worker_through(ws, lambda c: _Failing(c, after, error=RuntimeError("injected")))
        try:
            with pytest.raises(RuntimeError, match="injected"):
                worker.run_once()
        finally:
            worker.close()
        rows = [outbox_row(ws, oid) for oid in ids]
        sent = [r for r in rows if r["status"] == "sent"]
        pending = [r for r in rows if r["status"] == "pending"]
        assert len(sent) + len(pending) == len(ids)  # nothing left 'sending'
        assert len(sent) == len(inbox.messages) and after <= len(sent) < len(ids)
        assert all(r["attempts"] == 1 and r["message_id"] for r in sent)
        assert pending and all(
            r["attempts"] == 0 and r["claimed_at"] is None and "injected" in r["last_error"]
            for r in pending
        )
        report = ws.delivery.deliver_due()  # same instant: no lease to wait for
        assert report.counts == {"sent": len(pending)}
        copies = _copies(inbox)
    assert len(copies) == len(ids) and set(copies.values()) == {1}
    assert all(outbox_row(ws, oid)["attempts"] == 1 for oid in ids)


def test_a_failed_acceptance_record_keeps_what_was_sent(sqlite_workspace: Workspace) -> None:
    """The store refuses to record one acceptance (a trigger raises): the batch stops, that
    message is still recorded as sent with the batch's outcomes (its outcome is known), the
    unsent rows go back to pending, and nothing is sent twice."""
    ws = sqlite_workspace
    ids = _messages(ws, 12)
    target = ids[5]
    with ws.engine.begin() as conn:
        conn.execute(
            text(
                f"CREATE TRIGGER refuse_accept BEFORE UPDATE OF sent_at ON outbox "
                f"WHEN NEW.id = {target} AND NEW.status = 'sending' "
                f"BEGIN SELECT RAISE(ABORT, 'injected: store refused'); END"
            )
        )
    with smtp_server() as (url, inbox, _):
        ws = configure(ws, smtp_url=url, quiet_hours="", smtp_connections=2)
        with pytest.raises(Exception, match="injected: store refused"):
            ws.delivery.deliver_due()
        row = outbox_row(ws, target)
        assert row["status"] == "sent" and row["sent_at"] is not None
        assert ws.delivery.outbox_counts().get("sending", 0) == 0
        ws.delivery.deliver_due()
        copies = _copies(inbox)
    assert len(copies) == len(ids) and set(copies.values()) == {1}


def test_a_stop_mid_batch_hands_back_what_was_not_sent(workspace: Workspace) -> None:
    ws = workspace
    ids = _messages(ws, 20)
    stop = threading.Event()
    with smtp_server() as (url, inbox, _):
        ws = configure(ws, smtp_url=url, quiet_hours="", smtp_connections=2)
        worker = _worker_through(ws, lambda c: _Failing(c, 4, stop=stop))
        try:
            report = worker.drain(stop=stop)
        finally:
            worker.close()
        assert report.counts["sent"] == len(inbox.messages) >= 4
        assert report.counts["released"] == len(ids) - report.counts["sent"] > 0
        counts = ws.delivery.outbox_counts()
        assert counts == {"sent": report.counts["sent"], "pending": report.counts["released"]}
        assert ws.delivery.deliver_due(stop=stop).claimed == 0  # still asked to stop
        ws.delivery.deliver_due()
        copies = _copies(inbox)
    assert len(copies) == len(ids) and set(copies.values()) == {1}


def test_a_message_that_cannot_be_rendered_fails_alone(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    (ws.path / "templates" / "ratio.yaml").write_text(
        'subject: "Hi"\ntext: "{{ 100 // contact.orders_count }} per order"\n'
        'html: "<p>{{ 100 // contact.orders_count }} per order</p>"\n',
        encoding="utf-8",
    )
    good = [
        add_message(
            ws, add_contact(ws, f"g{i}", email=f"g{i}@example.com", orders_count=2), "ratio"
        )
        for i in range(3)
    ]
    bad = add_message(ws, add_contact(ws, "z", email="z@example.com", orders_count=0), "ratio")
    with smtp_server() as (url, inbox, _):
        ws = configure(ws, smtp_url=url, quiet_hours="")
        report = ws.delivery.deliver_due()
    assert report.counts == {"sent": 3, "failed": 1}
    assert len(inbox.messages) == 3
    assert all(outbox_row(ws, oid)["status"] == "sent" for oid in good)
    row = outbox_row(ws, bad)
    assert row["status"] == "failed"
    assert "ratio.yaml:3 (html): integer division or modulo by zero" in row["last_error"]


# -- each acceptance is recorded before the connection's next message -------------------------


def _accepted(ws: Workspace) -> int:
    with ws.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_not(None))
            ).scalar_one()
        )


def test_the_smtp_server_never_gets_a_message_before_the_previous_ones_are_recorded(
    workspace: Workspace,
) -> None:
    """At each DATA the server receives, every message it accepted before, except at most
    one per connection (the others' in flight), is recorded as accepted in the store."""
    ws = workspace
    ids = _messages(ws, 30)
    connections = 3
    lag: list[int] = []

    class Checking(CollectingHandler):
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            lag.append(len(self.inbox.messages) - _accepted(ws))
            return await super().handle_DATA(server, session, envelope)

    inbox = Inbox()
    controller = Controller(Checking(inbox), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        url = f"smtp://127.0.0.1:{controller.port}"
        ws = configure(ws, smtp_url=url, quiet_hours="", smtp_connections=connections)
        assert ws.delivery.deliver_due().counts == {"sent": len(ids)}
    finally:
        controller.stop()
    assert len(lag) == len(ids) and max(lag) <= connections - 1, lag


def test_an_http_provider_never_gets_a_request_before_the_previous_one_is_recorded(
    workspace: Workspace,
) -> None:
    ws = workspace
    cids = [add_contact(ws, f"c{i}", first_name=f"C{i}") for i in range(8)]
    seen: list[tuple[int, int]] = []  # (requests answered before, acceptances recorded)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.append((len(seen), _accepted(ws)))
            reply_json(self, 201, {"id": len(seen)})

        def log_message(self, *args: Any) -> None:
            pass

    with http_server(Handler) as url:
        ws = configure(
            ws,
            providers={"crm": {"channel": "webhook", "url": url + "/hook", "connections": 1}},
            webhook_provider="crm",
        )
        for cid in cids:
            add_message(ws, cid, None, channel="webhook", key=f"w{cid}")
        assert ws.delivery.deliver_due().counts == {"sent": len(cids)}
    assert seen == [(k, k) for k in range(len(cids))]
