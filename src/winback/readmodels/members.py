"""Pages of contacts for the dashboard's member lists: a segment's current members and the
customers of an RFM cell or segment, in one row layout (:data:`ROW_COLUMNS`), read by
keyset (contact ids after or before a given one), never by offset.

Queries, each reading at most ``limit + 1`` rows over an index:

- a segment's members: ``segment_membership`` by its partial unique index
  ``(segment_id, contact_id) WHERE exited_at IS NULL``, joined to ``contacts`` by id;
- RFM members: ``contacts`` by primary key filtered on ``rfm_r``/``rfm_f`` or
  ``rfm_segment`` (the columns the latest ``winback analyze`` wrote);
- a search: an exact customer id (its unique index), else an email prefix: the range of
  ``ix_contacts_email`` read in its order, (email, id), each row checked against the
  membership index or the RFM filter, so a page of a broad prefix stops at its own rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Select, and_, exists, select, tuple_

from winback.errors import NotFound
from winback.store.schema import contacts, segment_membership, segments

#: The columns of every member row, in the order shown.
ROW_COLUMNS = (
    "contact_id",
    "customer_id",
    "email",
    "first_name",
    "last_name",
    "orders_count",
    "revenue_total",
    "last_purchase_at",
    "rfm_segment",
    "p_alive",
)
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
#: Upper bound appended to a prefix for an index range (above every character in use).
_TOP = "\U0010ffff"


@dataclass(frozen=True)
class MemberPage:
    """One page of rows: ``after`` / ``before`` are the contact ids to ask for the next /
    previous page with (None: no such page); ``total`` when known without counting."""

    rows: list[dict[str, Any]]
    after: int | None = None
    before: int | None = None
    total: int | None = None
    query: str = ""
    filters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RfmSelection:
    """An RFM cell (``r`` and ``f`` scores) or an RFM segment."""

    r: int | None = None
    f: int | None = None
    segment: str | None = None

    def __post_init__(self) -> None:
        cell = self.r is not None and self.f is not None
        if cell == (self.segment is not None) or (self.r is None) != (self.f is None):
            raise ValueError("choose an RFM cell (r and f) or a segment")
        for name, score in (("r", self.r), ("f", self.f)):
            if score is not None and not 1 <= score <= 5:
                raise ValueError(f"{name}={score}: expected a score from 1 to 5")

    def condition(self) -> ColumnElement[bool]:
        c = contacts.c
        if self.segment is not None:
            return c.rfm_segment == self.segment
        return and_(c.rfm_r == self.r, c.rfm_f == self.f)

    def title(self) -> str:
        if self.segment is not None:
            return self.segment
        return f"R={self.r}, F={self.f}"

    def filters(self) -> dict[str, str]:
        if self.segment is not None:
            return {"segment": self.segment}
        return {"r": str(self.r), "f": str(self.f)}


def _row_select() -> Select[Any]:
    c = contacts.c
    return select(
        c.id.label("contact_id"),
        *(c[name] for name in ROW_COLUMNS[1:]),
    )


def _keys(conn: Connection, search: bool, contact_id: int) -> tuple[Any, ...]:
    """The sort key of a contact in a listing: its id, or (email, id) in a search."""
    if not search:
        return (contact_id,)
    email = conn.execute(select(contacts.c.email).where(contacts.c.id == contact_id)).scalar()
    return (email or "", contact_id)


def _page(
    engine: Engine,
    query: Select[Any],
    *,
    after: int | None,
    before: int | None,
    limit: int,
    search: bool = False,
    id_column: Any = None,
) -> tuple[list[dict[str, Any]], int | None, int | None]:
    """Run a keyset page of ``query``: rows in contact id order, or in (email, id) order for
    a ``search`` (the order of ``ix_contacts_email``, so that a page of a broad prefix
    reads its own rows only). ``after`` / ``before`` are the contact ids a page starts after
    or ends before; ``id_column`` is the column of the contact id to order by (that of the
    index the listing reads)."""
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    c = contacts.c
    ident = c.id if id_column is None else id_column
    order: list[Any] = [c.email, c.id] if search else [ident]
    key = tuple_(*order) if search else ident
    with engine.connect() as conn:
        if before is not None:
            bound = _keys(conn, search, before)
            query = query.where(key < (tuple_(*bound) if search else bound[0]))
            query = query.order_by(*(o.desc() for o in order))
        else:
            if after:
                bound = _keys(conn, search, after)
                query = query.where(key > (tuple_(*bound) if search else bound[0]))
            query = query.order_by(*order)
        rows = [dict(r) for r in conn.execute(query.limit(limit + 1)).mappings()]
    more = len(rows) > limit
    rows = rows[:limit]
    if before is not None:
        rows.reverse()
        has_next, has_previous = True, more
    else:
        has_next, has_previous = more, bool(after)
    if not rows:
        return rows, None, None
    return (
        rows,
        rows[-1]["contact_id"] if has_next else None,
        rows[0]["contact_id"] if has_previous else None,
    )


def _search(query: Select[Any], text: str) -> Select[Any]:
    """Members whose email starts with ``text`` (case-insensitive: emails are stored in
    lower case): a range of ``ix_contacts_email``."""
    c = contacts.c
    prefix = text.strip().lower()
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return query.where(
        c.email >= prefix, c.email < prefix + _TOP, c.email.like(escaped + "%", escape="\\")
    )


def _by_customer_id(engine: Engine, query: Select[Any], text: str) -> list[dict[str, Any]]:
    """The member whose customer id is ``text`` exactly, if any (the unique index)."""
    with engine.connect() as conn:
        found = conn.execute(query.where(contacts.c.customer_id == text.strip()).limit(1))
        return [dict(r) for r in found.mappings()]


def _searched(
    engine: Engine,
    query: Select[Any],
    q: str,
    *,
    after: int | None,
    before: int | None,
    limit: int,
    filters: dict[str, str],
) -> MemberPage:
    """A search: the member with that exact customer id, else the members whose email
    starts with it, paged in email order."""
    if after is None and before is None:
        exact = _by_customer_id(engine, query, q)
        if exact:
            return MemberPage(exact, None, None, None, q.strip(), filters)
    rows, nxt, prev = _page(
        engine, _search(query, q), after=after, before=before, limit=limit, search=True
    )
    return MemberPage(rows, nxt, prev, None, q.strip(), filters)


def segment_id(engine: Engine, name: str) -> tuple[int, int | None]:
    """The stored id and member count of segment ``name`` (NotFound when never refreshed)."""
    with engine.connect() as conn:
        row = conn.execute(
            select(segments.c.id, segments.c.member_count).where(segments.c.name == name)
        ).first()
    if row is None:
        raise NotFound(
            f"segment {name!r} has not been refreshed yet; run `winback segments refresh`"
        )
    return int(row[0]), (int(row[1]) if row[1] is not None else None)


def segment_members(
    engine: Engine,
    name: str,
    *,
    q: str = "",
    after: int | None = None,
    before: int | None = None,
    limit: int = PAGE_SIZE,
) -> MemberPage:
    """A page of the current members of segment ``name`` (``q``: search)."""
    sid, count = segment_id(engine, name)
    sm = segment_membership
    member = exists().where(
        sm.c.segment_id == sid, sm.c.contact_id == contacts.c.id, sm.c.exited_at.is_(None)
    )
    if q.strip():
        query = _row_select().where(member)
        return _searched(
            engine, query, q, after=after, before=before, limit=limit, filters=_size(limit)
        )
    query = (
        _row_select()
        .select_from(sm.join(contacts, contacts.c.id == sm.c.contact_id))
        .where(sm.c.segment_id == sid, sm.c.exited_at.is_(None))
    )
    rows, nxt, prev = _page(
        engine, query, after=after, before=before, limit=limit, id_column=sm.c.contact_id
    )
    return MemberPage(rows, nxt, prev, count, "", _size(limit))


def rfm_members(
    engine: Engine,
    selection: RfmSelection,
    *,
    q: str = "",
    after: int | None = None,
    before: int | None = None,
    limit: int = PAGE_SIZE,
    total: int | None = None,
) -> MemberPage:
    """A page of the customers of an RFM cell or segment (``total``: their number, from the
    analysis snapshot, shown as given)."""
    query = _row_select().where(selection.condition())
    filters = {**selection.filters(), **_size(limit)}
    if q.strip():
        return _searched(engine, query, q, after=after, before=before, limit=limit, filters=filters)
    if total == 0:  # an empty cell: nothing to walk the contacts for
        return MemberPage([], None, None, 0, "", filters)
    rows, nxt, prev = _page(engine, query, after=after, before=before, limit=limit)
    return MemberPage(rows, nxt, prev, total, "", filters)


def _size(limit: int) -> dict[str, str]:
    """The page size as a filter to keep in links, when it is not the default."""
    return {} if limit == PAGE_SIZE else {"limit": str(limit)}
