"""Helpers for the delivery tests: a real SMTP server (aiosmtpd) in a thread, contacts and
outbox rows written straight into the store."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import insert, select

from winback.store.schema import contacts, outbox
from winback.workspace import Workspace


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Inbox:
    """Messages a test SMTP server received."""

    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    received: threading.Condition | None = None

    def __post_init__(self) -> None:
        self.received = threading.Condition(self.lock)

    def add(self, envelope: Envelope) -> None:
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        with self.lock:
            self.messages.append(msg)
            self.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
            assert self.received is not None
            self.received.notify_all()


class CollectingHandler:
    """Accepts everything; ``rcpt_codes`` maps an address to a reply for RCPT (e.g. 550);
    ``data_failures`` makes the first N DATA commands answer 451."""

    def __init__(
        self, inbox: Inbox, rcpt_codes: dict[str, str] | None = None, data_failures: int = 0
    ) -> None:
        self.inbox = inbox
        self.rcpt_codes = rcpt_codes or {}
        self.data_failures = data_failures
        self.data_attempts = 0

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.rcpt_codes:
            return self.rcpt_codes[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.data_attempts += 1
        if self.data_attempts <= self.data_failures:
            return "451 4.3.0 Try again later"
        self.inbox.add(envelope)
        return "250 Message accepted for delivery"


@contextmanager
def smtp_server(
    *, smtputf8: bool = False, **handler_options: Any
) -> Iterator[tuple[str, Inbox, CollectingHandler]]:
    """A real SMTP server on 127.0.0.1; yields (smtp_url, inbox, handler)."""
    inbox = Inbox()
    handler = CollectingHandler(inbox, **handler_options)
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, enable_SMTPUTF8=smtputf8)
    controller.start()
    try:
        yield f"smtp://127.0.0.1:{port}", inbox, handler
    finally:
        controller.stop()


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 (a free port) running ``handler``; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def reply_json(
    handler: BaseHTTPRequestHandler,
    status: int,
    answer: Any,
    headers: dict[str, str] | None = None,
) -> None:
    """Answer a request with ``answer`` as JSON (and any extra headers)."""
    payload = json.dumps(answer).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


def add_contact(ws: Workspace, customer_id: str, **values: Any) -> int:
    row = {
        "customer_id": customer_id,
        "attributes": {},
        "orders_count": 0,
        "revenue_total": 0,
        "email_consent": True,
        "created_at": ws.clock.now(),
        **values,
    }
    with ws.engine.begin() as conn:
        conn.execute(insert(contacts).values(**row))
        return int(
            conn.execute(
                select(contacts.c.id).where(contacts.c.customer_id == customer_id)
            ).scalar_one()
        )


def add_message(
    ws: Workspace,
    contact_id: int,
    template: str | None = "reactivation-1",
    *,
    key: str | None = None,
    channel: str = "email",
    priority: str = "marketing",
    not_before: datetime | None = None,
    payload: dict[str, Any] | None = None,
    flow: str = "reactivation",
    step: str = "email-1",
) -> int:
    now = ws.clock.now()
    with ws.engine.begin() as conn:
        result = conn.execute(
            insert(outbox).values(
                dedup_key=key or f"{flow}:{contact_id}:{step}:{template}:{now.isoformat()}",
                contact_id=contact_id,
                channel=channel,
                template=template,
                flow=flow,
                entry_id=contact_id,
                step=step,
                priority=priority,
                payload=payload or {},
                status="pending",
                not_before=not_before or now,
                attempts=0,
                created_at=now,
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])


def outbox_row(ws: Workspace, outbox_id: int) -> dict[str, Any]:
    with ws.engine.connect() as conn:
        return dict(conn.execute(select(outbox).where(outbox.c.id == outbox_id)).mappings().one())


def configure(ws: Workspace, **settings: Any) -> Workspace:
    """The workspace on the same store with these settings changed."""
    return ws.replace(settings=ws.settings.model_copy(update=settings))


def later(ws: Workspace, **delta: float) -> datetime:
    return ws.clock.now() + timedelta(**delta)
