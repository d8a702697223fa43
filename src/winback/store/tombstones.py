"""Tombstones: which contacts were erased (:mod:`winback.erasure`), asked by the writers of
activity that may arrive after an erasure, in their own write transaction."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, select

from winback.store.schema import contacts, erasures


def erased_among(conn: Connection, contact_ids: Iterable[int]) -> set[int]:
    """The erased contacts among ``contact_ids``, for a writer of activity that arrives
    late (an event accepted before the erasure and applied after it, a kept unsubscribe, a
    webhook): erasure wins, so such a writer drops what it has for them. Call it in the
    write transaction that would write: SQLite has one writer at a time, so an erasure is
    either committed before (and seen) or starts after; PostgreSQL locks the contact rows
    ``FOR KEY SHARE`` until the commit, which an erasure's ``FOR UPDATE`` waits for."""
    ids = sorted({int(i) for i in contact_ids})
    if not ids:
        return set()
    if (
        conn.dialect.name != "postgresql"
        and conn.execute(select(erasures.c.id).limit(1)).first() is None
    ):
        return set()  # no erasure at all (exact under SQLite's write lock)
    found: set[int] = set()
    for i in range(0, len(ids), 900):
        query = (
            select(contacts.c.id, contacts.c.erased_at)
            .where(contacts.c.id.in_(ids[i : i + 900]))
            .order_by(contacts.c.id)
        )
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(key_share=True)
        found.update(int(r.id) for r in conn.execute(query) if r.erased_at is not None)
    return found
