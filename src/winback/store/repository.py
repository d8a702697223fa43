"""Set-based operations on the store that every feature shares: contacts by external id,
consent, tags. Bulk loading of orders and events lives in :mod:`winback.ingest`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, insert, select, update

from winback.clock import as_utc
from winback.errors import NotFound
from winback.store.schema import CHANNELS, consent_log, contact_tags, contacts, tag_history


class Store:
    """Thin, typed access to the tables for operations used across features."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- contacts ---------------------------------------------------------------------------
    def contact_id(self, customer_id: str, *, conn: Connection | None = None) -> int:
        """Internal id of the contact with this external ``customer_id``."""
        with _conn(self.engine, conn) as c:
            found = c.execute(
                select(contacts.c.id).where(contacts.c.customer_id == customer_id)
            ).scalar()
        if found is None:
            raise NotFound(f"no contact with customer_id {customer_id!r}")
        return int(found)

    def get_contact(self, customer_id: str) -> dict[str, Any]:
        with self.engine.connect() as c:
            row = (
                c.execute(select(contacts).where(contacts.c.customer_id == customer_id))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound(f"no contact with customer_id {customer_id!r}")
        return dict(row)

    def ensure_contacts(
        self, customer_ids: Iterable[str], *, at: datetime, conn: Connection
    ) -> dict[str, int]:
        """Map external ids to internal ids, creating bare contacts for unknown ones (an order
        or event for an unknown customer creates that customer rather than being lost)."""
        wanted = sorted(set(customer_ids))
        found: dict[str, int] = {}
        for chunk in _chunks(wanted, 900):
            for cid, iid in conn.execute(
                select(contacts.c.customer_id, contacts.c.id).where(
                    contacts.c.customer_id.in_(chunk)
                )
            ):
                found[cid] = int(iid)
        missing = [cid for cid in wanted if cid not in found]
        if missing:
            now = as_utc(at)
            conn.execute(
                insert(contacts),
                [
                    {
                        "customer_id": cid,
                        "attributes": {},
                        "orders_count": 0,
                        "revenue_total": 0,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for cid in missing
                ],
            )
            for chunk in _chunks(missing, 900):
                for cid, iid in conn.execute(
                    select(contacts.c.customer_id, contacts.c.id).where(
                        contacts.c.customer_id.in_(chunk)
                    )
                ):
                    found[cid] = int(iid)
        return found

    def count_contacts(self) -> int:
        with self.engine.connect() as c:
            return int(c.execute(select(func.count()).select_from(contacts)).scalar_one())

    # -- consent ----------------------------------------------------------------------------
    def set_consent(
        self,
        contact_id: int,
        channel: str,
        granted: bool,
        *,
        at: datetime,
        source: str,
        conn: Connection | None = None,
    ) -> bool:
        """Record a consent change; returns False when it changed nothing."""
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r} (expected one of {', '.join(CHANNELS)})")
        column = contacts.c[f"{channel}_consent"]
        with _begin(self.engine, conn) as c:
            # One conditional UPDATE, not a read then a write: of two concurrent changes to
            # the same value (PostgreSQL, READ COMMITTED), exactly one changes a row and logs.
            changed = c.execute(
                update(contacts)
                .where(and_(contacts.c.id == contact_id, column.is_not(granted)))
                .values({column: granted, contacts.c.updated_at: as_utc(at)})
            ).rowcount
            if not changed:
                return False
            c.execute(
                insert(consent_log).values(
                    contact_id=contact_id,
                    channel=channel,
                    granted=granted,
                    at=as_utc(at),
                    source=source,
                )
            )
        return True

    # -- tags -------------------------------------------------------------------------------
    def add_tag(
        self,
        contact_ids: Sequence[int],
        tag: str,
        *,
        at: datetime,
        source: str,
        conn: Connection | None = None,
    ) -> list[int]:
        """Tag contacts (set-based); returns the ids that did not have the tag before."""
        at = as_utc(at)
        with _begin(self.engine, conn) as c:
            have: set[int] = set()
            for chunk in _chunks(list(contact_ids), 900):
                have.update(
                    int(r)
                    for r in c.execute(
                        select(contact_tags.c.contact_id).where(
                            and_(contact_tags.c.tag == tag, contact_tags.c.contact_id.in_(chunk))
                        )
                    ).scalars()
                )
            new = sorted({int(i) for i in contact_ids} - have)
            if new:
                c.execute(
                    insert(contact_tags),
                    [
                        {"contact_id": i, "tag": tag, "added_at": at, "added_by": source}
                        for i in new
                    ],
                )
                c.execute(
                    insert(tag_history),
                    [
                        {"contact_id": i, "tag": tag, "action": "added", "at": at, "source": source}
                        for i in new
                    ],
                )
        return new

    def remove_tag(
        self,
        contact_ids: Sequence[int],
        tag: str,
        *,
        at: datetime,
        source: str,
        conn: Connection | None = None,
    ) -> list[int]:
        """Untag contacts (set-based); returns the ids that had the tag."""
        at = as_utc(at)
        with _begin(self.engine, conn) as c:
            had: list[int] = []
            for chunk in _chunks(list(contact_ids), 900):
                had.extend(
                    int(r)
                    for r in c.execute(
                        select(contact_tags.c.contact_id).where(
                            and_(contact_tags.c.tag == tag, contact_tags.c.contact_id.in_(chunk))
                        )
                    ).scalars()
                )
            for chunk in _chunks(had, 900):
                c.execute(
                    delete(contact_tags).where(
                        and_(contact_tags.c.tag == tag, contact_tags.c.contact_id.in_(chunk))
                    )
                )
            if had:
                c.execute(
                    insert(tag_history),
                    [
                        {
                            "contact_id": i,
                            "tag": tag,
                            "action": "removed",
                            "at": at,
                            "source": source,
                        }
                        for i in had
                    ],
                )
        return sorted(had)

    def tags_of(self, contact_id: int) -> list[str]:
        with self.engine.connect() as c:
            return sorted(
                c.execute(
                    select(contact_tags.c.tag).where(contact_tags.c.contact_id == contact_id)
                ).scalars()
            )


class _conn:
    """Use the caller's connection, or open (and close) one."""

    def __init__(self, engine: Engine, conn: Connection | None) -> None:
        self.engine, self.given = engine, conn
        self.own: Connection | None = None

    def __enter__(self) -> Connection:
        if self.given is not None:
            return self.given
        own = self.engine.connect()
        self.own = own
        return own

    def __exit__(self, *exc: object) -> None:
        if self.own is not None:
            self.own.close()


class _begin(_conn):
    """Use the caller's connection (inside its transaction), or run in a new transaction."""

    def __enter__(self) -> Connection:
        if self.given is not None:
            return self.given
        self._tx = self.engine.begin()
        return self._tx.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self.given is None:
            self._tx.__exit__(*exc)


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
