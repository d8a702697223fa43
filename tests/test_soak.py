"""Soak: one ``winback serve`` process answers events, one-click unsubscribes, clicks and
feedback from concurrent clients while its engine thread works through a large first pass of
the reference flow and its delivery worker hands the emails to a real SMTP server. Nothing a
client was told is recorded may be lost or doubled, no answer may be a 5xx, every due email
goes out exactly once, and nobody is mailed after their unsubscribe was acknowledged."""

from __future__ import annotations

import os
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import and_, func, select

from tests.soak_support import (
    Clients,
    Ledger,
    Service,
    recording_smtp,
    seed_shop,
    stop,
    wait_until,
    winback_serve,
)
from tests.web_support import new_api_key
from winback.delivery.links.tokens import TokenSigner
from winback.store.schema import consent_log, contacts, events, outbox, suppressions
from winback.workspace import Workspace

#: Customers the reference flow mails in its first pass (the pass lasts several seconds).
DORMANT = int(os.environ.get("WINBACK_SOAK_CONTACTS", "10000"))
ACTIVE = 200
UNSUBSCRIBES = 120
#: Bounds: the clients stop after CLIENT_SECONDS at most (sooner when the first pass has
#: delivered); everything due must be delivered DRAIN_SECONDS after that.
CLIENT_SECONDS = 60.0
DRAIN_SECONDS = 60.0
INTERVAL = 0.5


def _healthz(clients: Clients, client: httpx.Client) -> dict[str, Any] | None:
    r = clients.call(client, "healthz", "GET", "/healthz")
    return r.json() if r is not None and r.status_code == 200 else None


def _after_a_pass(clients: Clients, client: httpx.Client) -> dict[str, Any] | None:
    """/healthz once the engine has recorded a successful pass (the first pass ends a little
    after its last email is accepted: it records the batch, then finds nothing more due)."""
    last: list[dict[str, Any] | None] = [None]

    def passed() -> bool:
        last[0] = _healthz(clients, client)
        engine = (last[0] or {}).get("engine") or {}
        return last[0] is None or bool(engine.get("passes"))

    wait_until(passed, 30, every=0.5)
    return last[0]


def _outstanding(ws: Workspace) -> int:
    """Reference-flow messages due and not yet handled (pending or being sent)."""
    with ws.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(outbox)
                .where(
                    and_(
                        outbox.c.flow == "reactivation",
                        outbox.c.status.in_(("pending", "sending")),
                        outbox.c.not_before <= datetime.now(UTC),
                    )
                )
            ).scalar_one()
        )


@pytest.mark.slow
def test_soak_one_process_serves_runs_the_flow_and_delivers(
    workspace: Workspace, tmp_path: Path
) -> None:
    ws = workspace
    postgres = ws.engine.dialect.name == "postgresql"
    now = datetime.now(UTC)
    shop = seed_shop(ws, dormant=DORMANT, active=ACTIVE, linked_dormant=UNSUBSCRIBES, now=now)
    ws.flows.add("reactivation", now=now - timedelta(minutes=1))
    key = new_api_key(ws, "soak")
    signer = TokenSigner(ws.settings.secret_key)
    to_unsubscribe = {cid: shop.earlier[cid] for cid in shop.dormant if cid in shop.earlier}
    customers = [f"a{i}" for i in range(ACTIVE)]
    ledger = Ledger()

    with recording_smtp() as (smtp_url, mailbox):
        with (ws.path / "winback.toml").open("a", encoding="utf-8") as toml:
            toml.write(
                f'\nsmtp_url = "{smtp_url}"\nmail_from = "hello@shop.example"\nquiet_hours = ""\n'
            )
        with winback_serve(
            ws.path,
            database_url=ws.database_url if postgres else None,
            interval=INTERVAL,
            log=tmp_path / "serve.log",
        ) as service:
            started = time.monotonic()
            clients = Clients(service.base, ledger, seconds=CLIENT_SECONDS)
            clients.events("events-1", key, customers, limit=4000)
            clients.events("events-2", key, customers, limit=4000)
            clients.unsubscribes(signer, to_unsubscribe, pause=0.12)
            clients.clicks_and_feedback(
                signer, {cid: shop.earlier[cid] for cid in shop.active}, limit=4000
            )
            first_pass = len(shop.dormant) - len(to_unsubscribe)
            with httpx.Client(base_url=service.base, timeout=30.0) as probe:
                # While the first pass runs: /healthz answers, and the clients write.
                wait_until(
                    lambda: (
                        _healthz(clients, probe) is None
                        or mailbox.count() >= first_pass
                        or not clients.running()
                    ),
                    CLIENT_SECONDS + 5,
                    every=0.5,
                )
                clients.join()
                expected = {a for c, a in shop.dormant.items() if c not in ledger.unsubscribe_tried}
                drained = wait_until(
                    lambda: (
                        expected <= {r for r, _ in mailbox.snapshot()} and _outstanding(ws) == 0
                    ),
                    DRAIN_SECONDS,
                    every=0.5,
                )
                health = _after_a_pass(clients, probe)
            exit_code = stop(service)
        received = mailbox.snapshot()

    log = service.log.read_text(encoding="utf-8", errors="replace")
    report = _report(ledger, received, service, exit_code, started)
    print(report)  # shown with -s, and on failure

    problems: list[str] = []
    failures = ledger.failures()
    if failures:  # 5xx, or no answer at all (connection reset, timeout)
        problems.append(f"{len(failures)} requests failed, e.g. {failures[:3]}")
    unexpected = ledger.unexpected()
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected answers, e.g. {unexpected[:3]}")
    # SIGTERM: the current slice finishes, the app shuts down, the process exits 0.
    if exit_code != 0 or "Application shutdown complete" not in log:
        problems.append(f"no clean stop on SIGTERM: exit code {exit_code}")
    if not drained:
        problems.append(f"due mail not all delivered {DRAIN_SECONDS:.0f}s after the clients")
    if not (ledger.events and ledger.unsubscribed and ledger.clicks and ledger.feedback):
        problems.append("a kind of write was never acknowledged")
    problems += _events_stored_once(ws, ledger)
    problems += _unsubscribes_stored_once(ws, ledger, shop.dormant)
    problems += _clicks_and_feedback_stored_once(ws, ledger)
    problems += _mail(ws, ledger, received, shop.dormant, expected)
    with ws.engine.connect() as conn:
        sending = conn.execute(
            select(func.count()).select_from(outbox).where(outbox.c.status == "sending")
        ).scalar_one()
    if sending:
        problems.append(f"{sending} messages left in sending")
    problems += _engine_health(health)
    assert not problems, "\n".join(problems) + "\n" + report


def _engine_health(health: dict[str, Any] | None) -> list[str]:
    """/healthz at the end: the engine runs, has passed at least once, never failed."""
    if health is None:
        return ["/healthz did not answer 200 at the end"]
    engine = health.get("engine")
    if not isinstance(engine, dict):
        return [f"/healthz says nothing of the engine: {health}"]
    if (
        engine.get("state") != "running"
        or not engine.get("passes")
        or engine.get("last_success_at") is None
        or engine.get("failures") != 0
    ):
        return [f"/healthz engine: {engine}"]
    return []


def _report(
    ledger: Ledger,
    received: list[tuple[str, float]],
    service: Service,
    code: Any,
    started: float,
) -> str:
    per = Counter(r for r, _ in received)
    times = sorted(at - started for _, at in received) or [0.0]
    return (
        f"answers: {ledger.summary()}\n"
        f"acknowledged: {len(ledger.events)} events, {len(ledger.unsubscribed)} unsubscribes, "
        f"{len(ledger.clicks)} clicks, {len(ledger.feedback)} feedback posts\n"
        f"smtp: {len(received)} received, {len(per)} addresses, "
        f"{sum(1 for n in per.values() if n > 1)} twice or more, first after {times[0]:.1f}s, "
        f"last after {times[-1]:.1f}s\n"
        f"serve exit code after SIGTERM: {code}\n"
        f"serve log, errors:\n{service.log_digest()}\n"
        f"serve log (tail):\n{service.log_tail(15)}"
    )


def _events_stored_once(ws: Workspace, ledger: Ledger) -> list[str]:
    wanted = {f"api:{e}" for e in ledger.events}
    with ws.engine.connect() as conn:
        stored = Counter(
            str(k)
            for (k,) in conn.execute(
                select(events.c.event_key).where(events.c.event_key.like("api:soak-%"))
            )
        )
    lost = wanted - set(stored)
    doubled = {k for k, n in stored.items() if n > 1}
    problems = []
    if lost:
        problems.append(f"{len(lost)} acknowledged events not stored, e.g. {sorted(lost)[:3]}")
    if doubled:
        problems.append(f"{len(doubled)} events stored twice, e.g. {sorted(doubled)[:3]}")
    return problems


def _unsubscribes_stored_once(ws: Workspace, ledger: Ledger, dormant: dict[int, str]) -> list[str]:
    acked = set(ledger.unsubscribed)
    with ws.engine.connect() as conn:
        consent = dict(
            conn.execute(
                select(contacts.c.id, contacts.c.email_consent).where(contacts.c.id.in_(acked))
            ).all()
        )
        logged = Counter(
            int(c)
            for (c,) in conn.execute(
                select(consent_log.c.contact_id).where(
                    and_(
                        consent_log.c.contact_id.in_(acked),
                        consent_log.c.channel == "email",
                        consent_log.c.granted.is_(False),
                    )
                )
            )
        )
        suppressed = Counter(
            str(a)
            for (a,) in conn.execute(
                select(suppressions.c.address).where(suppressions.c.channel == "email")
            )
        )
        recorded = Counter(
            int(c)
            for (c,) in conn.execute(
                select(events.c.contact_id).where(events.c.type == "email_unsubscribed")
            )
        )
    checks = {
        "kept consent": [c for c in acked if consent.get(c) is not False],
        "not one consent revocation logged": [c for c in acked if logged[c] != 1],
        "address not suppressed once": [c for c in acked if suppressed[dormant[c]] != 1],
        "not one email_unsubscribed event": [c for c in acked if recorded[c] != 1],
    }
    return [
        f"{len(ids)} acknowledged unsubscribes: {what}, e.g. contacts {sorted(ids)[:3]}"
        for what, ids in checks.items()
        if ids
    ]


def _clicks_and_feedback_stored_once(ws: Workspace, ledger: Ledger) -> list[str]:
    with ws.engine.connect() as conn:
        rows = conn.execute(
            select(events.c.event_key, events.c.properties).where(
                events.c.type.in_(("email_clicked", "feedback_submitted"))
            )
        ).all()
    clicks: Counter[tuple[int, str]] = Counter()
    comments: Counter[str] = Counter()
    for event_key, properties in rows:
        parts = str(event_key).split(":")
        if parts[0] == "click" and parts[2] != "feedback":
            clicks[(int(parts[1]), parts[-1])] += 1
        elif parts[0] == "feedback":
            comments[str((properties or {}).get("comment"))] += 1
    problems = []
    lost = [c for c in ledger.clicks if clicks[c] != 1]
    if lost:
        problems.append(f"{len(lost)} acknowledged clicks not stored once, e.g. {lost[:3]}")
    lost_feedback = [c for c in ledger.feedback if comments[c] != 1]
    if lost_feedback:
        problems.append(f"{len(lost_feedback)} acknowledged feedback posts not stored once")
    return problems


def _mail(
    ws: Workspace,
    ledger: Ledger,
    received: list[tuple[str, float]],
    dormant: dict[int, str],
    expected: set[str],
) -> list[str]:
    per = Counter(r for r, _ in received)
    # An unsubscribed contact may still get the email that was already being sent (claimed
    # before the unsubscribe was acknowledged), never one claimed after.
    arrival = {r: at for r, at in received}
    with ws.engine.connect() as conn:
        claimed = {
            int(c): at
            for c, at in conn.execute(
                select(outbox.c.contact_id, outbox.c.claimed_at).where(
                    outbox.c.flow == "reactivation"
                )
            )
        }
    checks = {
        "addresses mailed more than once": sorted(a for a, n in per.items() if n > 1),
        "due contacts never mailed": sorted(expected - set(per)),
        "addresses mailed that are not in the flow": sorted(set(per) - set(dormant.values())),
        "contacts mailed after their unsubscribe was acknowledged": sorted(
            dormant[cid]
            for cid, (acked_at, acked_wall) in ledger.unsubscribed.items()
            if dormant[cid] in arrival
            and arrival[dormant[cid]] > acked_at
            and (claimed.get(cid) is None or claimed[cid] > acked_wall)
        ),
    }
    return [f"{len(found)} {what}, e.g. {found[:3]}" for what, found in checks.items() if found]
