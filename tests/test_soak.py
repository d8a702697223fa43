"""Soak: one ``winback serve`` process answers events, one-click unsubscribes, clicks and
feedback from concurrent clients while its engine thread works through a large first pass of
the reference flow and its delivery worker hands the emails to a real SMTP server. Nothing a
client was told is recorded may be lost or doubled, no answer may be a 5xx, every due email
goes out exactly once, and nobody is mailed after their unsubscribe was acknowledged."""

from __future__ import annotations

import os
from collections import Counter
from datetime import UTC, datetime, timedelta
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
from winback.delivery.tokens import TokenSigner
from winback.store.schema import consent_log, contacts, events, outbox, suppressions
from winback.workspace import Workspace

#: Customers the reference flow mails in its first pass (the pass lasts several seconds).
DORMANT = int(os.environ.get("WINBACK_SOAK_CONTACTS", "12000"))
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
    workspace: Workspace, tmp_path: Any
) -> None:
    ws = workspace
    postgres = ws.engine.dialect.name == "postgresql"
    now = datetime.now(UTC)
    shop = seed_shop(ws, dormant=DORMANT, active=ACTIVE, linked_dormant=UNSUBSCRIBES, now=now)
    ws.flows.add("reactivation", now=now - timedelta(minutes=1))
    key = ws.delivery.create_api_key("soak")
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
            clients = Clients(service.base, ledger, seconds=CLIENT_SECONDS)
            clients.events("events-1", key, customers, limit=4000)
            clients.events("events-2", key, customers, limit=4000)
            clients.unsubscribes(signer, to_unsubscribe, pause=0.02)
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
                health = _healthz(clients, probe)
            exit_code = stop(service)
        received = mailbox.snapshot()

    report = _report(ledger, received, service, exit_code)
    print(report)  # shown with -s, and on failure

    # No 5xx, no connection dropped: every request got a proper answer.
    failures = ledger.failures()
    assert not failures, f"{len(failures)} failed requests, e.g. {failures[:5]}\n{report}"
    assert exit_code == 0, f"SIGTERM: exit code {exit_code}\n{service.log_tail()}"
    assert drained, f"due mail not all delivered in {DRAIN_SECONDS}s\n{report}"
    assert ledger.events and ledger.unsubscribed and ledger.clicks and ledger.feedback, report

    _assert_events_stored_once(ws, ledger)
    _assert_unsubscribes_stored_once(ws, ledger, shop.dormant)
    _assert_clicks_and_feedback_stored_once(ws, ledger)
    _assert_mail(ws, ledger, received, shop.dormant, shop.active, expected)

    # Nothing stuck in `sending`, and the engine says it is well.
    with ws.engine.connect() as conn:
        sending = conn.execute(
            select(func.count()).select_from(outbox).where(outbox.c.status == "sending")
        ).scalar_one()
    assert sending == 0
    assert health is not None, "/healthz did not answer 200 at the end"
    engine = health["engine"]
    assert engine["state"] == "running", engine
    assert engine["passes"] >= 1 and engine["last_success_at"] is not None, engine
    assert engine["failures"] == 0, engine


def _report(ledger: Ledger, received: list[tuple[str, float]], service: Service, code: Any) -> str:
    per = Counter(r for r, _ in received)
    return (
        f"answers: {ledger.summary()}\n"
        f"acknowledged: {len(ledger.events)} events, {len(ledger.unsubscribed)} unsubscribes, "
        f"{len(ledger.clicks)} clicks, {len(ledger.feedback)} feedback posts\n"
        f"smtp: {len(received)} received, {len(per)} addresses, "
        f"{sum(1 for n in per.values() if n > 1)} twice or more\n"
        f"serve exit code after SIGTERM: {code}\n"
        f"serve log (tail):\n{service.log_tail(30)}"
    )


def _assert_events_stored_once(ws: Workspace, ledger: Ledger) -> None:
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
    assert not lost, f"{len(lost)} acknowledged events not stored, e.g. {sorted(lost)[:5]}"
    assert not doubled, f"{len(doubled)} events stored twice, e.g. {sorted(doubled)[:5]}"


def _assert_unsubscribes_stored_once(
    ws: Workspace, ledger: Ledger, dormant: dict[int, str]
) -> None:
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
    still = sorted(c for c in acked if consent.get(c) is not False)
    assert not still, f"{len(still)} acknowledged unsubscribes kept consent: {still[:5]}"
    not_once = sorted(c for c in acked if logged[c] != 1)
    assert not not_once, (
        f"consent log not one revocation each: {[(c, logged[c]) for c in not_once[:5]]}"
    )
    unsuppressed = sorted(c for c in acked if suppressed[dormant[c]] != 1)
    assert not unsuppressed, f"{len(unsuppressed)} unsubscribed addresses not suppressed once"
    events_not_once = sorted(c for c in acked if recorded[c] != 1)
    assert not events_not_once, f"email_unsubscribed not once each: {events_not_once[:5]}"


def _assert_clicks_and_feedback_stored_once(ws: Workspace, ledger: Ledger) -> None:
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
    lost = [c for c in ledger.clicks if clicks[c] != 1]
    assert not lost, f"{len(lost)} acknowledged clicks not stored once, e.g. {lost[:5]}"
    lost_feedback = [c for c in ledger.feedback if comments[c] != 1]
    assert not lost_feedback, f"{len(lost_feedback)} feedback posts not stored once"


def _assert_mail(
    ws: Workspace,
    ledger: Ledger,
    received: list[tuple[str, float]],
    dormant: dict[int, str],
    active: dict[int, str],
    expected: set[str],
) -> None:
    per = Counter(r for r, _ in received)
    twice = sorted(a for a, n in per.items() if n > 1)
    assert not twice, f"{len(twice)} addresses mailed more than once, e.g. {twice[:5]}"
    missing = sorted(expected - set(per))
    assert not missing, f"{len(missing)} due contacts never mailed, e.g. {missing[:5]}"
    strangers = sorted(set(per) - set(dormant.values()))
    assert not strangers, f"mail to contacts not in the flow: {strangers[:5]}"
    assert not set(per) & set(active.values())
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
    late = [
        (cid, dormant[cid])
        for cid, (acked_at, acked_wall) in ledger.unsubscribed.items()
        if dormant[cid] in arrival
        and arrival[dormant[cid]] > acked_at
        and (claimed.get(cid) is None or claimed[cid] > acked_wall)
    ]
    assert not late, (
        f"{len(late)} contacts mailed after their unsubscribe was acknowledged: {late[:5]}"
    )
