"""The delivery worker: claims due outbox rows, applies the send-time policies, renders,
sends through the channels and records each outcome.

Exactly-once to the wire (see docs/delivery.md for the full argument):

1. *Claim* in a short transaction: ``pending`` rows that are due become ``sending`` with
   ``claimed_at`` (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several workers never claim
   the same row; SQLite serialises writers).
2. *Send* outside any transaction, one message per connection at a time. Each message the
   provider accepts is *recorded as accepted* (``sent_at``, a tiny transaction) before that
   connection can have another message accepted (:mod:`winback.delivery.worker.record`).
3. *Record* the batch's outcomes (``sent`` with ``message_id`` and the ``email_sent`` event,
   a retry time, a bounce...) in short transactions at its end.

A worker killed between 1 and 3 leaves rows in ``sending``. They are never picked up as if
nothing happened: after ``delivery_lease_seconds`` they are *reconciled*: those recorded as
accepted become ``sent``; the others (not sent, except at most one per connection that was
on the wire) as the ``delivery_stale_policy`` says: ``resend`` (default; at-least-once, the
copy carries the same deterministic Message-ID and the same Idempotency-Key, so a relay or
mailbox that dedups drops it) or ``fail`` (at-most-once: marked failed with "outcome
unknown"). A worker that fails without dying (an error after the claim) or is stopped puts
the rows it did not send back to ``pending`` at once.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, literal_column, select, union_all, update

from winback.delivery.channels import Channel, Durable, OutboundMessage, SendResult, result_of
from winback.delivery.copies import CopyGuard
from winback.delivery.coupons import CouponPoolExhausted, assign
from winback.delivery.links.tokens import TokenSigner
from winback.delivery.messages.context import ContactData, load_contacts, render_context
from winback.delivery.messages.mime import build_email, domain_of, message_id_for, rewrite_links
from winback.delivery.messages.templates import Rendered, TemplateRepository
from winback.delivery.unsubscribes import apply_pending_unsubscribes
from winback.delivery.worker.policies import (
    normalise_address,
    parse_caps,
    parse_quiet_hours,
    recent_sends,
    suppressed_addresses,
    zone_of,
)
from winback.delivery.worker.record import OutcomeRecorder, Settled
from winback.errors import WinbackError
from winback.store.schema import outbox

if TYPE_CHECKING:
    from winback.workspace import Workspace

_FIELDS = (
    outbox.c.id,
    outbox.c.dedup_key,
    outbox.c.contact_id,
    outbox.c.channel,
    outbox.c.template,
    outbox.c.variant,
    outbox.c.flow,
    outbox.c.entry_id,
    outbox.c.step,
    outbox.c.priority,
    outbox.c.payload,
    outbox.c.attempts,
    outbox.c.not_before,
)
CONSENT_CHANNELS = ("email", "sms", "push")


@dataclass
class Decision:
    """What the worker decided for one claimed row."""

    row: dict[str, Any]
    status: str = "sending"  # sending | deferred | skipped | suppressed | failed
    not_before: datetime | None = None
    reason: str = ""
    outgoing: OutboundMessage | None = None
    data: ContactData | None = None
    coupon: str | None = None
    sent_at: datetime | None = None  # when the provider accepted it, as recorded


@dataclass
class BatchReport:
    claimed: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    #: Why messages were not sent, by the worker's reason ("quiet hours in Europe/Rome",
    #: "no email consent"...); results of sending are counted in ``counts`` only.
    reasons: Counter[str] = field(default_factory=Counter)
    processes: int = 1  # worker processes that delivered (see delivery_processes)

    def __iadd__(self, other: BatchReport) -> BatchReport:
        self.claimed += other.claimed
        self.counts.update(other.counts)
        self.reasons.update(other.reasons)
        return self


@dataclass
class _Batch:
    """One claimed batch, as far as it got: what was decided without sending, and what the
    channels said of what was sent."""

    rows: Sequence[dict[str, Any]]
    held: list[Decision] = field(default_factory=list)
    sent: dict[int, tuple[Decision, SendResult]] = field(default_factory=dict)

    def settled(self) -> list[Settled]:
        return [(d, None) for d in self.held] + list(self.sent.values())

    def unsent(self) -> list[int]:
        """Claimed rows neither decided without sending nor sent: safe to hand back."""
        done = {int(d.row["id"]) for d in self.held} | set(self.sent)
        return [oid for r in self.rows if (oid := int(r["id"])) not in done]


class _Halted(Exception):
    """Another channel of the batch failed: this one stops too."""


class DeliveryWorker:
    """Delivers due outbox rows through ``channels`` (built from the settings when omitted)."""

    def __init__(
        self,
        workspace: Workspace,
        *,
        channels: Mapping[str, Channel] | None = None,
    ) -> None:
        from winback.delivery.channels.setup import build_channels

        self.ws = workspace
        self.settings = workspace.settings
        self.templates = TemplateRepository(workspace.path / "templates")
        self.signer = TokenSigner(self.settings.secret_key)
        self.channels: dict[str, Channel] = (
            dict(channels)
            if channels is not None
            else build_channels(self.settings, outbox=workspace.path / "outbox")
        )
        self.caps = parse_caps(self.settings.frequency_caps)
        self.quiet = parse_quiet_hours(self.settings.quiet_hours)
        self.base = self.settings.base_url.rstrip("/")
        self.domain = domain_of(self.settings.mail_from)
        self.recorder = OutcomeRecorder(workspace.engine, self.settings, workspace.clock)

    # -- the loop ------------------------------------------------------------------------------
    def run(self, stop: threading.Event, *, idle_seconds: float = 1.0) -> None:
        """Deliver until ``stop`` is set, sleeping ``idle_seconds`` when nothing is due."""
        while not stop.is_set():
            report = self.run_once(stop)
            if report.claimed == 0:
                stop.wait(idle_seconds)

    def drain(
        self, *, max_batches: int | None = None, stop: threading.Event | None = None
    ) -> BatchReport:
        """Deliver everything due now (in batches) or until ``stop`` is set; returns the
        totals."""
        total = BatchReport()
        n = 0
        while max_batches is None or n < max_batches:
            if stop is not None and stop.is_set():
                break
            report = self.run_once(stop)
            total += report
            n += 1
            if report.claimed == 0:
                break
        return total

    def close(self) -> None:
        for channel in self.channels.values():
            close = getattr(channel, "close", None)
            if close is not None:
                close()

    def run_once(self, stop: threading.Event | None = None) -> BatchReport:
        """Claim one batch and deliver it. Each message the provider accepts is recorded as
        such before its connection sends another; the batch's outcomes are written at its
        end. When anything fails after the claim, the outcomes known are written, the rows
        not sent go back to ``pending`` at once (the error in ``last_error``) and the error
        is raised; when ``stop`` is set, the messages not yet on the wire go back to
        ``pending`` and the batch ends early (counted as ``released``)."""
        # Unsubscribes kept while the store was busy reach it before anything is sent.
        apply_pending_unsubscribes(self.ws)
        now = self.ws.clock.now()
        self.reconcile(now)
        rows = self.claim(now)
        report = BatchReport(claimed=len(rows))
        if not rows:
            return report
        batch = _Batch(rows)
        try:
            decisions = self.decide(rows, now)
            # Render the whole batch first, then hand it to the channels. Rendering while the
            # SMTP threads send makes every SMTP reply wait for the GIL held by this thread
            # and costs both sides a GIL hand-off per reply; in two phases the sending
            # threads run on their own, as plain smtplib does (measured: about 0.25 ms less
            # CPU per message in the sender and less in the SMTP server). Processes
            # (delivery_processes) overlap one another's rendering and sending.
            ready = [
                d
                for d in decisions
                if d.status == "sending" and d.outgoing is not None and self.render(d, now)
            ]
            batch.held = [d for d in decisions if d.status != "sending"]
            self._send(ready, batch, stop)
            unsent = batch.unsent()
            self.recorder.finish(
                batch.settled(),
                self.ws.clock.now(),
                release=unsent,
                reason="released unsent: the worker was stopped",
            )
        except BaseException as exc:
            self._release(batch, exc)
            raise
        finally:
            self.recorder.close()
        for d in batch.held:
            report.counts[d.status] += 1
            report.reasons[d.reason] += 1
        for _, result in batch.sent.values():
            report.counts[result.outcome] += 1
        if unsent:
            report.counts["released"] += len(unsent)
        return report

    def _send(self, ready: Sequence[Decision], batch: _Batch, stop: threading.Event | None) -> None:
        """Send the rendered messages, each channel's in parallel with the others', and
        record each acceptance as it comes (in the channel's thread, before that connection
        sends another message). The first failure stops every channel after the messages
        on the wire; it is raised once all have stopped."""
        groups: dict[str, list[Decision]] = {}
        for d in ready:
            groups.setdefault(self._channel_key(d.row), []).append(d)
        abort = threading.Event()

        def deliver(key: str, group: list[Decision]) -> None:
            channel = self.channels[key]
            messages = [d.outgoing for d in group]

            def report(i: int, result: SendResult) -> Durable | None:
                d = group[i]
                batch.sent[int(d.row["id"])] = (d, result)
                if abort.is_set():
                    raise _Halted
                durable = self.recorder.accept(d, result)
                if durable is None:
                    return None

                def recorded() -> None:
                    try:
                        durable()
                    except BaseException:
                        abort.set()
                        raise

                return recorded

            try:
                send_many: Callable[..., Sequence[SendResult | None]] | None = getattr(
                    channel, "send_many", None
                )
                if send_many is not None:
                    results = send_many(messages, report, stop)
                    for d, result in zip(group, results, strict=True):  # any not reported
                        if result is not None:
                            batch.sent.setdefault(int(d.row["id"]), (d, result))
                    return
                for i, msg in enumerate(messages):  # any winback.ports.Channel: in turn
                    if (stop is not None and stop.is_set()) or abort.is_set():
                        return
                    assert msg is not None
                    durable = report(i, result_of(channel, msg))
                    if durable is not None:
                        durable()
            except BaseException:
                abort.set()
                raise

        jobs = list(groups.items())
        if not jobs:
            return
        if len(jobs) == 1:
            deliver(*jobs[0])
            return
        with ThreadPoolExecutor(len(jobs), thread_name_prefix="winback-channel") as pool:
            futures = [pool.submit(deliver, key, group) for key, group in jobs]
            errors: list[BaseException] = []
            for future in futures:
                try:
                    future.result()
                except BaseException as exc:
                    errors.append(exc)
        if errors:
            raise next((e for e in errors if not isinstance(e, _Halted)), errors[0])

    def _release(self, batch: _Batch, error: BaseException) -> None:
        """After a failure: write the outcomes known and put the rows not sent back to
        ``pending`` at once. If even that fails (the store is unreachable), the rows stay
        ``sending`` until the lease reconciles them (the accepted ones as sent), which the
        error notes."""
        reason = f"released unsent after an error: {type(error).__name__}: {error}"
        try:
            self.recorder.finish(
                batch.settled(), self.ws.clock.now(), release=batch.unsent(), reason=reason[:2000]
            )
        except Exception as failure:
            error.add_note(
                f"the claimed messages could not be released ({type(failure).__name__}: "
                f"{failure}); they stay 'sending' until delivery_lease_seconds "
                f"({self.settings.delivery_lease_seconds} s) has passed"
            )

    # -- claim and reconcile -------------------------------------------------------------------
    def _claimable(self) -> list[str]:
        return sorted({key.split(":", 1)[0] for key in self.channels})

    def claim(self, now: datetime) -> list[dict[str, Any]]:
        """Take up to ``delivery_batch_size`` due ``pending`` rows, transactional messages
        first, then the others, each oldest first, and make them ``sending``: one UPDATE
        (a write transaction from its start, so concurrent SQLite workers queue on the busy
        timeout). Each kind is read along an index in its order and stops at the batch
        size, so a backlog of a million marketing messages costs a claim no more than one
        of a thousand (no sort of the whole backlog)."""
        channels = self._claimable()
        if not channels:
            return []
        limit = self.settings.delivery_batch_size
        due = and_(
            outbox.c.status == literal_column("'pending'"),  # inline: matches the partial index
            outbox.c.not_before <= now,
            outbox.c.channel.in_(channels),
        )
        transactional = outbox.c.priority == literal_column("'transactional'")
        kinds = [
            select(outbox.c.id, literal_column(str(rank)).label("rank"), outbox.c.not_before)
            .where(due, which)
            .order_by(outbox.c.not_before, outbox.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .subquery()
            for rank, which in ((0, transactional), (1, ~transactional))
        ]
        both = union_all(*(select(k.c.id, k.c.rank, k.c.not_before) for k in kinds)).subquery()
        chosen = select(both.c.id).order_by(both.c.rank, both.c.not_before, both.c.id).limit(limit)
        stmt = (
            update(outbox)
            .where(outbox.c.id.in_(chosen.scalar_subquery()))
            .values(status="sending", claimed_at=now)
            .returning(*_FIELDS)
        )
        with self.ws.engine.begin() as conn:
            result = conn.execute(stmt)
            keys = tuple(result.keys())
            rows = [dict(zip(keys, r, strict=True)) for r in result]
        rows.sort(key=lambda r: (r["priority"] != "transactional", r["not_before"], r["id"]))
        return rows

    def reconcile(self, now: datetime) -> int:
        """Rows left in ``sending`` past the lease by a worker that died: those the provider
        had accepted (``sent_at`` recorded) become ``sent``; the others are resent (same
        Message-ID) or failed, as ``delivery_stale_policy`` says."""
        stale = and_(
            outbox.c.status == "sending",
            outbox.c.claimed_at < now - timedelta(seconds=self.settings.delivery_lease_seconds),
        )
        with self.ws.engine.begin() as conn:
            accepted = self.recorder.finish_accepted(conn, stale, self.domain)
            stale = and_(stale, outbox.c.sent_at.is_(None))
            if self.settings.delivery_stale_policy == "fail":
                result = conn.execute(
                    update(outbox)
                    .where(stale)
                    .values(
                        status="failed",
                        last_error="outcome unknown: the worker died after claiming this "
                        "message; not resent (delivery_stale_policy = fail, at-most-once)",
                    )
                )
                return accepted + int(result.rowcount or 0)
            exhausted = conn.execute(
                update(outbox)
                .where(and_(stale, outbox.c.attempts + 1 >= self.settings.delivery_max_attempts))
                .values(
                    status="failed",
                    attempts=outbox.c.attempts + 1,
                    last_error="outcome unknown after a worker crash, and no attempts left",
                )
            ).rowcount
            resent = conn.execute(
                update(outbox)
                .where(stale)
                .values(
                    status="pending",
                    attempts=outbox.c.attempts + 1,
                    not_before=now,
                    claimed_at=None,
                    last_error="reconciled after the lease: outcome unknown, resending with "
                    "the same Message-ID (at-least-once)",
                )
            ).rowcount
        return accepted + int(exhausted or 0) + int(resent or 0)

    # -- policies and rendering ----------------------------------------------------------------
    def _channel_key(self, row: Mapping[str, Any]) -> str:
        if row["channel"] == "webhook":
            payload = row.get("payload") or {}
            return f"webhook:{payload.get('provider') or self.settings.webhook_provider}"
        return str(row["channel"])

    def _address(self, row: Mapping[str, Any], data: ContactData) -> str | None:
        channel = row["channel"]
        payload = row.get("payload") or {}
        person = data.contact
        if payload.get("to"):
            return str(payload["to"])
        if channel == "email":
            return person.get("email")
        if channel == "sms":
            return person.get("phone")
        if channel == "push":
            token = (person.get("attributes") or {}).get("push_token")
            return str(token) if token else None
        return self._channel_key(row)

    def decide(self, rows: Sequence[dict[str, Any]], now: datetime) -> list[Decision]:
        with self.ws.engine.connect() as conn:
            people = load_contacts(conn, (r["contact_id"] for r in rows))
            addresses: dict[int, str | None] = {}
            for r in rows:
                data = people.get(int(r["contact_id"]))
                addresses[int(r["id"])] = self._address(r, data) if data else None
            blocked = suppressed_addresses(
                conn,
                (
                    (r["channel"], normalise_address(r["channel"], a))
                    for r in rows
                    if (a := addresses[int(r["id"])]) and r["channel"] in CONSENT_CHANNELS
                ),
            )
            copies = CopyGuard(
                conn,
                (
                    (r, normalise_address(r["channel"], a))
                    for r in rows
                    if (a := addresses[int(r["id"])])
                ),
                now,
            )
            longest = max((c.window for c in self.caps.values()), default=timedelta(0))
            recent = recent_sends(
                conn,
                (r["contact_id"] for r in rows if r["priority"] == "marketing"),
                self.caps,
                now - longest,
            )
        decisions: list[Decision] = []
        for r in rows:
            d = Decision(r)
            decisions.append(d)
            data = people.get(int(r["contact_id"]))
            address = addresses[int(r["id"])]
            channel = r["channel"]
            marketing = r["priority"] != "transactional"
            key = self._channel_key(r)
            if data is None:
                d.status, d.reason = "skipped", "contact no longer exists"
                continue
            if key not in self.channels:
                d.status, d.reason = "failed", f"no provider configured for {key}"
                continue
            if not address:
                d.status, d.reason = "skipped", f"no {channel} address"
                continue
            if self._needs_consent(key):
                consent = data.contact.get(f"{channel}_consent")
                if consent is False or (marketing and consent is not True):
                    d.status, d.reason = "skipped", f"no {channel} consent"
                    continue
            if (channel, normalise_address(channel, address)) in blocked:
                d.status, d.reason = "suppressed", f"{channel} address on the suppression list"
                continue
            if copies.is_copy(r, normalise_address(channel, address)):
                d.status, d.reason = "skipped", "a copy of this message goes to the same address"
                continue
            if marketing:
                later = self._deferral(r, data, now, recent)
                if later is not None:
                    d.status, d.not_before, d.reason = "deferred", later[0], later[1]
                    continue
                recent.setdefault((int(r["contact_id"]), channel), []).insert(0, now)
            d.outgoing = OutboundMessage(
                dedup_key=r["dedup_key"],
                contact_id=int(r["contact_id"]),
                channel=channel,
                template=r["template"],
                variant=r["variant"],
                flow=r["flow"],
                entry_id=r["entry_id"],
                step=r["step"],
                to=address,
                payload=r.get("payload") or {},
                message_id=message_id_for(r["dedup_key"], self.domain),
                sender=self.settings.mail_from,
            )
            d.data = data
        self._assign_coupons([d for d in decisions if d.outgoing is not None], now)
        return decisions

    def prepare(self, rows: Sequence[dict[str, Any]], now: datetime) -> list[Decision]:
        """Decide and render (without sending): what would go out."""
        decisions = self.decide(rows, now)
        for d in decisions:
            if d.outgoing is not None:
                self.render(d, now)
        return decisions

    def _needs_consent(self, key: str) -> bool:
        if not key.startswith("webhook"):
            return True
        channel = self.channels.get(key)
        config = getattr(channel, "config", None)
        return bool(getattr(config, "needs_consent", False))

    def _deferral(
        self,
        row: Mapping[str, Any],
        data: ContactData,
        now: datetime,
        recent: dict[tuple[int, str], list[datetime]],
    ) -> tuple[datetime, str] | None:
        channel = row["channel"]
        if self.quiet is not None and channel in CONSENT_CHANNELS:
            zone = zone_of(data.contact.get("timezone"), self.settings.tz)
            end = self.quiet.next_allowed(now, zone)
            if end is not None:
                return end, f"quiet hours in {zone.key}"
        cap = self.caps.get(channel)
        if cap is not None:
            sent = recent.get((int(row["contact_id"]), channel), [])
            from winback.delivery.worker.policies import cap_next_allowed

            later = cap_next_allowed(sent, cap, now)
            if later is not None:
                return later, f"frequency cap {cap.count} per {cap.window} on {channel}"
        return None

    def _assign_coupons(self, decisions: Sequence[Decision], now: datetime) -> None:
        wanted: list[tuple[int, int, str | None]] = []
        uses_coupon: dict[str, bool] = {}  # per template name, for this batch
        for d in decisions:
            want = (d.row.get("payload") or {}).get("coupon")
            uses = False
            if d.row.get("template"):
                name = str(d.row["template"])
                if name not in uses_coupon:
                    try:
                        uses_coupon[name] = self.templates.get(name).uses("coupon")
                    except WinbackError:
                        uses_coupon[name] = False
                uses = uses_coupon[name]
            if want or uses:
                pool = want.get("pool") if isinstance(want, dict) else None
                wanted.append((int(d.row["id"]), int(d.row["contact_id"]), pool))
        if not wanted:
            return
        try:
            with self.ws.engine.begin() as conn:
                codes = assign(conn, wanted, pattern=self.settings.coupon_pattern, at=now)
        except CouponPoolExhausted as exc:
            ids = {w[0] for w in wanted}
            for d in decisions:
                if int(d.row["id"]) in ids:
                    d.status, d.reason, d.outgoing = "retry", str(exc), None
            return
        for d in decisions:
            d.coupon = codes.get(int(d.row["id"]))

    def render(self, d: Decision, now: datetime) -> bool:
        """Render a decided message into its outgoing form; False (and ``failed``) when the
        template cannot be rendered for this contact."""
        try:
            self._render_one(d, now)
            return True
        except Exception as exc:  # a template error (or a bug) fails this message alone
            detail = (
                str(exc)
                if isinstance(exc, (WinbackError, ValueError))
                else f"{type(exc).__name__}: {exc}"
            )
            d.status, d.reason, d.outgoing = "failed", f"render: {detail}", None
            return False

    def _render_one(self, d: Decision, now: datetime) -> None:
        assert d.outgoing is not None and d.data is not None
        data = d.data
        row = d.row
        oid, cid = int(row["id"]), int(row["contact_id"])
        unsub = f"{self.base}/u/{self.signer.sign('u', oid, cid)}"
        payload = row.get("payload") or {}
        template = self.templates.get(str(row["template"])) if row.get("template") else None
        feedback = (
            f"{self.base}/f/{self.signer.sign('f', oid, cid)}"
            if template is not None and template.uses("feedback_url")
            else ""
        )
        context = render_context(
            data,
            settings=self.settings,
            message=row,
            now=now,
            coupon=d.coupon,
            unsubscribe_url=unsub,
            feedback_url=feedback,
        )
        if row.get("template"):
            rendered = self.templates.render(str(row["template"]), context)
        else:
            rendered = Rendered(channel=row["channel"], body=str(payload.get("body", "")))
        if row["channel"] == "email":
            if rendered.channel != "email":
                raise ValueError(f"template {row['template']!r} is for {rendered.channel}")

            def track(index: int, url: str) -> str:
                return f"{self.base}/c/{self.signer.sign('c', oid, cid, index=index, url=url)}"

            html, text = rewrite_links(rendered.html, rendered.text, track, self.base)
            pixel = (
                f'<img src="{self.base}/o/{self.signer.sign("o", oid, cid)}.gif" width="1" '
                'height="1" alt="" style="display:block;border:0;width:1px;height:1px">'
            )
            at = html.rfind("</body>")
            html = html[:at] + pixel + html[at:] if at >= 0 else html + pixel
            message = build_email(
                from_addr=self.settings.mail_from,
                from_name=self.settings.mail_from_name,
                to=d.outgoing.to or "",
                subject=rendered.subject,
                text=text,
                html=html,
                message_id=d.outgoing.message_id or message_id_for(row["dedup_key"], self.domain),
                date=now,
                list_unsubscribe=unsub,
                unsubscribe_mailto=self.settings.unsubscribe_mailto,
                headers={"X-Winback-Flow": f"{row.get('flow') or ''}/{row.get('step') or ''}"},
            )
            d.outgoing = replace(d.outgoing, content=message.decode("utf-8"))
        else:
            fields = {
                "body": rendered.body,
                "title": rendered.title,
                "url": rendered.url,
                "data": payload.get("data") or {},
                "contact": {
                    k: data.contact.get(k)
                    for k in ("id", "customer_id", "first_name", "last_name", "email", "phone")
                },
                "message": {"flow": row.get("flow"), "step": row.get("step")},
            }
            d.outgoing = replace(d.outgoing, fields=fields)
