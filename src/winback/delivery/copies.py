"""One address, one copy: a message is not delivered twice to the same address.

Two contacts can share an address (until ``winback contacts merge`` joins them): an email
address, or a phone number for SMS (both stored normalised: lower-case email, E.164
phone). A flow's step, or an action outside flows that makes a message per contact (a
feedback request, a transactional message), then makes one for each, and without this
check the person behind the address would receive both.

A *copy* is a message to the same normalised address, on the same channel, for another
contact, that is the same message:

- in a flow: the same flow, step and template, while the other contact's stint in the
  flow overlaps this contact's (the other entry is still in the flow, or left it after
  this one entered). That is the whole time a copy can be made: the flow's life for the
  two entries. A stint that ended before this one began is a later pass through the flow,
  as a contact's own re-entry is, and is not compared;
- outside flows: the same template and the same payload (a feedback request for another
  order is another message), made within :attr:`~winback.config.Settings.delivery_copy_window_hours`
  (one action makes the messages for all its contacts at once; the window covers how far
  apart delivery can then send them: quiet hours, frequency caps, retries).

Two messages of one contact are never copies (a contact re-entering a flow gets its steps
again).

:func:`skip_copies` runs on a batch's decisions once everything else is decided, so only
messages that would really go out take an address. A message takes its address by getting
its Message-ID written while still ``sending`` (the value it is sent with), in one write
transaction per batch: on SQLite writers are serialised (``BEGIN IMMEDIATE``), on
PostgreSQL the transaction first takes a transaction-level advisory lock per address (in
one order, so two workers never deadlock). A second worker with a copy therefore waits for
the first one's transaction and then sees its message taken: two workers never send one
copy each. A message that ends up not sent (failed, deferred, released) has its
Message-ID cleared by the outcome it records and gives its address back.

Cost per batch: one indexed lookup of the contacts with the batch's addresses
(``ix_contacts_email``, ``ix_contacts_phone``), one of their messages on the channel
(``ix_outbox_contact_channel_sent``) with their flow entries (primary key), one of the
batch's own entries, and one ``UPDATE`` by primary key for the messages that go out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    func,
    or_,
    select,
    text,
    update,
)

from winback.channels import kind_of, normalise_address
from winback.store.schema import contacts, flow_entries, outbox

#: Lookups per statement (well under SQLite's bound-parameter limit).
CHUNK = 500
REASON = "a copy of this message goes to the same address"


class Decided(Protocol):
    """What :func:`skip_copies` reads and sets on a worker's decision."""

    row: dict[str, Any]
    status: str
    reason: str
    outgoing: Any


def identity(row: Mapping[str, Any]) -> tuple[str, ...]:
    """What makes two messages (to one address, on one channel) the same message."""
    if row.get("flow"):
        return ("flow", str(row["flow"]), str(row.get("step") or ""), str(row.get("template")))
    payload = {k: v for k, v in (row.get("payload") or {}).items() if k != "to"}
    digest = hashlib.blake2b(
        json.dumps(payload, sort_keys=True, default=str).encode(), digest_size=16
    ).hexdigest()
    return ("message", str(row.get("template")), digest)


def lock_key(channel: str, address: str) -> int:
    """The PostgreSQL advisory lock (a signed 64-bit key) of one address on one channel."""
    digest = hashlib.blake2b(f"copy|{channel}|{address}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True)
class _Taken:
    """A message of another contact that holds an address."""

    contact_id: int
    key: tuple[str, ...]
    created_at: datetime
    left_flow_at: datetime | None  # the other entry's exit (None: still in, or unknown)
    flow_message: bool


def guarded(channel: str) -> bool:
    """Whether ``channel`` has a personal address kept on the contact (email, SMS)."""
    kind = kind_of(channel)
    return kind is not None and kind.address_column is not None and not kind.per_provider


def skip_copies(
    engine: Engine,
    decisions: Sequence[Decided],
    addresses: Mapping[int, str],
    now: datetime,
    window: timedelta,
) -> int:
    """Mark the copies among ``decisions`` (those still going out) skipped, and the others
    as taking their address (see the module docstring). ``addresses``: outbox id ->
    normalised address. Returns how many were skipped."""
    going = [
        d
        for d in decisions
        if d.outgoing is not None
        and d.status == "sending"
        and guarded(str(d.row["channel"]))
        and int(d.row["id"]) in addresses
    ]
    if not going:
        return 0
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            keys = sorted(
                {lock_key(str(d.row["channel"]), addresses[int(d.row["id"])]) for d in going}
            )
            conn.execute(
                text(
                    "SELECT pg_advisory_xact_lock(k) FROM "
                    "(SELECT unnest(CAST(:keys AS bigint[])) AS k ORDER BY 1) AS ordered"
                ),
                {"keys": keys},
            )
        batch_ids = [int(d.row["id"]) for d in going]
        taken = _taken(conn, going, addresses, batch_ids, now - window)
        entered = _entered(conn, [d.row.get("entry_id") for d in going])
        winners: dict[tuple[str, str, tuple[str, ...]], int] = {}
        keep: list[Decided] = []
        skipped = 0
        for d in going:
            row = d.row
            channel, contact = str(row["channel"]), int(row["contact_id"])
            address = addresses[int(row["id"])]
            key = identity(row)
            since = entered.get(int(row["entry_id"])) if row.get("entry_id") else None
            first = winners.setdefault((channel, address, key), contact)
            if first != contact or any(
                t.contact_id != contact and t.key == key and _overlaps(t, since, now, window)
                for t in taken.get((channel, address), ())
            ):
                d.status, d.reason, d.outgoing = "skipped", REASON, None
                skipped += 1
            else:
                keep.append(d)
        if keep:
            conn.execute(
                update(outbox)
                .where(outbox.c.id == bindparam("_id"))
                .values(message_id=bindparam("_mid")),
                [{"_id": int(d.row["id"]), "_mid": d.outgoing.message_id} for d in keep],
            )
    return skipped


def _overlaps(t: _Taken, since: datetime | None, now: datetime, window: timedelta) -> bool:
    if not t.flow_message:
        return t.created_at >= now - window
    # Flow messages: the other stint overlaps this one (unknown entries count as overlapping).
    return t.left_flow_at is None or since is None or t.left_flow_at >= since


def _entered(conn: Connection, entry_ids: Iterable[Any]) -> dict[int, datetime]:
    ids = sorted({int(e) for e in entry_ids if e is not None})
    found: dict[int, datetime] = {}
    for i in range(0, len(ids), CHUNK):
        chunk = ids[i : i + CHUNK]
        for entry_id, at in conn.execute(
            select(flow_entries.c.id, flow_entries.c.entered_at).where(flow_entries.c.id.in_(chunk))
        ):
            found[int(entry_id)] = at
    return found


def _taken(
    conn: Connection,
    going: Sequence[Decided],
    addresses: Mapping[int, str],
    batch_ids: list[int],
    oldest: datetime,
) -> dict[tuple[str, str], list[_Taken]]:
    """Messages sent, or going out, to the batch's addresses (by channel and address) that
    may be the same message as one of the batch's (same flow, or same template made since
    ``oldest``)."""
    wanted: dict[str, set[str]] = {}
    for d in going:
        wanted.setdefault(str(d.row["channel"]), set()).add(addresses[int(d.row["id"])])
    flows = sorted({str(d.row["flow"]) for d in going if d.row.get("flow")})
    steps = sorted({str(d.row.get("step") or "") for d in going if d.row.get("flow")})
    templates = sorted({str(d.row["template"]) for d in going if not d.row.get("flow")})
    same = or_(
        and_(outbox.c.flow.in_(flows), func.coalesce(outbox.c.step, "").in_(steps)),
        and_(
            outbox.c.flow.is_(None),
            outbox.c.template.in_(templates),
            outbox.c.created_at >= oldest,
        ),
    )
    # The status as an expression, so that no index on it is used: the lookup goes along
    # the contacts' messages (ix_outbox_contact_channel_sent). On the status index instead,
    # SQLite's planner would read every message ever sent.
    status = outbox.c.status.concat("")
    found: dict[tuple[str, str], list[_Taken]] = {}
    for channel, wanted_addresses in wanted.items():
        kind = kind_of(channel)
        assert kind is not None and kind.address_column is not None
        column = contacts.c[kind.address_column]
        holders: dict[int, str] = {}
        listed = sorted(wanted_addresses)
        for i in range(0, len(listed), CHUNK):
            for contact_id, address in conn.execute(
                select(contacts.c.id, column).where(column.in_(listed[i : i + CHUNK]))
            ):
                holders[int(contact_id)] = normalise_address(channel, str(address))
        ids = sorted(holders)
        for i in range(0, len(ids), CHUNK):
            rows = conn.execute(
                select(
                    outbox.c.contact_id,
                    outbox.c.flow,
                    outbox.c.step,
                    outbox.c.template,
                    outbox.c.payload,
                    outbox.c.created_at,
                    flow_entries.c.exited_at,
                )
                .select_from(outbox.outerjoin(flow_entries, flow_entries.c.id == outbox.c.entry_id))
                .where(
                    and_(
                        outbox.c.contact_id.in_(ids[i : i + CHUNK]),
                        outbox.c.channel == channel,
                        or_(
                            status == "sent",
                            and_(status == "sending", outbox.c.message_id.is_not(None)),
                        ),
                        outbox.c.id.not_in(batch_ids),
                        same,
                    )
                )
            )
            for r in rows:
                row = r._mapping
                found.setdefault((channel, holders[int(r.contact_id)]), []).append(
                    _Taken(
                        contact_id=int(r.contact_id),
                        key=identity(dict(row)),
                        created_at=r.created_at,
                        left_flow_at=r.exited_at,
                        flow_message=bool(r.flow),
                    )
                )
    return found


__all__ = ["REASON", "guarded", "identity", "lock_key", "skip_copies"]
