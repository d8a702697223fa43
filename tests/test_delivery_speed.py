"""Delivery throughput features: worker processes (``delivery_processes``) that keep claims
exclusive, and SMTP connections kept open across the passes of the long-running loop."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select

from tests.delivery_support import (
    CollectingHandler,
    Inbox,
    add_contact,
    add_message,
    configure,
    free_port,
    smtp_server,
)
from winback.delivery.channels.smtp import SmtpChannel
from winback.flows.runner import run_forever
from winback.store.schema import outbox
from winback.workspace import Workspace


def _statuses(ws: Workspace) -> dict[str, int]:
    with ws.engine.connect() as conn:
        rows = conn.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status))
        return {str(s): int(n) for s, n in rows}


@pytest.mark.slow
def test_worker_processes_deliver_every_message_exactly_once(workspace: Workspace) -> None:
    n = 60
    ids = [add_contact(workspace, f"c{i}", email=f"c{i}@example.com") for i in range(n)]
    for cid in ids:
        add_message(workspace, cid, key=f"k{cid}")
    with smtp_server() as (url, inbox, _):
        workspace = configure(
            workspace,
            smtp_url=url,
            smtp_connections=2,
            delivery_processes=3,
            delivery_batch_size=10,
            quiet_hours="",
            frequency_caps={},
        )
        report = workspace.delivery.deliver_due()
    assert report.processes == 3  # two spawned workers claimed batches next to this one
    assert report.claimed == n and report.counts == {"sent": n}
    assert _statuses(workspace) == {"sent": n}
    received = sorted(str(m["To"]) for m in inbox.messages)
    assert received == sorted(f"c{i}@example.com" for i in range(n))  # none twice, none lost
    assert len({m["Message-ID"] for m in inbox.messages}) == n


def test_a_small_backlog_is_delivered_without_extra_processes(
    sqlite_workspace: Workspace,
) -> None:
    ws = sqlite_workspace
    cid = add_contact(ws, "c1", email="a@example.com")
    add_message(ws, cid, key="a")
    with smtp_server() as (url, inbox, _):
        ws = configure(ws, smtp_url=url, delivery_processes=4, quiet_hours="", frequency_caps={})
        report = ws.delivery.deliver_due()
    assert report.processes == 1 and report.counts == {"sent": 1}
    assert len(inbox.messages) == 1


class _Peers(CollectingHandler):
    """Also records the client address (one per connection) of each message."""

    def __init__(self, inbox: Inbox) -> None:
        super().__init__(inbox)
        self.peers: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.peers.append(session.peer)
        return await super().handle_DATA(server, session, envelope)


def test_connections_are_kept_between_passes_and_replaced_when_dropped(
    sqlite_workspace: Workspace,
) -> None:
    ws = sqlite_workspace
    cid = add_contact(ws, "c1", email="a@example.com")
    port = free_port()
    inbox = Inbox()
    handler = _Peers(inbox)
    server = Controller(handler, hostname="127.0.0.1", port=port)
    server.start()
    ws = configure(
        ws,
        smtp_url=f"smtp://127.0.0.1:{port}",
        smtp_connections=1,
        smtp_idle_seconds=0.3,
        quiet_hours="",
        frequency_caps={},
    )
    try:
        with ws.delivery.keep_connections():
            for key in ("a", "b"):
                add_message(ws, cid, key=key)
                assert ws.delivery.deliver_due().counts == {"sent": 1}
            kept = ws.delivery._kept
            assert kept is not None
            channel = kept.channels["email"]
            assert isinstance(channel, SmtpChannel)
            assert channel.opened == 1 and channel.idle_connections() == 1
            assert len(set(handler.peers)) == 1  # both passes on one connection

            # The relay goes away and comes back: the idle connection fails its NOOP check
            # and is replaced, and the message goes out.
            server.stop()
            server = Controller(handler, hostname="127.0.0.1", port=port)
            server.start()
            time.sleep(0.35)
            add_message(ws, cid, key="c")
            assert ws.delivery.deliver_due().counts == {"sent": 1}
            assert channel.opened == 2

            # Idle for more than four times smtp_idle_seconds: closed and reopened.
            time.sleep(1.25)
            add_message(ws, cid, key="d")
            assert ws.delivery.deliver_due().counts == {"sent": 1}
            assert channel.opened == 3
        assert ws.delivery._kept is None and channel.idle_connections() == 0
    finally:
        server.stop()
    assert len(inbox.messages) == 4 and len(set(handler.peers)) == 3


def test_run_loop_reuses_one_connection_across_passes(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    cid = add_contact(ws, "c1", email="a@example.com")
    add_message(ws, cid, key="a")
    port = free_port()
    inbox = Inbox()
    handler = _Peers(inbox)
    server = Controller(handler, hostname="127.0.0.1", port=port)
    server.start()
    ws = configure(ws, smtp_url=f"smtp://127.0.0.1:{port}", quiet_hours="", frequency_caps={})
    stop = threading.Event()
    passes: list[int] = []

    def on_pass(report: Any) -> None:
        passes.append(report.delivery.sent)
        if len(passes) == 1:
            add_message(ws, cid, key="b")
        else:
            stop.set()

    try:
        run_forever(ws, stop, interval=0, on_pass=on_pass, sink="channels")
    finally:
        server.stop()
    assert passes == [1, 1]
    assert len(inbox.messages) == 2 and len(set(handler.peers)) == 1


def test_a_batch_is_rendered_before_its_first_message_is_sent(workspace: Workspace) -> None:
    """Rendering while the SMTP threads send makes each SMTP reply wait for the rendering
    thread's GIL (about 0.2 ms of CPU per message, docs/delivery.md): the worker renders the
    claimed batch, then hands it to the channel, which sends it over its connections
    (``send_many``: each connection's thread takes the next message)."""
    from winback.delivery.channels import OutboundMessage
    from winback.delivery.channels.smtp import parse_smtp_url
    from winback.delivery.worker import Decision

    n = 5
    for i in range(n):
        add_message(workspace, add_contact(workspace, f"c{i}", email=f"c{i}@example.com"))
    rendered: list[int] = []
    rendered_at_submit: list[int] = []

    class Recording(SmtpChannel):
        def send_one(self, msg: OutboundMessage, durable: Any = None) -> Any:
            rendered_at_submit.append(len(rendered))
            return super().send_one(msg, durable)

    with smtp_server() as (url, inbox, _):
        workspace = configure(workspace, smtp_url=url, quiet_hours="", frequency_caps={})
        channel = Recording(parse_smtp_url(url), connections=2)
        worker = workspace.delivery.worker(channels={"email": channel})
        render = worker.render

        def counting(d: Decision, now: Any) -> bool:
            rendered.append(int(d.row["id"]))
            return render(d, now)

        worker.render = counting  # type: ignore[method-assign]
        try:
            report = worker.drain()
        finally:
            worker.close()
        assert len(inbox.messages) == n
    assert report.counts == {"sent": n}
    assert rendered_at_submit == [n] * n


def test_the_heap_is_settled_once_per_process() -> None:
    """``heap.settle`` freezes the objects alive (full GC passes skip them) on its first call
    in a process, and does nothing after (a fresh interpreter: the freeze is process-wide)."""
    import subprocess
    import sys

    code = (
        "import gc\n"
        "from winback.delivery.worker import heap\n"
        "assert gc.get_freeze_count() == 0\n"
        "assert heap.settle() is True\n"
        "frozen = gc.get_freeze_count()\n"
        "assert frozen > 1000, frozen\n"
        "assert heap.settle() is False and gc.get_freeze_count() == frozen\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_backlog_batch_settles_the_heap_and_a_small_one_does_not(
    sqlite_workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from winback.delivery.worker import heap

    settled: list[int] = []
    monkeypatch.setattr(heap, "BACKLOG_ROWS", 3)

    def settle() -> bool:
        settled.append(1)
        return True

    monkeypatch.setattr(heap, "settle", settle)
    ws = sqlite_workspace
    for i in range(2):
        add_message(ws, add_contact(ws, f"c{i}", email=f"c{i}@example.com"))
    with smtp_server() as (url, inbox, _):
        ws = configure(ws, smtp_url=url, quiet_hours="", frequency_caps={})
        assert ws.delivery.deliver_due().counts == {"sent": 2}
        assert settled == []
        for i in range(2, 5):
            add_message(ws, add_contact(ws, f"c{i}", email=f"c{i}@example.com"))
        assert ws.delivery.deliver_due().counts == {"sent": 3}
        assert settled == [1]
        assert len(inbox.messages) == 5
