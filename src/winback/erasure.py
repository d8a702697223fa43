"""Erasing a contact's personal data (GDPR-style "right to erasure"), set-based.

What happens to each erased contact, in the caller's transaction:

* ``contacts``: email, phone, first and last name, birthday, time zone, locale, the custom
  attributes, the engagement timestamps (``last_email_opened``, ``last_email_link_clicked``,
  ``last_seen``) and every analytics column are nulled; consent is ``false`` on every
  channel (one consent-log row per channel that was not already ``false``, source
  ``erasure:<source>``); ``erased_at`` is set. The row itself stays, as a **tombstone**
  keyed by the shop's ``customer_id`` (a pseudonymous key, not contact data): a later
  contacts import naming the same customer does not fill it again (those lines are
  rejected with the reason), and orders or events for it attach to the empty tombstone.
* ``orders`` stay (amount, currency, time, items, coupon) for aggregate reporting, tied only
  to the tombstone; ``orders_count``, ``revenue_total`` and the purchase dates stay too.
* ``events``: their ``properties`` (which may carry free text, addresses) are nulled; type
  and time stay.
* ``outbox``: payloads nulled; messages not yet sent are ``skipped`` ("contact erased").
* ``suppressions`` of the contact (its rows, and the rows of its email address and phone
  number) keep blocking the address, but as its SHA-256 (``sha256:<hex>`` of the
  normalised address), without the contact or the detail: an unsubscribe or a bounce
  outlives the erasure, so that the same address imported again later is still not
  mailed, and the address is no longer kept in clear.
* tags are removed; flows in progress are exited with reason ``erased``.
* one ``erasures`` row (contact, time, source, reason): the audit trail.

Erasing an erased contact again does nothing.

Erasure wins over activity that arrives after it, even when it was accepted before (an
event waiting in the event journal, an unsubscribe kept in the inbox while the store was
busy, a shop webhook): the writers of such activity ask :func:`winback.store.tombstones.erased_among` in their own
write transaction and drop events, tracking, profile and consent changes for erased
contacts. Orders still attach to the tombstone, as the orders from before the erasure stay.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    update,
)

from winback.clock import as_utc
from winback.errors import NotFound
from winback.store import activity
from winback.store.schema import (
    ANALYTICS_COLUMNS,
    CHANNELS,
    contact_tags,
    contacts,
    erasures,
    events,
    flow_entries,
    outbox,
    suppressions,
)

#: Contact columns nulled by an erasure.
ERASED_COLUMNS = (
    "email",
    "phone",
    "first_name",
    "last_name",
    "birthday",
    "timezone",
    "locale",
    "last_email_opened",
    "last_email_link_clicked",
    "last_seen",
    *ANALYTICS_COLUMNS,
    "analyzed_at",
)


def _pseudonymise_suppressions(conn: Connection, victims: Any) -> None:
    from winback.delivery.worker.policies import HASHED_PREFIX, hashed_address

    rows = _suppressions_of(conn, victims)
    if not rows:
        return
    hashed = {
        oid: (channel, hashed_address(channel, address)) for oid, (channel, address) in rows.items()
    }
    taken = _listed(conn, hashed.values())  # hashed entries that exist already
    doomed: list[int] = []
    renamed: list[dict[str, Any]] = []
    for oid, pair in sorted(hashed.items()):
        if rows[oid][1].startswith(HASHED_PREFIX):
            continue
        if pair in taken:
            doomed.append(oid)  # the address is blocked under its hash already
            continue
        taken.add(pair)
        renamed.append({"_id": oid, "_address": pair[1]})
    if doomed:
        conn.execute(delete(suppressions).where(suppressions.c.id.in_(doomed)))
    if renamed:
        conn.execute(
            update(suppressions)
            .where(suppressions.c.id == bindparam("_id"))
            .values(address=bindparam("_address"), contact_id=None, detail=None),
            renamed,
        )


def _suppressions_of(conn: Connection, victims: Any) -> dict[int, tuple[str, str]]:
    """The suppressions (id -> channel, address) of the contacts and of their email
    addresses and phone numbers."""
    from winback.channels import ADDRESS_COLUMNS, normalise_address

    addresses: dict[str, set[str]] = {channel: set() for channel in ADDRESS_COLUMNS}
    columns = [contacts.c[column] for column in ADDRESS_COLUMNS.values()]
    for found in conn.execute(select(*columns).where(contacts.c.id.in_(victims))):
        for channel, address in zip(ADDRESS_COLUMNS, found, strict=True):
            if address:
                addresses[channel].add(normalise_address(channel, address))
    rows: dict[int, tuple[str, str]] = {}
    for found in conn.execute(
        select(suppressions.c.id, suppressions.c.channel, suppressions.c.address).where(
            suppressions.c.contact_id.in_(victims)
        )
    ):
        rows[int(found.id)] = (str(found.channel), str(found.address))
    for channel, wanted in addresses.items():
        for oid, address in _by_address(conn, channel, wanted, suppressions.c.id):
            rows[int(oid)] = (channel, str(address))
    return rows


def _listed(conn: Connection, pairs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """The (channel, address) pairs that are suppressions."""
    wanted: dict[str, set[str]] = {}
    for channel, address in pairs:
        wanted.setdefault(channel, set()).add(address)
    return {
        (channel, str(address))
        for channel, addresses in wanted.items()
        for (address,) in _by_address(conn, channel, addresses)
    }


def _by_address(
    conn: Connection, channel: str, addresses: Iterable[str], *columns: Any
) -> Iterator[Any]:
    """Rows (``columns``, then the address) of the channel's suppressions of ``addresses``."""
    listed = sorted(addresses)
    for i in range(0, len(listed), 900):
        yield from conn.execute(
            select(*columns, suppressions.c.address).where(
                and_(
                    suppressions.c.channel == channel,
                    suppressions.c.address.in_(listed[i : i + 900]),
                )
            )
        )


def erase_contacts(
    conn: Connection,
    chosen: Any,
    *,
    at: datetime,
    source: str,
    reason: str | None = None,
    keep_flow_id: int | None = None,
) -> int:
    """Erase the contacts whose ids ``chosen`` (a SELECT of contact ids, or a list) yields,
    skipping those erased already; returns how many were erased. ``keep_flow_id``: leave
    that flow's entries alone (the engine moves them on itself)."""
    at = as_utc(at)
    # correlate(None): the id subqueries are used inside UPDATEs of the very tables they read
    # (flow_entries); they must not be correlated to the statement's target row.
    ids: Any = list(chosen) if isinstance(chosen, Sequence) else chosen.correlate(None)
    todo = and_(contacts.c.id.in_(ids), contacts.c.erased_at.is_(None))
    if conn.dialect.name == "postgresql":
        # A writer of late activity (the event applier, a kept unsubscribe, a webhook) holds
        # its contacts FOR KEY SHARE (:func:`erased_among`): the erasure waits for it and
        # then erases what it wrote, or it waits for the erasure and then sees it.
        conn.execute(select(contacts.c.id).where(todo).order_by(contacts.c.id).with_for_update())
    n = int(conn.execute(select(func.count()).select_from(contacts).where(todo)).scalar_one())
    if not n:
        return 0
    victims = select(contacts.c.id).where(todo).correlate(None)
    conn.execute(
        insert(erasures).from_select(
            ["contact_id", "at", "source", "reason"],
            select(
                contacts.c.id,
                literal(at, contacts.c.erased_at.type),
                literal(source),
                literal(reason, erasures.c.reason.type),
            ).where(todo),
        )
    )
    for channel in CHANNELS:
        activity.set_consent(
            conn, victims, channel, False, source=f"erasure:{source}", at=at, now=at
        )
    conn.execute(update(events).where(events.c.contact_id.in_(victims)).values(properties=None))
    conn.execute(
        update(outbox)
        .where(and_(outbox.c.contact_id.in_(victims), outbox.c.status == "pending"))
        .values(status="skipped", last_error="contact erased")
    )
    conn.execute(update(outbox).where(outbox.c.contact_id.in_(victims)).values(payload=None))
    _pseudonymise_suppressions(conn, victims)
    conn.execute(delete(contact_tags).where(contact_tags.c.contact_id.in_(victims)))
    active = and_(flow_entries.c.contact_id.in_(victims), flow_entries.c.status == "active")
    if keep_flow_id is not None:
        active = and_(active, flow_entries.c.flow_id != keep_flow_id)
    conn.execute(
        update(flow_entries)
        .where(active)
        .values(status="exited", exit_reason="erased", exited_at=at, wake_at=None, waiting=False)
    )
    values: dict[str, Any] = {c: None for c in ERASED_COLUMNS}
    values.update(
        attributes={},
        **{f"{channel}_consent": False for channel in CHANNELS},
        erased_at=at,
        updated_at=at,
    )
    conn.execute(update(contacts).where(todo).values(values))
    return n


def erase_contact(
    engine: Engine, contact_id: int, *, at: datetime, reason: str | None, source: str
) -> dict[str, Any]:
    """Erase one contact on request, in its own transaction; returns what was done."""
    with engine.begin() as conn:
        erased = erase_contacts(conn, [contact_id], at=at, source=source, reason=reason)
        row = conn.execute(
            select(contacts.c.customer_id, contacts.c.erased_at).where(contacts.c.id == contact_id)
        ).one()
    if row.erased_at is None:  # pragma: no cover - erase_contacts sets it
        raise NotFound(f"contact #{contact_id} could not be erased")
    return {
        "contact_id": contact_id,
        "customer_id": row.customer_id,
        "erased": bool(erased),
        "erased_at": row.erased_at,
    }


def erasure_log(conn: Connection, contact_id: int) -> list[dict[str, Any]]:
    return [
        dict(r)
        for r in conn.execute(
            select(erasures.c.at, erasures.c.source, erasures.c.reason)
            .where(erasures.c.contact_id == contact_id)
            .order_by(erasures.c.id)
        ).mappings()
    ]
