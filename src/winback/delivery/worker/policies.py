"""Send-time policies: consent, suppression, frequency caps and quiet hours.

Caps and quiet hours apply to ``marketing`` messages only; a ``transactional`` message is
never held back by them (it is still subject to consent and the suppression list). A message
over a cap or inside quiet hours is *deferred*: its ``not_before`` moves to the first instant
it would be allowed, it is never dropped.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, and_, select

from winback.channels import normalise_address
from winback.errors import InvalidSetting
from winback.store.schema import outbox, suppressions

_CAP = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*([dh])\s*$")
_SPAN = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True, slots=True)
class Cap:
    count: int
    window: timedelta


def parse_cap(channel: str, text: str) -> Cap:
    m = _CAP.match(text)
    if not m:
        raise InvalidSetting(
            f"frequency_caps.{channel} = {text!r}: expected COUNT/WINDOW such as '2/7d' or '1/12h'"
        )
    n, size, unit = int(m.group(1)), int(m.group(2)), m.group(3)
    return Cap(n, timedelta(days=size) if unit == "d" else timedelta(hours=size))


def parse_caps(raw: Mapping[str, str]) -> dict[str, Cap]:
    return {channel: parse_cap(channel, text) for channel, text in raw.items()}


@dataclass(frozen=True, slots=True)
class QuietHours:
    start: time
    end: time

    def contains(self, local: time) -> bool:
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def next_allowed(self, now: datetime, zone: ZoneInfo) -> datetime | None:
        """None when ``now`` is outside quiet hours there, else the end of quiet hours."""
        local = now.astimezone(zone)
        if not self.contains(local.time().replace(tzinfo=None)):
            return None
        end = datetime.combine(local.date(), self.end, tzinfo=zone)
        if end <= local:
            end = datetime.combine(local.date() + timedelta(days=1), self.end, tzinfo=zone)
        # Wall-clock arithmetic through DST is fine here: round-trip via UTC.
        return end.astimezone(now.tzinfo)


def parse_quiet_hours(text: str) -> QuietHours | None:
    if not text.strip():
        return None
    m = _SPAN.match(text)
    if not m:
        raise InvalidSetting(f"quiet_hours = {text!r}: expected HH:MM-HH:MM such as '21:00-08:00'")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise InvalidSetting(f"quiet_hours = {text!r}: hours 0-23 and minutes 0-59 expected")
    return QuietHours(time(h1, m1), time(h2, m2))


def zone_of(name: str | None, default: ZoneInfo) -> ZoneInfo:
    if not name:
        return default
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return default


def cap_next_allowed(recent: Sequence[datetime], cap: Cap, now: datetime) -> datetime | None:
    """``recent``: send times of counted messages (newest first). None when one more may go
    now, else when the oldest message that fills the cap leaves the window."""
    in_window = [t for t in recent if t > now - cap.window]
    if len(in_window) < cap.count:
        return None
    return in_window[cap.count - 1] + cap.window


def recent_sends(
    conn: Connection, contact_ids: Iterable[int], channels: Iterable[str], since: datetime
) -> dict[tuple[int, str], list[datetime]]:
    """Marketing send times per (contact, channel) since ``since``, newest first."""
    out: dict[tuple[int, str], list[datetime]] = defaultdict(list)
    ids = sorted(set(contact_ids))
    chans = sorted(set(channels))
    for i in range(0, len(ids), 900):
        rows = conn.execute(
            select(outbox.c.contact_id, outbox.c.channel, outbox.c.sent_at)
            .where(
                and_(
                    outbox.c.contact_id.in_(ids[i : i + 900]),
                    outbox.c.channel.in_(chans),
                    outbox.c.status == "sent",
                    outbox.c.priority == "marketing",
                    outbox.c.sent_at > since,
                )
            )
            .order_by(outbox.c.sent_at.desc())
        )
        for cid, channel, sent_at in rows:
            out[(int(cid), str(channel))].append(sent_at)
    return out


def suppressed_addresses(
    conn: Connection, pairs: Iterable[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which (channel, address) pairs are on the suppression list, in clear or, for the
    addresses of erased contacts, as their :func:`hashed_address`."""
    by_channel: dict[str, dict[str, str]] = defaultdict(dict)  # stored form -> address
    for channel, address in set(pairs):
        by_channel[channel][address] = address
    for channel, forms in by_channel.items():
        if _has_hashed(conn, channel):  # only erasures make them: usually none
            for address in list(forms):
                forms[hashed_address(channel, address)] = address
    found: set[tuple[str, str]] = set()
    for channel, forms in by_channel.items():
        stored = list(forms)
        for i in range(0, len(stored), 900):
            for (addr,) in conn.execute(
                select(suppressions.c.address).where(
                    and_(
                        suppressions.c.channel == channel,
                        suppressions.c.address.in_(stored[i : i + 900]),
                    )
                )
            ):
                found.add((channel, forms[str(addr)]))
    return found


HASHED_PREFIX = "sha256:"


def _has_hashed(conn: Connection, channel: str) -> bool:
    """Whether the channel's suppression list holds any hashed address (a range probe of
    the (channel, address) unique index)."""
    probe = select(suppressions.c.id).where(
        and_(
            suppressions.c.channel == channel,
            suppressions.c.address >= HASHED_PREFIX,
            suppressions.c.address < HASHED_PREFIX[:-1] + chr(ord(HASHED_PREFIX[-1]) + 1),
        )
    )
    return conn.execute(probe.limit(1)).first() is not None


def hashed_address(channel: str, address: str) -> str:
    """How the suppression list keeps the address of an erased contact: the SHA-256 of the
    normalised address, so that the address stays blocked (an unsubscribe outlives the
    data) without being kept in clear."""
    if address.startswith(HASHED_PREFIX):
        return address
    digest = hashlib.sha256(normalise_address(channel, address).encode("utf-8")).hexdigest()
    return HASHED_PREFIX + digest
