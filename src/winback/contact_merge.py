"""Merging contacts that share an email address into one.

Addresses are compared as stored (imports trim and lower-case them) and, for rows written
otherwise, trimmed and lower-cased in SQL. In each group of contacts with one address the
oldest contact (lowest internal id) survives and takes over everything of the others:
orders, events, consent log, tag history, tags, messages, coupons, suppressions and flow
stints (where two were active in one flow, the survivor's, else the oldest, stays active and
the others end with ``exit_reason = merged``). Empty fields of the survivor are filled from
the others (oldest first), custom attributes are merged (the survivor's win), the
engagement times are the latest of the group, and consent per channel is the stricter one
(revoked anywhere: revoked). Purchase attributes are recounted from the orders. Then the
others are deleted (their segment memberships and RFM snapshots with them: the survivor's
``updated_at`` makes the next segment refresh look at it again). Erased contacts
(tombstones) are never merged. Everything happens in the caller's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, insert, select, update

from winback.store import activity
from winback.store.busy import retry_transient
from winback.store.schema import (
    CHANNELS,
    consent_log,
    contact_tags,
    contacts,
    coupons,
    events,
    flow_entries,
    orders,
    outbox,
    rfm_snapshots,
    segment_membership,
    suppressions,
    tag_history,
)

#: Tables whose rows follow their contact into the survivor as they are.
MOVED = (orders, events, consent_log, tag_history, outbox, coupons, suppressions)
#: Contact fields filled from the others when the survivor has none.
FILLED = (
    "phone",
    "first_name",
    "last_name",
    "birthday",
    "timezone",
    "locale",
    "created_at",
)
ENGAGEMENT = ("last_email_opened", "last_email_link_clicked", "last_seen")


@dataclass
class Merge:
    """One address's contacts merged into the survivor."""

    email: str
    survivor: str  # customer_id
    merged: list[str]  # customer_ids of the contacts merged away
    moved: dict[str, int] = field(default_factory=dict)  # table -> rows moved

    def to_dict(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "survivor": self.survivor,
            "merged": self.merged,
            "moved": self.moved,
        }


def _address() -> Any:
    return func.lower(func.trim(contacts.c.email))


def duplicate_addresses(conn: Connection, emails: list[str] | None = None) -> list[str]:
    """Addresses (normalised) that more than one live contact has; only among ``emails``
    when given."""
    address = _address()
    query = (
        select(address)
        .where(contacts.c.email.is_not(None), contacts.c.erased_at.is_(None))
        .group_by(address)
        .having(func.count() > 1)
        .order_by(address)
    )
    if emails is not None:
        query = query.where(address.in_(emails))
    return [str(a) for a in conn.execute(query).scalars()]


def merge_all(engine: Engine, *, now: datetime) -> list[Merge]:
    """:func:`merge_duplicates` in one transaction of its own, run again when the store
    rolls it back as a deadlock with another writer (an engine pass, a worker)."""

    def merge() -> list[Merge]:
        with engine.begin() as conn:
            return merge_duplicates(conn, now=now)

    return retry_transient(merge)


def merge_duplicates(
    conn: Connection, *, now: datetime, emails: list[str] | None = None
) -> list[Merge]:
    """Merge every group of live contacts sharing an address (see the module docstring)."""
    done = []
    for address in duplicate_addresses(conn, emails):
        ids = [
            int(i)
            for i in conn.execute(
                select(contacts.c.id)
                .where(_address() == address, contacts.c.erased_at.is_(None))
                .order_by(contacts.c.id)
            ).scalars()
        ]
        done.append(merge_contacts(conn, ids[0], ids[1:], now=now, email=address))
    return done


def merge_contacts(
    conn: Connection, survivor: int, others: list[int], *, now: datetime, email: str = ""
) -> Merge:
    """Merge the contacts ``others`` into ``survivor`` (internal ids)."""
    group = [survivor, *others]
    rows = {
        r["id"]: r
        for r in conn.execute(select(contacts).where(contacts.c.id.in_(group))).mappings()
    }
    result = Merge(
        email=email or str(rows[survivor]["email"] or ""),
        survivor=str(rows[survivor]["customer_id"]),
        merged=[str(rows[i]["customer_id"]) for i in others],
    )
    if not others:
        return result
    _end_competing_stints(conn, group, now)
    for table in (*MOVED, flow_entries):
        moved = conn.execute(
            update(table).where(table.c.contact_id.in_(others)).values(contact_id=survivor)
        ).rowcount
        result.moved[table.name] = int(moved)
    tags = select(contact_tags.c.tag).where(contact_tags.c.contact_id == survivor)
    taken = conn.execute(
        select(
            contact_tags.c.tag, func.min(contact_tags.c.added_at), func.min(contact_tags.c.added_by)
        )
        .where(contact_tags.c.contact_id.in_(others), contact_tags.c.tag.not_in(tags))
        .group_by(contact_tags.c.tag)
    ).all()
    for table in (contact_tags, segment_membership, rfm_snapshots):
        conn.execute(delete(table).where(table.c.contact_id.in_(others)))
    if taken:
        conn.execute(
            insert(contact_tags),
            [
                {"contact_id": survivor, "tag": tag, "added_at": at, "added_by": by}
                for tag, at, by in taken
            ],
        )
    result.moved["contact_tags"] = len(taken)
    conn.execute(
        update(contacts)
        .where(contacts.c.id == survivor)
        .values(_combined([rows[i] for i in group]) | {"updated_at": now})
    )
    conn.execute(delete(contacts).where(contacts.c.id.in_(others)))
    activity.recount_orders(conn, [survivor], now=now)
    return result


def _combined(rows: list[Any]) -> dict[str, Any]:
    """The survivor's (first row's) fields completed from the others."""
    first = rows[0]
    values: dict[str, Any] = {}
    for name in FILLED:
        if first[name] is None:
            values[name] = next((r[name] for r in rows if r[name] is not None), None)
    if first["created_at"] is not None:
        values["created_at"] = min(r["created_at"] for r in rows if r["created_at"] is not None)
    for name in ENGAGEMENT:
        times = [r[name] for r in rows if r[name] is not None]
        values[name] = max(times) if times else None
    for channel in CHANNELS:
        stated = [r[f"{channel}_consent"] for r in rows if r[f"{channel}_consent"] is not None]
        values[f"{channel}_consent"] = (False not in stated) if stated else None
    attributes: dict[str, Any] = {}
    for r in reversed(rows):
        attributes.update(r["attributes"] or {})
    values["attributes"] = attributes
    values["email"] = (first["email"] or "").strip().lower() or None
    return values


def _end_competing_stints(conn: Connection, group: list[int], now: datetime) -> None:
    """Of the group's active stints in one flow, keep the survivor's (else the oldest) and
    end the others, so that the survivor has at most one active stint per flow."""
    active = conn.execute(
        select(flow_entries.c.id, flow_entries.c.flow_id, flow_entries.c.contact_id).where(
            and_(flow_entries.c.contact_id.in_(group), flow_entries.c.status == "active")
        )
    ).all()
    rank = {cid: i for i, cid in enumerate(group)}
    kept: dict[int, tuple[int, int]] = {}
    for entry_id, flow_id, contact_id in active:
        key = (rank[contact_id], entry_id)
        if flow_id not in kept or key < kept[flow_id]:
            kept[flow_id] = key
    keep_ids = {
        entry_id
        for entry_id, flow_id, contact_id in active
        if kept[flow_id] == (rank[contact_id], entry_id)
    }
    ended = [entry_id for entry_id, _f, _c in active if entry_id not in keep_ids]
    if ended:
        conn.execute(
            update(flow_entries)
            .where(flow_entries.c.id.in_(ended))
            .values(status="exited", exit_reason="merged", exited_at=now, wake_at=None)
        )
