"""Incremental maintenance of the standard contact attributes.

After each batch, the rows that were *newly* stored are aggregated per contact in Python and
applied with one set-based ``UPDATE ... FROM`` a staging table of those aggregates (SQLite
3.33+ and PostgreSQL), using portable ``CASE`` expressions (only move a time forward, or back for ``first_purchase_at``). Nothing ever
rescans the events or orders tables.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection

from winback.ingest import bulk
from winback.ingest.bulk import Dialect

#: Event types that mean the customer was on the site.
VISIT_TYPES = frozenset({"page_view", "product_view", "cart_add"})


def _latest(column: str, value: str) -> str:
    """SQL moving ``column`` forward to ``value`` (a staged column, maybe NULL)."""
    return (
        f"{column} = CASE WHEN {value} IS NOT NULL AND (contacts.{column} IS NULL "
        f"OR contacts.{column} < {value}) THEN {value} ELSE contacts.{column} END"
    )


def apply_orders(
    conn: Connection, dialect: Dialect, new_orders: Iterable[tuple[Any, ...]], now: Any
) -> int:
    """Advance orders_count, revenue_total, first/last_purchase_at for new orders
    ``(order_id, contact_id, ordered_at, amount)``. Returns how many contacts changed."""
    per: dict[int, list[Any]] = {}
    for _order_id, contact_id, at, amount in new_orders:
        agg = per.get(contact_id)
        if agg is None:
            per[contact_id] = [1, amount, at, at]
        else:
            agg[0] += 1
            agg[1] += amount
            if at < agg[2]:
                agg[2] = at
            if at > agg[3]:
                agg[3] = at
    if not per:
        return 0
    cur = bulk.stage(conn, dialect, "wb_stage_purchases", [(cid, *per[cid]) for cid in sorted(per)])
    cur.execute(
        dialect.sql(
            "UPDATE contacts SET orders_count = contacts.orders_count + a.n, "  # noqa: S608
            "revenue_total = contacts.revenue_total + a.total, "
            "first_purchase_at = CASE WHEN contacts.first_purchase_at IS NULL "
            "OR contacts.first_purchase_at > a.first_at THEN a.first_at "
            "ELSE contacts.first_purchase_at END, "
            + _latest("last_purchase_at", "a.last_at")
            + ", updated_at = ? FROM wb_stage_purchases a WHERE contacts.id = a.contact_id"
        ),
        (now,),
    )
    return len(per)


def sqlite_apply_orders(cur: Any, new_orders: list[tuple[int, str, str]], now: str) -> int:
    """SQLite: advance the purchase attributes for new orders ``(contact_id, ordered_at,
    amount)`` (times as stored text; amounts as text, summed as floats since SQLite keeps
    them as REAL). The touched contacts' current times are read first (the caller holds the
    write lock), so that one ``executemany`` per shape of change sets an indexed column
    (``last_purchase_at``, ``updated_at``) only where its value changes: every index entry
    rewritten costs, and an import touches most contacts in many of its batches. Returns
    how many contacts changed."""
    per: dict[int, list[Any]] = {}
    for contact_id, at, amount in new_orders:
        agg = per.get(contact_id)
        if agg is None:
            per[contact_id] = [1, float(amount), at, at]
        else:
            agg[0] += 1
            agg[1] += float(amount)
            if at < agg[2]:
                agg[2] = at
            elif at > agg[3]:
                agg[3] = at
    if not per:
        return 0
    ids = sorted(per)
    cur.execute(
        "SELECT c.id, c.first_purchase_at, c.last_purchase_at, c.updated_at "
        "FROM json_each(?) j JOIN contacts c ON c.id = j.value",
        (json.dumps(ids),),
    )
    current = {r[0]: r[1:] for r in cur.fetchall()}
    shapes: dict[tuple[bool, bool], list[tuple[Any, ...]]] = {}
    for cid in ids:
        n, total, first_at, last_at = per[cid]
        first, last, updated = current[cid]
        if first is not None and first < first_at:
            first_at = first
        later = last is None or last < last_at
        touched = updated != now
        params: tuple[Any, ...] = (n, total, first_at)
        if later:
            params += (last_at,)
        if touched:
            params += (now,)
        shapes.setdefault((later, touched), []).append((*params, cid))
    for (later, touched), rows in shapes.items():
        cur.executemany(
            "UPDATE contacts SET orders_count = orders_count + ?, "  # noqa: S608 (fixed text)
            "revenue_total = revenue_total + ?, first_purchase_at = ?"
            + (", last_purchase_at = ?" if later else "")
            + (", updated_at = ?" if touched else "")
            + " WHERE id = ?",
            rows,
        )
    return len(per)


def apply_events(
    conn: Connection, dialect: Dialect, new_events: Iterable[tuple[Any, ...]], now: Any
) -> int:
    """Advance last_email_opened (human opens only), last_email_link_clicked (human clicks)
    and last_seen (page_view, product_view, cart_add) for new events
    ``(event_key, contact_id, type, occurred_at, machine)``. Returns contacts changed."""
    per: dict[int, list[Any]] = {}
    for _key, contact_id, kind, at, machine in new_events:
        if kind == "email_opened":
            slot = None if machine else 0
        elif kind == "email_clicked":
            slot = None if machine else 1
        elif kind in VISIT_TYPES:
            slot = 2
        else:
            slot = None
        if slot is not None:
            agg = per.setdefault(contact_id, [None, None, None])
            if agg[slot] is None or at > agg[slot]:
                agg[slot] = at
    if not per:
        return 0
    cur = bulk.stage(conn, dialect, "wb_stage_activity", [(cid, *per[cid]) for cid in sorted(per)])
    cur.execute(
        dialect.sql(
            "UPDATE contacts SET "  # noqa: S608 (fixed names)
            + ", ".join(
                (
                    _latest("last_email_opened", "a.opened"),
                    _latest("last_email_link_clicked", "a.clicked"),
                    _latest("last_seen", "a.seen"),
                )
            )
            + ", updated_at = ? FROM wb_stage_activity a WHERE contacts.id = a.contact_id"
        ),
        (now,),
    )
    return len(per)


def unsubscribed(new_events: Iterable[tuple[Any, ...]]) -> dict[int, Any]:
    """Latest email_unsubscribed time per contact among new events."""
    out: dict[int, Any] = {}
    for _key, contact_id, kind, at, _machine in new_events:
        if kind == "email_unsubscribed":
            before = out.get(contact_id)
            if before is None or at > before:
                out[contact_id] = at
    return out


def revoke_email_consent(
    cur: Any, dialect: Dialect, latest: dict[int, Any], source: str, now: Any
) -> int:
    """Set email consent to false for contacts that unsubscribed and log each change."""
    if not latest:
        return 0
    ids = list(latest)
    changed: list[int] = []
    false = dialect.flag(False)
    for i in range(0, len(ids), 900):
        chunk = ids[i : i + 900]
        marks = ", ".join("?" for _ in chunk)
        cur.execute(
            dialect.sql(
                f"SELECT id FROM contacts WHERE id IN ({marks}) "  # noqa: S608
                "AND (email_consent IS NULL OR email_consent <> ?)"
            ),
            (*chunk, false),
        )
        changed.extend(int(r[0]) for r in cur.fetchall())
    if changed:
        cur.executemany(
            dialect.sql("UPDATE contacts SET email_consent = ?, updated_at = ? WHERE id = ?"),
            [(false, now, cid) for cid in changed],
        )
        cur.executemany(
            dialect.sql(
                "INSERT INTO consent_log (contact_id, channel, granted, at, source) "
                "VALUES (?, 'email', ?, ?, ?)"
            ),
            [(cid, false, latest[cid], source) for cid in changed],
        )
    return len(changed)
