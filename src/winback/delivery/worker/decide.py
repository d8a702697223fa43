"""Deciding what becomes of each claimed row before anything is rendered or sent: the
contact and its address, consent, the suppression list, frequency caps and quiet hours
(:mod:`winback.delivery.worker.policies`), and the coupon a message carries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from winback.channels import kind_of, normalise_address
from winback.config import Settings
from winback.delivery.channels import Channel, OutboundMessage
from winback.delivery.copies import REASON as COPY
from winback.delivery.copies import skip_copies
from winback.delivery.coupons import CouponPoolExhausted, assign
from winback.delivery.messages.context import ContactData, load_contacts
from winback.delivery.messages.mime import domain_of, message_id_for
from winback.delivery.messages.templates import TemplateRepository
from winback.delivery.worker.policies import (
    Cap,
    QuietHours,
    cap_next_allowed,
    parse_caps,
    parse_quiet_hours,
    recent_sends,
    suppressed_addresses,
    zone_of,
)
from winback.errors import WinbackError

#: Marketing send times per (contact, channel), newest first.
Recent = dict[tuple[int, str], list[datetime]]


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


def channel_key(row: Mapping[str, Any], settings: Settings) -> str:
    """The channel a row goes through: its channel, or ``webhook:<provider>``."""
    kind = kind_of(str(row["channel"]))
    if kind is not None and kind.per_provider:
        payload = row.get("payload") or {}
        return f"{row['channel']}:{payload.get('provider') or settings.webhook_provider}"
    return str(row["channel"])


@dataclass
class _Lookups:
    """What one batch's decisions read from the store, in one connection."""

    people: dict[int, ContactData]
    addresses: dict[int, str | None]
    blocked: set[tuple[str, str]]
    recent: Recent


class Decider:
    """Decides claimed rows for the ``channels`` configured, under the settings' caps and
    quiet hours (``caps`` and ``quiet`` may be replaced between batches)."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        channels: Mapping[str, Channel],
        templates: TemplateRepository,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.channels = channels
        self.templates = templates
        self.caps: dict[str, Cap] = parse_caps(settings.frequency_caps)
        self.quiet: QuietHours | None = parse_quiet_hours(settings.quiet_hours)
        self.domain = domain_of(settings.mail_from)

    def decide(self, rows: Sequence[dict[str, Any]], now: datetime) -> list[Decision]:
        found = self._lookups(rows, now)
        decisions = [self._decide_one(r, found, now) for r in rows]
        # Last, so that only messages that really go out take their address.
        copies = skip_copies(
            self.engine,
            decisions,
            {
                int(d.row["id"]): normalise_address(d.row["channel"], d.outgoing.to)
                for d in decisions
                if d.outgoing is not None and d.outgoing.to
            },
            now,
            timedelta(hours=self.settings.delivery_copy_window_hours),
        )
        if copies:
            for d in decisions:
                if d.reason == COPY and d.row["priority"] != "transactional":
                    sent = found.recent.get((int(d.row["contact_id"]), d.row["channel"]))
                    if sent and now in sent:
                        sent.remove(now)
        self._assign_coupons([d for d in decisions if d.outgoing is not None], now)
        return decisions

    def _address(self, row: Mapping[str, Any], data: ContactData) -> str | None:
        payload = row.get("payload") or {}
        if payload.get("to"):
            return str(payload["to"])
        kind = kind_of(str(row["channel"]))
        if kind is None or kind.per_provider:  # the provider is the address
            return channel_key(row, self.settings)
        return kind.address(data.contact)

    def _lookups(self, rows: Sequence[dict[str, Any]], now: datetime) -> _Lookups:
        with self.engine.connect() as conn:
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
                    if (a := addresses[int(r["id"])]) and _personal(r["channel"])
                ),
            )
            longest = max((c.window for c in self.caps.values()), default=timedelta(0))
            recent = recent_sends(
                conn,
                (r["contact_id"] for r in rows if r["priority"] == "marketing"),
                self.caps,
                now - longest,
            )
        return _Lookups(people, addresses, blocked, recent)

    def _decide_one(self, r: dict[str, Any], found: _Lookups, now: datetime) -> Decision:
        d = Decision(r)
        data = found.people.get(int(r["contact_id"]))
        address = found.addresses[int(r["id"])]
        held = self._held(r, data, address, found.blocked)
        if held is not None:
            d.status, d.reason = held
            return d
        assert data is not None and address is not None
        channel = r["channel"]
        if r["priority"] != "transactional":
            later = self._deferral(r, data, now, found.recent)
            if later is not None:
                d.status, d.not_before, d.reason = "deferred", later[0], later[1]
                return d
            found.recent.setdefault((int(r["contact_id"]), channel), []).insert(0, now)
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
        return d

    def _held(
        self,
        r: Mapping[str, Any],
        data: ContactData | None,
        address: str | None,
        blocked: set[tuple[str, str]],
    ) -> tuple[str, str] | None:
        """Why the row is not sent at all (status, reason), or None."""
        channel = r["channel"]
        key = channel_key(r, self.settings)
        if data is None:
            return "skipped", "contact no longer exists"
        if key not in self.channels:
            return "failed", f"no provider configured for {key}"
        if not address:
            return "skipped", f"no {channel} address"
        if self._needs_consent(key):
            consent = data.contact.get(f"{channel}_consent")
            if consent is False or (r["priority"] != "transactional" and consent is not True):
                return "skipped", f"no {channel} consent"
        if (channel, normalise_address(channel, address)) in blocked:
            return "suppressed", f"{channel} address on the suppression list"
        return None

    def _needs_consent(self, key: str) -> bool:
        kind = kind_of(key)
        if kind is None or not kind.per_provider:
            return True
        channel = self.channels.get(key)
        config = getattr(channel, "config", None)
        return bool(getattr(config, "needs_consent", False))

    def _deferral(
        self, row: Mapping[str, Any], data: ContactData, now: datetime, recent: Recent
    ) -> tuple[datetime, str] | None:
        channel = row["channel"]
        if self.quiet is not None and _personal(channel):
            zone = zone_of(data.contact.get("timezone"), self.settings.tz)
            end = self.quiet.next_allowed(now, zone)
            if end is not None:
                return end, f"quiet hours in {zone.key}"
        cap = self.caps.get(channel)
        if cap is not None:
            sent = recent.get((int(row["contact_id"]), channel), [])
            later = cap_next_allowed(sent, cap, now)
            if later is not None:
                return later, f"frequency cap {cap.count} per {cap.window} on {channel}"
        return None

    def _uses_coupon(self, name: str, known: dict[str, bool]) -> bool:
        if name not in known:
            try:
                known[name] = self.templates.get(name).uses("coupon")
            except WinbackError:
                known[name] = False
        return known[name]

    def _assign_coupons(self, decisions: Sequence[Decision], now: datetime) -> None:
        wanted: list[tuple[int, int, str | None]] = []
        uses_coupon: dict[str, bool] = {}  # per template name, for this batch
        for d in decisions:
            want = (d.row.get("payload") or {}).get("coupon")
            name = d.row.get("template")
            if want or (name and self._uses_coupon(str(name), uses_coupon)):
                pool = want.get("pool") if isinstance(want, dict) else None
                wanted.append((int(d.row["id"]), int(d.row["contact_id"]), pool))
        if not wanted:
            return
        try:
            with self.engine.begin() as conn:
                codes = assign(conn, wanted, pattern=self.settings.coupon_pattern, at=now)
        except CouponPoolExhausted as exc:
            ids = {w[0] for w in wanted}
            for d in decisions:
                if int(d.row["id"]) in ids:
                    d.status, d.reason, d.outgoing = "retry", str(exc), None
            return
        for d in decisions:
            d.coupon = codes.get(int(d.row["id"]))


def _personal(channel: str) -> bool:
    kind = kind_of(channel)
    return kind is not None and kind.personal
