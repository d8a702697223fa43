"""Incremental maintenance of the standard contact attributes.

After each batch, the rows that were *newly* stored are aggregated per contact in Python and
applied with one ``executemany`` UPDATE per attribute group, using portable ``CASE``
expressions (only move a time forward, or back for ``first_purchase_at``). Nothing ever
rescans the events or orders tables.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from winback.ingest.bulk import Dialect

#: Event types that mean the customer was on the site.
VISIT_TYPES = frozenset({"page_view", "product_view", "cart_add"})

_LATEST = "{col} = CASE WHEN {col} IS NULL OR {col} < ? THEN ? ELSE {col} END"


def apply_orders(
    cur: Any, dialect: Dialect, new_orders: Iterable[tuple[Any, ...]], now: Any
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
    statement = dialect.sql(
        "UPDATE contacts SET orders_count = orders_count + ?, "  # noqa: S608 (fixed names)
        "revenue_total = revenue_total + ?, "
        "first_purchase_at = CASE WHEN first_purchase_at IS NULL OR first_purchase_at > ? "
        "THEN ? ELSE first_purchase_at END, "
        + _LATEST.format(col="last_purchase_at")
        + ", updated_at = ? WHERE id = ?"
    )
    cur.executemany(
        statement,
        [
            (n, total, first, first, last, last, now, cid)
            for cid, (n, total, first, last) in per.items()
        ],
    )
    return len(per)


def apply_events(
    cur: Any, dialect: Dialect, new_events: Iterable[tuple[Any, ...]], now: Any
) -> None:
    """Advance last_email_opened (human opens only), last_email_link_clicked (human clicks)
    and last_seen (page_view, product_view, cart_add) for new events
    ``(event_key, contact_id, type, occurred_at, machine)``."""
    latest: dict[str, dict[int, Any]] = {
        "last_email_opened": {},
        "last_email_link_clicked": {},
        "last_seen": {},
    }
    opened, clicked, seen = latest.values()
    for _key, contact_id, kind, at, machine in new_events:
        if kind == "email_opened":
            target = None if machine else opened
        elif kind == "email_clicked":
            target = None if machine else clicked
        elif kind in VISIT_TYPES:
            target = seen
        else:
            target = None
        if target is not None:
            before = target.get(contact_id)
            if before is None or at > before:
                target[contact_id] = at
    for column, values in latest.items():
        if values:
            cur.executemany(
                dialect.sql(
                    "UPDATE contacts SET " + _LATEST.format(col=column) + ", updated_at = ? "  # noqa: S608
                    "WHERE id = ?"
                ),
                [(at, at, now, cid) for cid, at in values.items()],
            )


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
