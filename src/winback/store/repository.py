"""Set-based operations on the store that every feature shares: contacts by external id,
consent, tags (written by :mod:`winback.store.activity`). Bulk loading of orders and events lives in :mod:`winback.ingest`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, insert, select

from winback.clock import as_utc
from winback.errors import NotFound
from winback.store import activity
from winback.store.schema import contact_tags, contacts


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
            for cid, iid in conn.execute(_CONTACT_IDS, {"customer_ids": chunk}):
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
                for cid, iid in conn.execute(_CONTACT_IDS, {"customer_ids": chunk}):
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
        now: datetime | None = None,
        conn: Connection | None = None,
    ) -> bool:
        """Record a consent change at ``at`` (``updated_at = now``, default ``at``); returns
        False when it changed nothing."""
        with _begin(self.engine, conn) as c:
            changed = activity.set_consent(
                c, [contact_id], channel, granted, source=source, at=at, now=now or at
            )
        return bool(changed)

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
        with _begin(self.engine, conn) as c:
            return activity.add_tags(c, contact_ids, tag, source=source, at=at)

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
        with _begin(self.engine, conn) as c:
            return activity.remove_tags(c, contact_ids, tag, source=source, at=at)

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


#: Internal ids by external ids (``customer_ids``: a list), built once.
_CONTACT_IDS = select(contacts.c.customer_id, contacts.c.id).where(
    contacts.c.customer_id.in_(bindparam("customer_ids", expanding=True))
)


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
