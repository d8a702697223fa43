"""Contact activity: the one place that writes what customers did to their contact rows.

Every writer calls these functions: file imports, the event API and the tracking links,
the flow engine, the simulator, the CLI. Each takes a connection (the caller's transaction)
and a *set* of changes, either as rows or as a SQL selectable, and writes them with a few
set-based statements:

- :func:`apply_orders`: new orders advance ``orders_count``, ``revenue_total``,
  ``first_purchase_at`` (only back) and ``last_purchase_at`` (only forward);
  :func:`recount_orders` sets them from the stored counted purchases, for contacts one of
  whose orders changed status or refund;
- :func:`apply_events`: new events move ``last_email_opened`` (human opens),
  ``last_email_link_clicked`` (human clicks) and ``last_seen`` (site visits, whatever their
  machine flag) forward, never back; a time is taken as given (nothing is clamped);
- :func:`add_tags` / :func:`remove_tags`: tags, with one ``tag_history`` row per real change;
- :func:`set_consent`: consent per channel, with one ``consent_log`` row per real change.

Those that change the contact row stamp ``contacts.updated_at`` (what incremental segment
refresh looks for) on the contacts they changed, and on those only. Tags live outside the
contact row and leave it alone: ``tag_history`` is their trace (segment refresh and flow
triggers read it), and rewriting every tagged contact would cost a flow's tag step more
than the tagging itself.

Concurrency. On PostgreSQL each function is one statement per kind of row it writes, with
the change and its history in one statement (data-modifying ``WITH``), so that concurrent
writers neither lose an update (counts are added in SQL, times compared in SQL) nor log a
change twice (only the rows a statement really inserted, deleted or changed are logged). On
SQLite the transaction holds the write lock from its first write on, so the statements
after the first see nothing change under them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, overload

from sqlalchemy import (
    BigInteger,
    Connection,
    DateTime,
    Integer,
    Numeric,
    Select,
    String,
    Subquery,
    and_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    table,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeEngine

from winback.store import purchases
from winback.store.driver import driver_count, driver_rows
from winback.store.schema import CHANNELS, consent_log, contact_tags, contacts, orders, tag_history
from winback.store.types import UTCDateTime, sqlite_text

#: Which standard attribute each event type moves forward (to the event's time).
ATTRIBUTE_OF_EVENT = {
    "email_opened": "last_email_opened",
    "email_clicked": "last_email_link_clicked",
    "page_view": "last_seen",
    "product_view": "last_seen",
    "cart_add": "last_seen",
}
#: Events whose machine-flagged rows (privacy proxies, link scanners) move nothing.
HUMAN_ONLY = frozenset({"email_opened", "email_clicked"})
#: The order of the event attributes in the per-contact aggregates.
EVENT_ATTRIBUTES = ("last_email_opened", "last_email_link_clicked", "last_seen")

#: An order: ``(contact_id, ordered_at, amount)``; the time as a datetime or as the text
#: SQLite stores, the amount as a number or its text.
OrderRow = tuple[int, Any, Any]
#: An event: ``(contact_id, type, occurred_at, machine)``.
EventRow = tuple[int, str, Any, Any]


# -- orders -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredOrders:
    """The orders this transaction stored in ``orders`` with ids above ``after`` (the largest
    id before it stored them): read where they are instead of passed as rows."""

    after: int


def apply_orders(
    conn: Connection,
    new_orders: Iterable[OrderRow] | Select[Any] | StoredOrders,
    *,
    now: datetime,
) -> int:
    """Advance the purchase attributes of the contacts of ``new_orders`` (orders just stored
    in this transaction): rows ``(contact_id, ordered_at, amount)`` of counted purchases at
    their net amount (:mod:`winback.store.purchases`), a selectable with columns
    ``ordered_at``, ``amount`` and ``contact_id`` (or ``customer_id``), and optionally
    ``status`` and ``refunded`` (the selectable's other orders are then left out), or
    :class:`StoredOrders` (of which only counted purchases count). Returns how many contacts
    changed (for a selectable on PostgreSQL: how many rows the update wrote). Orders that
    were stored before and changed status or refund go to :func:`recount_orders` instead."""
    if isinstance(new_orders, StoredOrders):
        if conn.dialect.name == "sqlite":
            return _sqlite_apply_stored_orders(conn, new_orders.after, sqlite_text(now))
        o = orders.c
        new_orders = select(o.contact_id, o.ordered_at, o.amount, o.status, o.refunded).where(
            o.id > new_orders.after
        )
    if isinstance(new_orders, Select):
        return int(conn.execute(orders_update(new_orders.subquery("o"), now)).rowcount)
    per = _per_contact_orders(new_orders)
    if not per:
        return 0
    if conn.dialect.name == "sqlite":
        return _sqlite_apply_orders(conn, per, sqlite_text(now))
    ids = sorted(per)
    source = _unnest(
        [
            ("contact_id", BigInteger(), ids),
            ("n", Integer(), [per[i][0] for i in ids]),
            ("total", Numeric(18, 2), [per[i][1] for i in ids]),
            ("first_at", DateTime(timezone=True), [per[i][2] for i in ids]),
            ("last_at", DateTime(timezone=True), [per[i][3] for i in ids]),
        ]
    )
    conn.execute(_orders_update_from(source, now))
    return len(per)


def orders_update(orders: Any, now: Any) -> Any:
    """The statement of :func:`apply_orders` for a selectable of orders (``ordered_at``,
    ``amount``, ``contact_id`` or ``customer_id``, and optionally ``status`` and
    ``refunded``: then only counted purchases count, at their net amount): per-contact
    aggregates applied by one ``UPDATE ... FROM``. ``now`` may be a bound parameter (the bulk import compiles it)."""
    key = orders.c.contact_id if "contact_id" in orders.c else orders.c.customer_id
    has_status = "status" in orders.c
    per = (
        select(
            key.label("key"),
            func.count().label("n"),
            func.sum(purchases.net(orders) if has_status else orders.c.amount).label("total"),
            func.min(orders.c.ordered_at).label("first_at"),
            func.max(orders.c.ordered_at).label("last_at"),
        )
        .where(purchases.counted(orders) if has_status else true())
        .group_by(key)
        .subquery("a")
    )
    matched = contacts.c.id if "contact_id" in orders.c else contacts.c.customer_id
    return _orders_update_from(per, now, key=per.c.key, matched=matched)


def recount_orders(conn: Connection, contact_ids: Iterable[int], *, now: datetime) -> int:
    """Set the purchase attributes of ``contact_ids`` from their counted purchases as
    stored: after an order already counted changed status or refunded amount, which no
    increment can express. One statement; returns how many contacts it rewrote."""
    ids = sorted({int(i) for i in contact_ids})
    if not ids:
        return 0
    o = orders.alias("o")
    mine = and_(o.c.contact_id == contacts.c.id, purchases.counted(o))

    def agg(value: Any) -> Any:
        return select(value).where(mine).scalar_subquery()

    c = contacts.c
    written = 0
    for start in range(0, len(ids), 10_000):
        chunk = ids[start : start + 10_000]
        written += conn.execute(
            update(contacts)
            .where(c.id.in_(chunk))
            .values(
                {
                    c.orders_count: agg(func.count()),
                    c.revenue_total: func.coalesce(agg(func.sum(purchases.net(o))), 0),
                    c.first_purchase_at: agg(func.min(o.c.ordered_at)),
                    c.last_purchase_at: agg(func.max(o.c.ordered_at)),
                    c.updated_at: _instant(now),
                }
            )
        ).rowcount
    return int(written)


def _orders_update_from(
    a: Subquery | Any,
    now: Any,
    *,
    key: ColumnElement[Any] | None = None,
    matched: ColumnElement[Any] | None = None,
) -> Any:
    c = contacts.c
    return (
        update(contacts)
        .where((c.id if matched is None else matched) == (a.c.contact_id if key is None else key))
        .values(
            {
                c.orders_count: c.orders_count + a.c.n,
                c.revenue_total: c.revenue_total + a.c.total,
                c.first_purchase_at: _earliest(c.first_purchase_at, a.c.first_at),
                c.last_purchase_at: _latest(c.last_purchase_at, a.c.last_at),
                c.updated_at: _instant(now),
            }
        )
    )


def _per_contact_orders(new_orders: Iterable[OrderRow]) -> dict[int, list[Any]]:
    """``contact_id -> [count, total, first time, last time]``."""
    per: dict[int, list[Any]] = {}
    for contact_id, at, amount in new_orders:
        value = float(amount) if isinstance(amount, str) else amount
        agg = per.get(contact_id)
        if agg is None:
            per[contact_id] = [1, value, at, at]
        else:
            agg[0] += 1
            agg[1] += value
            if at < agg[2]:
                agg[2] = at
            elif at > agg[3]:
                agg[3] = at
    return per


def _sqlite_apply_orders(conn: Connection, per: dict[int, list[Any]], now: str) -> int:
    """SQLite: the touched contacts' current times are read first (the transaction holds the
    write lock: the orders were just stored), so that one ``executemany`` per shape of change
    sets an indexed column (``last_purchase_at``, ``updated_at``) only where its value
    changes: every index entry rewritten costs, and an import touches most contacts in many
    of its batches."""
    raw = conn.connection.driver_connection
    assert raw is not None
    cur: Any = raw.cursor()
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
        if isinstance(first_at, datetime):
            first_at, last_at = sqlite_text(first_at), sqlite_text(last_at)
        first, last, updated = current[cid]
        if first is not None and first < first_at:
            first_at = first
        later = last is None or last < last_at
        touched = updated != now
        params: tuple[Any, ...] = (n, float(total), first_at)
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


#: :class:`StoredOrders` on SQLite: each contact's counted purchases among the orders above
#: an id, summed in the order they were stored, read by rowid alone (``NOT INDEXED``: through
#: the index on ``contact_id``, SQLite would read every order ever stored to group them).
#: A partial refund counts at its net amount rounded to cents, as the decimal subtraction does.
_STORED_ORDER_TOTALS = (
    "INSERT INTO temp.wb_order_totals (contact_id, n, total, first_at, last_at) "  # noqa: S608
    "SELECT contact_id, count(*), "
    "sum(CASE WHEN refunded = 0 THEN amount ELSE round(amount - refunded, 2) END), "
    "min(ordered_at), max(ordered_at) FROM orders NOT INDEXED "
    f"WHERE id > ? AND {purchases.COUNTED_SQL} GROUP BY contact_id"
)


def _stored_orders_update(later: bool, touched: bool) -> str:
    """One shape of :func:`_sqlite_apply_orders`' updates, from ``temp.wb_order_totals``:
    the contacts whose last purchase moves (``later``) and whose ``updated_at`` is not yet
    ``now`` (``touched``), or not; only then are those indexed columns set."""
    moves = "(c.last_purchase_at IS NULL OR c.last_purchase_at < a.last_at)"
    stamped = "c.updated_at IS NOT ?1"
    return (
        "UPDATE contacts AS c SET orders_count = c.orders_count + a.n, "  # noqa: S608
        "revenue_total = c.revenue_total + a.total, first_purchase_at = CASE WHEN "
        "c.first_purchase_at IS NOT NULL AND c.first_purchase_at < a.first_at "
        "THEN c.first_purchase_at ELSE a.first_at END"
        + (", last_purchase_at = a.last_at" if later else "")
        + (", updated_at = ?1" if touched else "")
        + " FROM temp.wb_order_totals AS a WHERE c.id = a.contact_id AND "
        + (moves if later else f"NOT {moves}")
        + " AND "
        + (stamped if touched else f"NOT {stamped}")
    )


#: The shapes in an order where no contact updated by one matches a later one: after its
#: update a contact's last purchase no longer moves and its ``updated_at`` is ``now``, so it
#: matches only (False, False), which comes first.
_STORED_ORDERS_UPDATES = [
    _stored_orders_update(later, touched)
    for later, touched in ((False, False), (True, True), (True, False), (False, True))
]


def _sqlite_apply_stored_orders(conn: Connection, after: int, now: str) -> int:
    """SQLite: :func:`apply_orders` for :class:`StoredOrders`, in SQL: each contact's
    counted purchases aggregated into a temporary table, then one ``UPDATE ... FROM`` per
    shape of change (as :func:`_sqlite_apply_orders`), each contact updated once. The
    transaction holds the write lock, so the orders above ``after`` are its own."""
    driver_count(
        conn,
        "CREATE TEMP TABLE IF NOT EXISTS wb_order_totals (contact_id INTEGER PRIMARY KEY, "
        "n INTEGER NOT NULL, total REAL NOT NULL, first_at TEXT, last_at TEXT)",
        (),
    )
    driver_count(conn, "DELETE FROM temp.wb_order_totals", ())
    changed = driver_count(conn, _STORED_ORDER_TOTALS, (after,))
    if changed:
        for sql in _STORED_ORDERS_UPDATES:
            driver_count(conn, sql, (now,))
    return changed


# -- events -------------------------------------------------------------------------------------


def apply_events(conn: Connection, new_events: Iterable[EventRow], *, now: datetime) -> int:
    """Move the engagement attributes of the contacts of ``new_events`` (events just stored
    in this transaction: ``(contact_id, type, occurred_at, machine)``) forward to the latest
    of their times, never back, and never past ``now``: an event stamped ahead of the clock
    (a sender's skewed clock) counts as seen now, so that no contact's engagement lies in the
    future. Returns how many contacts had an event that counts. See also
    :func:`apply_stored_events`."""
    per: dict[int, list[Any]] = {}
    now_text = sqlite_text(now)  # SQLite imports give times in the store's text form
    for contact_id, kind, at, machine in new_events:
        attribute = ATTRIBUTE_OF_EVENT.get(kind)
        if attribute is None or (machine and kind in HUMAN_ONLY):
            continue
        at = min(at, now_text if isinstance(at, str) else now)
        slot = EVENT_ATTRIBUTES.index(attribute)
        agg = per.setdefault(contact_id, [None, None, None])
        if agg[slot] is None or at > agg[slot]:
            agg[slot] = at
    if not per:
        return 0
    # One statement per set of attributes that move: a column left out of SET keeps its
    # index entries as they are (SQLite rewrites those of every column it sets: a third of
    # the cost of a page view on a large store).
    shapes: dict[tuple[str, ...], list[int]] = {}
    for contact_id in sorted(per):
        agg = per[contact_id]
        shape = tuple(name for slot, name in enumerate(EVENT_ATTRIBUTES) if agg[slot] is not None)
        shapes.setdefault(shape, []).append(contact_id)
    dialect = conn.dialect.name
    for shape, ids in shapes.items():
        columns = [("contact_id", ids)] + [
            (name, [per[i][EVENT_ATTRIBUTES.index(name)] for i in ids]) for name in shape
        ]
        params = _row_params(dialect, columns)
        if dialect == "sqlite":
            sql, names, constants = _sqlite_events_update(conn, shape)
            values = constants | params | {"now": sqlite_text(now)}
            driver_rows(conn, sql, [values[name] for name in names])
        else:
            conn.execute(_events_update(dialect, shape), params | {"now": now})
    return len(per)


_EVENTS_UPDATE: dict[tuple[str, tuple[str, ...]], Any] = {}


def _events_update(dialect: str, shape: tuple[str, ...]) -> Any:
    """The statement of :func:`apply_events` for contacts whose ``shape`` attributes (some
    of :data:`EVENT_ATTRIBUTES`) may move, built once per dialect and shape (its rows and
    ``now`` are bound parameters), so that a call costs an execution, no SQL building."""
    statement = _EVENTS_UPDATE.get((dialect, shape))
    if statement is None:
        source = _bound_rows(
            dialect, [("contact_id", BigInteger())] + [(name, UTCDateTime()) for name in shape]
        )
        c = contacts.c
        moves = [or_(c[name].is_(None), c[name] < source.c[name]) for name in shape]
        statement = (
            update(contacts)
            .where(c.id == source.c.contact_id, or_(*moves))
            .values(
                {c[name]: _latest(c[name], source.c[name]) for name in shape}
                | {c.updated_at: bindparam("now", type_=UTCDateTime())}
            )
        )
        _EVENTS_UPDATE[(dialect, shape)] = statement
    return statement


def apply_stored_events(conn: Connection, *, after: int, now: datetime) -> int:
    """SQLite: :func:`apply_events` for the events this transaction stored with ids above
    ``after`` (the largest id before it stored them; the transaction holds the write lock,
    so those are its own), read where they are: one look at which attributes their types
    move, then one ``UPDATE ... FROM`` per such attribute from each contact's latest time,
    so that each statement sets only the column that moves. Nothing passes through Python,
    and each statement is one step of the driver. Returns how many contact rows changed (a
    contact once per attribute that moved)."""
    types = driver_rows(conn, _STORED_TYPES, (after,))
    moved = {ATTRIBUTE_OF_EVENT[kind] for (kind,) in types if kind in ATTRIBUTE_OF_EVENT}
    now_text = sqlite_text(now)
    changed = 0
    for name in EVENT_ATTRIBUTES:
        if name in moved:
            changed += driver_count(conn, _STORED_UPDATE[name], (now_text, now_text, after))
    return changed


#: The events of a transaction are read by rowid alone (``NOT INDEXED``): through the index
#: on their type, SQLite would read every event of that type ever stored.
_STORED_TYPES = "SELECT DISTINCT type FROM events NOT INDEXED WHERE id > ?"


def _stored_update(name: str) -> str:
    kinds = [kind for kind, attribute in ATTRIBUTE_OF_EVENT.items() if attribute == name]
    human = " AND machine = 0" if all(kind in HUMAN_ONLY for kind in kinds) else ""
    listed = ", ".join(f"'{kind}'" for kind in kinds)
    return (
        f"UPDATE contacts SET {name} = a.at, updated_at = ?1 FROM ("  # noqa: S608 (fixed names)
        "SELECT contact_id, min(max(occurred_at), ?2) AS at FROM events NOT INDEXED "
        f"WHERE id > ?3 AND type IN ({listed}){human} GROUP BY contact_id) AS a "
        f"WHERE contacts.id = a.contact_id AND (contacts.{name} IS NULL OR contacts.{name} < a.at)"
    )


_STORED_UPDATE = {name: _stored_update(name) for name in EVENT_ATTRIBUTES}


_SQLITE_EVENTS_UPDATE: dict[tuple[str, ...], tuple[str, tuple[str, ...], dict[str, Any]]] = {}


def _sqlite_events_update(
    conn: Connection, shape: tuple[str, ...]
) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    """SQLite: :func:`_events_update` compiled once per shape, to run on the driver's
    cursor: its SQL, the names of its positional parameters, the values of its constants."""
    found = _SQLITE_EVENTS_UPDATE.get(shape)
    if found is None:
        compiled = _events_update("sqlite", shape).compile(dialect=conn.dialect)
        names = tuple(compiled.positiontup or ())
        found = _SQLITE_EVENTS_UPDATE[shape] = (str(compiled), names, dict(compiled.params))
    return found


# -- tags ---------------------------------------------------------------------------------------


@overload
def add_tags(
    conn: Connection,
    contact_ids: Select[Any],
    tag: str,
    *,
    source: str,
    at: datetime,
) -> int: ...
@overload
def add_tags(
    conn: Connection,
    contact_ids: Iterable[int],
    tag: str,
    *,
    source: str,
    at: datetime,
) -> list[int]: ...
def add_tags(
    conn: Connection,
    contact_ids: Iterable[int] | Select[Any],
    tag: str,
    *,
    source: str,
    at: datetime,
) -> list[int] | int:
    """Tag contacts (ids, or a selectable of one column of contact ids). Contacts that had
    the tag keep it unchanged; the others get it and a ``tag_history`` row ``added`` at
    ``at``. Returns the ids that got the tag, sorted; for a selectable (the engine's
    batches), only how many."""
    want = not isinstance(contact_ids, Select)
    chosen = _ids(conn, contact_ids)
    if chosen is None:
        return []
    # ``WHERE true``: SQLite parses ``ON CONFLICT`` after a bare ``SELECT ... FROM`` as a join.
    rows = select(chosen, literal(tag), _instant(at), literal(source)).where(true())
    columns = ["contact_id", "tag", "added_at", "added_by"]
    if conn.dialect.name == "postgresql":
        added = (
            postgresql.insert(contact_tags)
            .from_select(columns, rows)
            .on_conflict_do_nothing(index_elements=["contact_id", "tag"])
            .returning(contact_tags.c.contact_id)
            .cte("added")
        )
        return _pg_log(conn, added, tag, "added", source, at, want)
    before = _sqlite_max_rowid(conn, "contact_tags")
    conn.execute(
        sqlite.insert(contact_tags)
        .from_select(columns, rows)
        .on_conflict_do_nothing(index_elements=["contact_id", "tag"])
    )
    new = literal_column("contact_tags.rowid") > before
    logged = conn.execute(
        insert(tag_history).from_select(
            HISTORY_COLUMNS,
            select(
                contact_tags.c.contact_id,
                literal(tag),
                literal("added"),
                _instant(at),
                literal(source),
            ).where(new),
        )
    )
    if not want:
        return int(logged.rowcount)
    return _ids_of(conn, select(contact_tags.c.contact_id).where(new))


@overload
def remove_tags(
    conn: Connection,
    contact_ids: Select[Any],
    tag: str,
    *,
    source: str,
    at: datetime,
) -> int: ...
@overload
def remove_tags(
    conn: Connection,
    contact_ids: Iterable[int],
    tag: str,
    *,
    source: str,
    at: datetime,
) -> list[int]: ...
def remove_tags(
    conn: Connection,
    contact_ids: Iterable[int] | Select[Any],
    tag: str,
    *,
    source: str,
    at: datetime,
) -> list[int] | int:
    """Untag contacts (ids, or a selectable of contact ids). Those that had the tag lose it
    and get a ``tag_history`` row ``removed`` at ``at``. Returns their ids, sorted; for a
    selectable, only how many."""
    want = not isinstance(contact_ids, Select)
    chosen = _ids(conn, contact_ids)
    if chosen is None:
        return []
    having = and_(contact_tags.c.tag == tag, contact_tags.c.contact_id.in_(select(chosen)))
    if conn.dialect.name == "postgresql":
        gone = delete(contact_tags).where(having).returning(contact_tags.c.contact_id).cte("gone")
        return _pg_log(conn, gone, tag, "removed", source, at, want)
    before = _sqlite_max_rowid(conn, "tag_history")
    n = conn.execute(
        insert(tag_history).from_select(
            HISTORY_COLUMNS,
            select(
                contact_tags.c.contact_id,
                literal(tag),
                literal("removed"),
                _instant(at),
                literal(source),
            ).where(having),
        )
    )
    logged = select(tag_history.c.contact_id).where(tag_history.c.id > before)
    conn.execute(
        delete(contact_tags).where(contact_tags.c.tag == tag, contact_tags.c.contact_id.in_(logged))
    )
    return _ids_of(conn, logged) if want else int(n.rowcount)


HISTORY_COLUMNS = ["contact_id", "tag", "action", "at", "source"]


def _pg_log(
    conn: Connection,
    changed: Any,
    tag: str,
    action: str,
    source: str,
    at: datetime,
    want: bool,
) -> list[int] | int:
    """PostgreSQL: the history of the rows the CTE ``changed`` really wrote, in the same
    statement as the change; their ids (``want``) or how many."""
    logged = (
        insert(tag_history)
        .from_select(
            HISTORY_COLUMNS,
            select(
                changed.c.contact_id, literal(tag), literal(action), _instant(at), literal(source)
            ),
        )
        .add_cte(changed)
    )
    if not want:
        return int(conn.execute(logged).rowcount)
    return sorted(
        int(i) for i in conn.execute(logged.returning(tag_history.c.contact_id)).scalars()
    )


def _ids_of(conn: Connection, changed: Select[Any]) -> list[int]:
    return sorted(int(i) for i in conn.execute(changed).scalars())


# -- consent ------------------------------------------------------------------------------------


@overload
def set_consent(
    conn: Connection,
    contact_ids: Select[Any],
    channel: str,
    granted: bool,
    *,
    source: str,
    at: datetime | Mapping[int, datetime],
    now: datetime,
) -> int: ...
@overload
def set_consent(
    conn: Connection,
    contact_ids: Iterable[int],
    channel: str,
    granted: bool,
    *,
    source: str,
    at: datetime | Mapping[int, datetime],
    now: datetime,
) -> list[int]: ...
def set_consent(
    conn: Connection,
    contact_ids: Iterable[int] | Select[Any],
    channel: str,
    granted: bool,
    *,
    source: str,
    at: datetime | Mapping[int, datetime],
    now: datetime,
) -> list[int] | int:
    """Set consent on ``channel`` for contacts (ids, or a selectable of contact ids). Only
    contacts whose consent differs change: they get a ``consent_log`` row at ``at`` (one
    instant for all, or a mapping ``contact id -> instant``, whose keys then are the contacts
    and ``contact_ids`` is ignored) and ``updated_at = now``.

    Consent changes take effect in the order they happened, not in the order they are
    written: a change stamped before the latest one already logged for the contact and
    channel (an unsubscribe kept while the store was busy, applied after a newer grant) is
    logged, so the log keeps both, but leaves the current consent as the newer change set it.
    Returns the ids whose consent changed, sorted; for a selectable, only how many."""
    want = not isinstance(contact_ids, Select)
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r} (expected one of {', '.join(CHANNELS)})")
    consent = contacts.c[f"{channel}_consent"]
    differs = or_(consent.is_(None), consent != granted)
    if isinstance(at, Mapping):
        ids = sorted(at)
        if not ids:
            return []
        times = _rows(
            conn,
            [("contact_id", BigInteger(), ids), ("at", UTCDateTime(), [at[i] for i in ids])],
        )
        match: Any = contacts.c.id == times.c.contact_id
        when: Any = times.c.at
    else:
        chosen = _ids(conn, contact_ids)
        if chosen is None:
            return []
        match = contacts.c.id.in_(select(chosen))
        when = _instant(at)
    log = [contacts.c.id, literal(channel), literal(granted), when, literal(source)]
    if conn.dialect.name == "postgresql":
        newer = consent_log.alias("newer")
        stale = exists(
            select(literal(1)).where(
                newer.c.contact_id == contacts.c.id, newer.c.channel == channel, newer.c.at > when
            )
        )
        # Logged only: a newer change is in the log. The contact rows are locked so that a
        # writer changing them at the same time is waited for, as the update below does.
        late = select(*log).where(match, differs, stale).with_for_update(of=contacts)
        conn.execute(insert(consent_log).from_select(LOG_COLUMNS, late))
        changed = (
            update(contacts)
            .where(match, differs, ~stale)
            .values({consent: granted, contacts.c.updated_at: _instant(now)})
            .returning(*(e.label(f"c{i}") for i, e in enumerate(log)))
            .cte("changed")
        )
        logged = insert(consent_log).from_select(LOG_COLUMNS, select(*changed.c)).add_cte(changed)
        if not want:
            return int(conn.execute(logged).rowcount)
        stmt = logged.returning(consent_log.c.contact_id)
        return sorted(int(i) for i in conn.execute(stmt).scalars())
    before = _sqlite_max_rowid(conn, "consent_log")
    n = conn.execute(
        insert(consent_log).from_select(LOG_COLUMNS, select(*log).where(match, differs))
    ).rowcount
    written, later = consent_log.alias("written"), consent_log.alias("later")
    new = select(written.c.contact_id).where(
        written.c.id > before,
        ~exists(
            select(literal(1)).where(
                later.c.contact_id == written.c.contact_id,
                later.c.channel == written.c.channel,
                later.c.at > written.c.at,
            )
        ),
    )
    if not n:
        return [] if want else 0
    applied = conn.execute(
        update(contacts)
        .where(contacts.c.id.in_(new))
        .values({consent: granted, contacts.c.updated_at: _instant(now)})
    ).rowcount
    return _ids_of(conn, new) if want else int(applied)


LOG_COLUMNS = ["contact_id", "channel", "granted", "at", "source"]


# -- helpers ------------------------------------------------------------------------------------


def _latest(current: ColumnElement[Any], new: ColumnElement[Any]) -> ColumnElement[Any]:
    """``new`` when it is later than ``current`` (or ``current`` is unknown), else ``current``."""
    return case((and_(new.is_not(None), or_(current.is_(None), current < new)), new), else_=current)


def _earliest(current: ColumnElement[Any], new: ColumnElement[Any]) -> ColumnElement[Any]:
    return case((and_(new.is_not(None), or_(current.is_(None), current > new)), new), else_=current)


def _instant(value: Any) -> Any:
    return value if isinstance(value, ColumnElement) else literal(value, UTCDateTime())


def _ids(conn: Connection, contact_ids: Iterable[int] | Select[Any]) -> Any:
    """A one-column selectable of contact ids; None when a list of ids is empty."""
    if isinstance(contact_ids, Select):
        return list(contact_ids.subquery("chosen").c)[0]
    ids = sorted({int(i) for i in contact_ids})
    if not ids:
        return None
    return _rows(conn, [("contact_id", BigInteger(), ids)]).c.contact_id


def _rows(conn: Connection, columns: list[tuple[str, TypeEngine[Any], list[Any]]]) -> Subquery:
    """Rows given as one list of values per column, as a derived table: ``unnest`` of arrays
    (PostgreSQL) or ``json_each`` of a JSON array of rows (SQLite); one parameter per
    column whatever the number of rows."""
    if conn.dialect.name == "postgresql":
        return _unnest(columns)
    data = [
        [
            sqlite_text(v) if isinstance(v, datetime) else float(v) if isinstance(v, Decimal) else v
            for v in row
        ]
        for row in zip(*(values for _name, _type, values in columns), strict=True)
    ]
    j = func.json_each(literal(json.dumps(data), String())).table_valued("value").alias("j")
    return select(
        *(
            func.json_extract(j.c.value, f"$[{i}]").label(name)
            for i, (name, _type, _values) in enumerate(columns)
        )
    ).subquery("a")


def _bound_rows(dialect: str, columns: list[tuple[str, TypeEngine[Any]]]) -> Subquery:
    """:func:`_rows` with the values left as bound parameters (see :func:`_row_params`): a
    derived table for statements built once and executed many times."""
    if dialect == "postgresql":
        arrays = [
            cast(bindparam(f"rows_{name}", type_=ARRAY(kind)), ARRAY(kind))
            for name, kind in (
                (name, DateTime(timezone=True) if isinstance(kind, UTCDateTime) else kind)
                for name, kind in columns
            )
        ]
        names = [name for name, _kind in columns]
        u = func.unnest(*arrays).table_valued(*names).render_derived(name="u")
        return select(*(u.c[name] for name in names)).subquery("a")
    j = func.json_each(bindparam("rows", type_=String())).table_valued("value").alias("j")
    return select(
        *(
            func.json_extract(j.c.value, f"$[{i}]").label(name)
            for i, (name, _kind) in enumerate(columns)
        )
    ).subquery("a")


def _row_params(dialect: str, columns: list[tuple[str, list[Any]]]) -> dict[str, Any]:
    """The parameters of a :func:`_bound_rows` table: one list of values per column."""
    if dialect == "postgresql":
        return {f"rows_{name}": values for name, values in columns}
    texts: dict[int, str] = {}  # the rows' instants are often one object (a batch's "now")

    def value(v: Any) -> Any:
        if isinstance(v, datetime):
            text = texts.get(id(v))
            if text is None:
                text = texts[id(v)] = sqlite_text(v)
            return text
        return float(v) if isinstance(v, Decimal) else v

    data = [
        [value(v) for v in row] for row in zip(*(values for _name, values in columns), strict=True)
    ]
    return {"rows": json.dumps(data)}


def _unnest(columns: list[tuple[str, TypeEngine[Any], list[Any]]]) -> Subquery:
    """PostgreSQL: rows from one array parameter per column."""
    arrays = [
        cast(literal(values, ARRAY(pg_kind)), ARRAY(pg_kind))
        for pg_kind, values in (
            (DateTime(timezone=True) if isinstance(kind, UTCDateTime) else kind, values)
            for _name, kind, values in columns
        )
    ]
    names = [name for name, _kind, _values in columns]
    u = func.unnest(*arrays).table_valued(*names).render_derived(name="u")
    return select(*(u.c[name] for name in names)).subquery("a")


def _sqlite_max_rowid(conn: Connection, name: str) -> int:
    """SQLite: the largest rowid of a table, before a write that adds rows after it (the
    transaction holds the write lock, so rows above it are this transaction's)."""
    rowid: ColumnElement[int] = literal_column(f"{name}.rowid")
    return int(
        conn.execute(
            select(func.coalesce(func.max(rowid), 0)).select_from(table(name))
        ).scalar_one()
    )


__all__ = [
    "ATTRIBUTE_OF_EVENT",
    "add_tags",
    "apply_events",
    "apply_stored_events",
    "apply_orders",
    "StoredOrders",
    "orders_update",
    "recount_orders",
    "remove_tags",
    "set_consent",
]
