"""The soak test's parts: a shop seeded in bulk, ``winback serve`` as a real subprocess, an SMTP
server that records who received what and when, and client threads that write through the
HTTP service while the engine works, keeping a ledger of every answer."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import insert, select

from tests.delivery_support import free_port
from winback.delivery.links.tokens import TokenSigner
from winback.store.schema import contacts, orders, outbox
from winback.workspace import Workspace

DAY = timedelta(days=1)
#: A browser's user agent: clicks from it are a person's (not a link scanner's).
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0 soak/{n}"


# -- the shop ------------------------------------------------------------------------------------
@dataclass
class Shop:
    """Who is who in the seeded workspace."""

    dormant: dict[int, str]  # contact id -> address: customers the reference flow mails
    active: dict[int, str]  # recent customers: not in the flow (events, clicks, feedback)
    earlier: dict[int, int]  # contact id -> an earlier message's outbox id (for link tokens)

    @property
    def addresses(self) -> dict[str, int]:
        return {a: c for c, a in (self.dormant | self.active).items()}


def seed_shop(
    ws: Workspace, *, dormant: int, active: int, linked_dormant: int, now: datetime
) -> Shop:
    """``dormant`` customers with email consent whose last purchase was 200 days ago (members
    of "Customers Not Active" at the first segment refresh), ``active`` customers who bought 10
    days ago, and an earlier message (sent a month ago) to every active customer and to
    ``linked_dormant`` dormant ones, spread over the dormant ids, so that their links exist."""
    long_ago, recently = now - 200 * DAY, now - 10 * DAY
    rows = [
        {
            "customer_id": f"{kind}{i}",
            "email": f"{kind}{i}@example.com",
            "first_name": "Ada",
            "attributes": {},
            "orders_count": 1,
            "revenue_total": 40,
            "first_purchase_at": at,
            "last_purchase_at": at,
            "email_consent": True,
            "created_at": now - 400 * DAY,
            "updated_at": now - 400 * DAY,
        }
        for kind, n, at in (("d", dormant, long_ago), ("a", active, recently))
        for i in range(n)
    ]
    with ws.engine.begin() as conn:
        conn.execute(insert(contacts), rows)
        found = conn.execute(select(contacts.c.id, contacts.c.customer_id, contacts.c.email))
        people = {str(r.customer_id): (int(r.id), str(r.email)) for r in found}
        conn.execute(
            insert(orders),
            [
                {
                    "order_id": f"o-{customer}",
                    "contact_id": cid,
                    "ordered_at": long_ago if customer.startswith("d") else recently,
                    "amount": 40,
                    "currency": "USD",
                }
                for customer, (cid, _) in people.items()
            ],
        )
    shop = Shop(
        dormant={cid: a for c, (cid, a) in people.items() if c.startswith("d")},
        active={cid: a for c, (cid, a) in people.items() if c.startswith("a")},
        earlier={},
    )
    step = max(1, dormant // max(1, linked_dormant))
    linked = sorted(shop.dormant)[::step][:linked_dormant] + sorted(shop.active)
    sent = now - 30 * DAY
    with ws.engine.begin() as conn:
        conn.execute(
            insert(outbox),
            [
                {
                    "dedup_key": f"earlier:{cid}",
                    "contact_id": cid,
                    "channel": "email",
                    "template": "feedback-request",
                    "flow": "earlier",
                    "step": "email-1",
                    "priority": "marketing",
                    "payload": {},
                    "status": "sent",
                    "not_before": sent,
                    "attempts": 1,
                    "message_id": f"<earlier-{cid}@shop.example>",
                    "created_at": sent,
                    "claimed_at": sent,
                    "sent_at": sent,
                }
                for cid in linked
            ],
        )
        shop.earlier = {
            int(r.contact_id): int(r.id)
            for r in conn.execute(
                select(outbox.c.id, outbox.c.contact_id).where(outbox.c.flow == "earlier")
            )
        }
    return shop


# -- SMTP ----------------------------------------------------------------------------------------
class Mailbox:
    """An SMTP handler that accepts everything and records (recipient, monotonic time)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[tuple[str, float]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        at = time.monotonic()
        with self.lock:
            self.received.extend((str(r).lower(), at) for r in envelope.rcpt_tos)
        return "250 Message accepted for delivery"

    def count(self) -> int:
        with self.lock:
            return len(self.received)

    def snapshot(self) -> list[tuple[str, float]]:
        with self.lock:
            return list(self.received)


@contextmanager
def recording_smtp() -> Iterator[tuple[str, Mailbox]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield f"smtp://127.0.0.1:{port}", mailbox
    finally:
        controller.stop()


# -- the service ---------------------------------------------------------------------------------
@dataclass
class Service:
    process: subprocess.Popen[bytes]
    base: str
    log: Path

    def log_tail(self, lines: int = 60) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def log_digest(self) -> str:
        """The errors in the service's log: threads that died, and each failing statement
        with its exception and how often it failed."""
        lines = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        seen: Counter[str] = Counter()
        for i, line in enumerate(lines):
            if line.startswith("Exception in thread"):
                seen[line] += 1
            if line.startswith("[SQL: "):
                error = lines[i - 1] if i else ""
                seen[f"{error[:90]} <- {line[:90]}"] += 1
        return "\n".join(f"{n} x {what}" for what, n in seen.most_common(12)) or "(no errors)"


@contextmanager
def winback_serve(
    folder: Path, *, database_url: str | None, interval: float, log: Path
) -> Iterator[Service]:
    """``winback serve`` (engine and delivery in its background threads) as a subprocess on a
    free port; stopped with SIGTERM at the end if the test has not stopped it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WINBACK_")}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.environ.get("PYTHONPATH", ""), *sys.path) if p
    )
    if database_url:
        env["WINBACK_DATABASE_URL"] = database_url
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "winback.cli",
        "serve",
        "-w",
        str(folder),
        "--port",
        str(port),
        "--interval",
        str(interval),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    service = Service(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise AssertionError(
                    f"winback serve exited with {process.returncode}:\n{service.log_tail()}"
                )
            try:
                httpx.get(f"{service.base}/healthz", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"winback serve did not answer:\n{service.log_tail()}"
                    ) from None
                time.sleep(0.05)
        yield service
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def stop(service: Service, timeout: float = 30.0) -> int | None:
    """SIGTERM, then the exit code (None if it did not exit within ``timeout``: killed)."""
    service.process.send_signal(signal.SIGTERM)
    try:
        return service.process.wait(timeout)
    except subprocess.TimeoutExpired:
        service.process.kill()
        service.process.wait(10)
        return None


# -- the clients ---------------------------------------------------------------------------------
#: The normal answer of each kind of request.
ANSWERED: dict[str, Callable[[int], bool]] = {
    "event": lambda s: 200 <= s < 300,
    "events": lambda s: 200 <= s < 300,
    "unsubscribe": lambda s: s == 200,
    "click": lambda s: s == 302,
    "feedback": lambda s: s == 200,
    "healthz": lambda s: s == 200,
}


@dataclass
class Answer:
    kind: str
    status: int  # 0: no HTTP answer (connection reset, timeout)
    detail: str
    seconds: float


@dataclass
class Ledger:
    """Every answer the clients got, and what the service acknowledged."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    answers: list[Answer] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # event_id acknowledged (200)
    unsubscribed: dict[int, tuple[float, datetime]] = field(default_factory=dict)
    unsubscribe_tried: set[int] = field(default_factory=set)  # acknowledged or not
    clicks: list[tuple[int, str]] = field(default_factory=list)  # (outbox id, agent hash)
    feedback: list[str] = field(default_factory=list)  # comments acknowledged

    def note(self, answer: Answer) -> None:
        with self.lock:
            self.answers.append(answer)

    def failures(self) -> list[Answer]:
        """5xx, and no answer at all (connection reset, timeout)."""
        with self.lock:
            return [a for a in self.answers if a.status >= 500 or a.status == 0]

    def unexpected(self) -> list[Answer]:
        """Other answers than the normal one of their kind (a 4xx: a mistake of the test or
        of the service)."""
        with self.lock:
            return [
                a for a in self.answers if 0 < a.status < 500 and not ANSWERED[a.kind](a.status)
            ]

    def summary(self) -> str:
        """Answers by kind and status, and each kind's latency (p50 / p99 / slowest)."""
        with self.lock:
            by = Counter((a.kind, a.status) for a in self.answers)
            seconds: dict[str, list[float]] = {}
            for a in self.answers:
                seconds.setdefault(a.kind, []).append(a.seconds)
        parts = [f"{k} {s}: {n}" for (k, s), n in sorted(by.items())]
        latency = []
        for kind, values in sorted(seconds.items()):
            values.sort()
            p50, p99 = (
                values[len(values) // 2],
                values[min(len(values) - 1, len(values) * 99 // 100)],
            )
            latency.append(f"{kind} {p50 * 1000:.0f}/{p99 * 1000:.0f}/{values[-1] * 1000:.0f}")
        return "; ".join(parts) + " | ms p50/p99/max: " + ", ".join(latency)


def agent_hash(agent: str) -> str:
    """The user agent's short hash, as the click's event key carries it."""
    return hashlib.sha256(agent.encode()).hexdigest()[:8]


class Clients:
    """Client threads (one keep-alive connection each), bounded in requests and time."""

    def __init__(self, base: str, ledger: Ledger, *, seconds: float) -> None:
        self.base = base
        self.ledger = ledger
        self.deadline = time.monotonic() + seconds
        self.done = threading.Event()
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def running(self) -> bool:
        return not self.done.is_set() and time.monotonic() < self.deadline

    def start(self, name: str, body: Callable[[httpx.Client], None]) -> None:
        def run() -> None:
            try:
                with httpx.Client(base_url=self.base, timeout=30.0) as client:
                    body(client)
            except BaseException as exc:  # reported by join(): a bug of the test itself
                self.errors.append(exc)

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(60)
        assert not [t.name for t in self.threads if t.is_alive()], "client threads hung"
        assert not self.errors, self.errors

    def call(
        self, client: httpx.Client, kind: str, method: str, url: str, **options: Any
    ) -> httpx.Response | None:
        started = time.monotonic()
        try:
            response = client.request(method, url, **options)
        except httpx.TransportError as exc:
            self.ledger.note(Answer(kind, 0, repr(exc), time.monotonic() - started))
            return None
        seconds = time.monotonic() - started
        detail = response.text[:300] if response.status_code >= 400 else ""
        if response.status_code >= 500:
            detail += f" request-id={response.headers.get('x-request-id')}"
        self.ledger.note(Answer(kind, response.status_code, detail, seconds))
        return response

    # -- what each client does -------------------------------------------------------------------
    def events(self, name: str, key: str, customers: list[str], limit: int) -> None:
        """Single events and batches of 25, in turn; every tenth request sends again events
        already acknowledged (they must be stored once)."""
        headers = {"Authorization": f"Bearer {key}"}
        rng = random.Random(name)

        def event(n: int) -> dict[str, Any]:
            return {
                "customer_id": rng.choice(customers),
                "type": "soak_ping",
                "event_id": f"soak-{name}-{n}",
                "properties": {"n": n},
            }

        def body(client: httpx.Client) -> None:
            n = 0
            acked: list[dict[str, Any]] = []
            for request in range(limit):
                if not self.running():
                    return
                if request % 10 == 9 and acked:
                    batch = rng.sample(acked, min(5, len(acked)))
                elif request % 2:
                    batch = [event(n + i) for i in range(25)]
                else:
                    batch = [event(n)]
                n += len(batch)
                single = len(batch) == 1
                r = self.call(
                    client,
                    "event" if single else "events",
                    "POST",
                    "/api/v1/events" if single else "/api/v1/events/batch",
                    json=batch[0] if single else {"events": batch},
                    headers=headers,
                )
                if r is not None and ANSWERED["events"](r.status_code):
                    acked.extend(batch)
                    with self.ledger.lock:
                        self.ledger.events.extend(e["event_id"] for e in batch)
                time.sleep(0.005)

        self.start(name, body)

    def unsubscribes(self, signer: TokenSigner, messages: dict[int, int], pause: float) -> None:
        """One-click unsubscribes (RFC 8058) of contacts in the flow, in random order, each
        sent twice (a provider may repeat it): the second changes nothing."""
        order = sorted(messages)
        random.Random(7).shuffle(order)

        def body(client: httpx.Client) -> None:
            for cid in order:
                if not self.running():
                    return
                token = signer.sign("u", messages[cid], cid)
                with self.ledger.lock:
                    self.ledger.unsubscribe_tried.add(cid)
                for _ in range(2):
                    r = self.call(
                        client,
                        "unsubscribe",
                        "POST",
                        f"/u/{token}",
                        data={"List-Unsubscribe": "One-Click"},
                    )
                    if r is not None and r.status_code == 200:
                        with self.ledger.lock:
                            self.ledger.unsubscribed.setdefault(
                                cid, (time.monotonic(), datetime.now(UTC))
                            )
                time.sleep(pause)

        self.start("unsubscribes", body)

    def clicks_and_feedback(
        self, signer: TokenSigner, messages: dict[int, int], limit: int
    ) -> None:
        """Clicks (a person's browser, one user agent each) and feedback posts on earlier
        messages of active customers."""
        order = sorted(messages)

        def body(client: httpx.Client) -> None:
            for n in range(limit):
                if not self.running():
                    return
                cid = order[n % len(order)]
                oid = messages[cid]
                if n % 3 == 2:
                    comment = f"soak feedback {n}"
                    r = self.call(
                        client,
                        "feedback",
                        "POST",
                        f"/f/{signer.sign('f', oid, cid)}",
                        data={"score": str(n % 11), "comment": comment},
                    )
                    if r is not None and r.status_code == 200:
                        with self.ledger.lock:
                            self.ledger.feedback.append(comment)
                else:
                    agent = BROWSER.format(n=n)
                    token = signer.sign("c", oid, cid, index=n % 4, url="https://example.com/")
                    r = self.call(
                        client, "click", "GET", f"/c/{token}", headers={"User-Agent": agent}
                    )
                    if r is not None and r.status_code == 302:
                        with self.ledger.lock:
                            self.ledger.clicks.append((oid, agent_hash(agent)))
                time.sleep(0.005)

        self.start("clicks", body)


def wait_until(condition: Callable[[], bool], seconds: float, every: float = 0.2) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return condition()
