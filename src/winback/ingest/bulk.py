"""Set-based bulk writes for orders and events, on the raw driver connection.

Events (and orders on PostgreSQL) are loaded into a temporary staging table (SQLite:
``executemany``; PostgreSQL: ``COPY``), then moved into the real tables with ``INSERT ...
SELECT ... ON CONFLICT DO NOTHING RETURNING``, which both deduplicates against earlier
imports and tells us which rows are new. Orders on SQLite skip the staging table and go
straight in with ``executemany`` (see :func:`winback.ingest.orders.write_orders`).
Unknown customers become contacts in the same set-based way. The standard contact
attributes are then advanced for the new rows only (:mod:`winback.store.activity`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, column, table
from sqlalchemy.engine import make_url

from winback.store.activity import orders_update


class Dialect:
    """What differs between SQLite and PostgreSQL on the raw path."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.postgres = name == "postgresql"
        self.mark = "%s" if self.postgres else "?"

    def sql(self, statement: str) -> str:
        """``statement`` with ``?`` placeholders turned into the driver's style."""
        return statement.replace("?", self.mark) if self.postgres else statement

    def instant(self, value: datetime) -> str:
        """An aware instant as the text the store keeps (SQLite) or accepts (COPY)."""
        value = value.astimezone(UTC)
        if self.postgres:
            return value.isoformat(" ", "microseconds")
        return value.replace(tzinfo=None).isoformat(" ", "microseconds")

    def flag(self, value: bool) -> Any:
        return value if self.postgres else int(value)


ORDER_STAGE_COLUMNS = (
    "line",
    "order_id",
    "customer_id",
    "ordered_at",
    "amount",
    "currency",
    "items",
    "coupon",
    "status",
    "refunded",
)
EVENT_STAGE_COLUMNS = (
    "line",
    "event_key",
    "customer_id",
    "type",
    "occurred_at",
    "properties",
    "message_id",
    "machine",
)

_STAGES: dict[str, dict[str, str]] = {
    "wb_stage_orders": {
        "sqlite": "line INTEGER, order_id TEXT, customer_id TEXT, ordered_at TEXT, "
        "amount NUMERIC, currency TEXT, items TEXT, coupon TEXT, status TEXT, refunded NUMERIC",
        "postgresql": "line bigint, order_id text, customer_id text, ordered_at timestamptz, "
        "amount numeric, currency text, items jsonb, coupon text, status text, "
        "refunded numeric",
    },
    "wb_stage_events": {
        "sqlite": "line INTEGER, event_key TEXT, customer_id TEXT, type TEXT, occurred_at TEXT, "
        "properties TEXT, message_id TEXT, machine INTEGER",
        "postgresql": "line bigint, event_key text, customer_id text, type text, "
        "occurred_at timestamptz, properties jsonb, message_id text, machine boolean",
    },
}
_COLUMNS = {
    "wb_stage_orders": ORDER_STAGE_COLUMNS,
    "wb_stage_events": EVENT_STAGE_COLUMNS,
}


def stage(conn: Connection, dialect: Dialect, table: str, rows: Sequence[tuple[Any, ...]]) -> Any:
    """Load ``rows`` into the (emptied) temporary staging ``table``; returns a raw cursor."""
    raw = conn.connection.driver_connection
    assert raw is not None
    cur = raw.cursor()
    stage_rows(cur, dialect, table, rows)
    return cur


def stage_rows(cur: Any, dialect: Dialect, table: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Load ``rows`` into the (emptied) temporary staging ``table`` with the raw cursor."""
    columns = _COLUMNS[table]
    if dialect.postgres:
        pg_stage_open(cur, table)
        pg_stage_append(cur, table, rows)
        cur.execute(f"ANALYZE {table}")  # temp tables get no statistics otherwise
    else:
        cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {table} ({_STAGES[table]['sqlite']})")
        cur.execute(f"DELETE FROM {table}")  # noqa: S608 (fixed names)
        marks = ", ".join("?" for _ in columns)
        cur.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)  # noqa: S608


def sqlite_create_contacts(cur: Any, first_at: dict[str, str], now: str) -> int:
    """SQLite: create a bare contact for each customer id of ``first_at`` not yet known, with
    ``created_at`` its earliest time in the batch; one statement over a JSON object. It is a
    write even when nothing is new, so the transaction holds the write lock from here on.
    Returns how many were created."""
    cur.execute(
        "INSERT INTO contacts (customer_id, attributes, orders_count, revenue_total, "
        "created_at, updated_at) "
        "SELECT j.key, '{}', 0, 0, j.value, ? FROM json_each(?) j "
        "WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.customer_id = j.key) "
        "ON CONFLICT (customer_id) DO NOTHING",
        (now, json.dumps(first_at)),
    )
    return max(int(cur.rowcount), 0)


def sqlite_contact_ids(cur: Any, customers: list[str]) -> dict[str, int]:
    """SQLite: ``customer_id -> contacts.id`` for ``customers`` (one statement)."""
    cur.execute(
        "SELECT c.customer_id, c.id FROM json_each(?) j JOIN contacts c ON c.customer_id = j.value",
        (json.dumps(customers),),
    )
    return dict(cur.fetchall())


def pg_stage_open(cur: Any, table: str) -> None:
    """PostgreSQL: create (if need be) and empty the temporary staging ``table``."""
    cur.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {table} ({_STAGES[table]['postgresql']}) "
        "ON COMMIT DELETE ROWS"
    )
    cur.execute(f"TRUNCATE {table}")


def pg_stage_append(cur: Any, table: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """PostgreSQL: add ``rows`` to the staging ``table`` with ``COPY``."""
    with cur.copy(f"COPY {table} ({', '.join(_COLUMNS[table])}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def stored_by_import(
    cur: Any, dialect: Dialect, table: str, keys: list[str], import_id: int
) -> set[str]:
    """Those of ``keys`` (rows that were not new) that an earlier batch of this same import
    stored: repeats within the file, as opposed to rows stored by earlier imports."""
    if not keys:
        return set()
    key = "order_id" if table == "orders" else "event_key"
    if dialect.postgres:
        cur.execute(
            f"SELECT {key} FROM {table} WHERE {key} = ANY(%s) AND import_id = %s",  # noqa: S608
            (keys, import_id),
        )
    else:
        cur.execute(
            f"SELECT t.{key} FROM json_each(?) j JOIN {table} t ON t.{key} = j.value "  # noqa: S608
            "WHERE t.import_id = ?",
            (json.dumps(keys), import_id),
        )
    return {str(r[0]) for r in cur.fetchall()}


def create_missing_contacts(
    cur: Any, dialect: Dialect, table: str, time_column: str, now: Any
) -> int:
    """Create a bare contact for every staged customer not yet known. Its ``created_at`` is
    the earliest staged time of that customer. Returns how many were created."""
    cur.execute(
        dialect.sql(
            "INSERT INTO contacts (customer_id, attributes, orders_count, revenue_total, "  # noqa: S608
            "created_at, updated_at) "
            f"SELECT s.customer_id, '{{}}', 0, 0, MIN(s.{time_column}), ? FROM {table} s "
            "WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.customer_id = s.customer_id) "
            "GROUP BY s.customer_id ON CONFLICT (customer_id) DO NOTHING"
        ),
        (now,),
    )
    return max(int(cur.rowcount), 0)


def insert_orders(cur: Any, dialect: Dialect, import_id: int) -> list[tuple[Any, ...]]:
    """Move staged orders into ``orders``; returns ``(order_id, contact_id, ordered_at,
    amount)`` of the rows that were new."""
    cur.execute(
        dialect.sql(
            "INSERT INTO orders (order_id, contact_id, ordered_at, amount, currency, items, "
            "coupon, status, refunded, import_id) "
            "SELECT s.order_id, c.id, s.ordered_at, s.amount, s.currency, s.items, s.coupon, "
            "s.status, s.refunded, ? "
            "FROM wb_stage_orders s JOIN contacts c ON c.customer_id = s.customer_id "
            "WHERE true ORDER BY s.line ON CONFLICT (order_id) DO NOTHING "
            "RETURNING order_id, contact_id, ordered_at, amount"
        ),
        (import_id,),
    )
    return list(cur.fetchall())


#: PostgreSQL, fast path: every staged order is new. A plain ``INSERT`` (no ``ON CONFLICT``:
#: its speculative insertion costs about a third more per row); a staged order that is
#: already stored, or twice in the unit, raises a unique violation and the caller falls back
#: to :data:`PG_INSERT_ORDERS` (see :meth:`winback.ingest.orders.PostgresOrders.finish`).
PG_INSERT_ALL_ORDERS = (
    "INSERT INTO orders (order_id, contact_id, ordered_at, amount, currency, items, "
    "coupon, status, refunded, import_id) "
    "SELECT s.order_id, c.id, s.ordered_at, s.amount, s.currency, s.items, s.coupon, "
    "s.status, s.refunded, %(import)s "
    "FROM wb_stage_orders s JOIN contacts c ON c.customer_id = s.customer_id ORDER BY s.line"
)

#: PostgreSQL: orders copied straight into ``orders`` (rows matched to their contact ids).
PG_COPY_ORDERS = (
    "COPY orders (order_id, contact_id, ordered_at, amount, currency, items, coupon, status, "
    "refunded, import_id) FROM STDIN"
)

#: The staging table of orders, for statements built with SQLAlchemy.
ORDER_STAGE = table("wb_stage_orders", *(column(name) for name in ORDER_STAGE_COLUMNS))

#: :func:`winback.store.activity.orders_update` over the orders a statement's ``new`` CTE
#: returned, compiled for psycopg (``now`` a parameter) to run inside that statement.
_ADVANCE_NEW = str(
    orders_update(
        table(
            "new",
            column("contact_id"),
            column("ordered_at"),
            column("amount"),
            column("status"),
            column("refunded"),
        ),
        bindparam("now"),
    ).compile(dialect=make_url("postgresql+psycopg://").get_dialect()())
)

#: PostgreSQL: one statement moves a unit's staged orders into ``orders`` (``ON CONFLICT DO
#: NOTHING``, first line first), advances the attributes of the contacts of the rows that were
#: new from their per-contact aggregates, and classifies the staged rows that were not new:
#: a repeat of an earlier line of the file (a row of this unit with a lower line, or stored by
#: an earlier unit of this import) or a duplicate of an order stored before. Only repeats come
#: back, one row each ``(line, order_id, first_line or NULL)``, plus one row ``(NULL, NULL,
#: duplicates)``, so the reply stays small even when a whole file is imported again.
PG_INSERT_ORDERS = (
    "WITH new AS ("  # noqa: S608 (fixed text)
    "INSERT INTO orders (order_id, contact_id, ordered_at, amount, currency, items, "
    "coupon, status, refunded, import_id) "
    "SELECT s.order_id, c.id, s.ordered_at, s.amount, s.currency, s.items, s.coupon, "
    "s.status, s.refunded, %(import)s "
    "FROM wb_stage_orders s JOIN contacts c ON c.customer_id = s.customer_id "
    "ORDER BY s.line ON CONFLICT (order_id) DO NOTHING "
    "RETURNING order_id, contact_id, ordered_at, amount, status, refunded), "
    "moved AS (" + _ADVANCE_NEW + "), "
    "twins AS (SELECT order_id, min(line) AS first FROM wb_stage_orders "
    "GROUP BY order_id HAVING count(*) > 1), "
    "odd AS MATERIALIZED (SELECT s.line, s.order_id, t.first, "
    "(s.line > t.first) IS TRUE OR EXISTS (SELECT 1 FROM orders o "
    "WHERE o.order_id = s.order_id AND o.import_id = %(import)s) AS repeat "
    "FROM wb_stage_orders s LEFT JOIN twins t ON t.order_id = s.order_id "
    "WHERE s.line > t.first OR NOT EXISTS (SELECT 1 FROM new WHERE new.order_id = s.order_id)) "
    "SELECT line, order_id, first FROM odd WHERE repeat "
    "UNION ALL SELECT NULL, NULL, count(*) FROM odd WHERE NOT repeat"
)


def pg_insert_orders(
    cur: Any, import_id: int, now: Any
) -> tuple[list[tuple[int, str, int | None]], int]:
    """Run :data:`PG_INSERT_ORDERS` on the staged orders: returns the repeats within the file
    ``(line, order_id, first line in this unit or None)`` in line order, and how many staged
    rows duplicate orders stored by earlier imports."""
    cur.execute(PG_INSERT_ORDERS, {"import": import_id, "now": now})
    repeats: list[tuple[int, str, int | None]] = []
    duplicates = 0
    for line, order_id, first in cur.fetchall():
        if line is None:
            duplicates = int(first)
        else:
            repeats.append((int(line), str(order_id), None if first is None else int(first)))
    repeats.sort()
    return repeats, duplicates


#: PostgreSQL: stored orders of earlier imports whose status or refunded amount the staged
#: unit states differently (its first line of each order) take the staged values; returns
#: the contact of each order changed.
PG_UPDATE_ORDERS = (
    "UPDATE orders o SET status = s.status, refunded = s.refunded "
    "FROM (SELECT DISTINCT ON (order_id) order_id, status, refunded FROM wb_stage_orders "
    "ORDER BY order_id, line) s "
    "WHERE o.order_id = s.order_id AND o.import_id IS DISTINCT FROM %(import)s "
    "AND (o.status <> s.status OR o.refunded <> s.refunded) "
    "RETURNING o.contact_id"
)


def pg_update_orders(cur: Any, import_id: int) -> list[int]:
    """Run :data:`PG_UPDATE_ORDERS`: the contact id of each stored order that changed."""
    cur.execute(PG_UPDATE_ORDERS, {"import": import_id})
    return [int(r[0]) for r in cur.fetchall()]


def insert_events(cur: Any, dialect: Dialect, import_id: int) -> list[tuple[Any, ...]]:
    """Move staged events into ``events``; returns ``(event_key, contact_id, type,
    occurred_at, machine)`` of the rows that were new."""
    cur.execute(
        dialect.sql(
            "INSERT INTO events (event_key, contact_id, type, occurred_at, properties, "
            "message_id, machine, import_id) "
            "SELECT s.event_key, c.id, s.type, s.occurred_at, s.properties, s.message_id, "
            "s.machine, ? "
            "FROM wb_stage_events s JOIN contacts c ON c.customer_id = s.customer_id "
            "WHERE true ORDER BY s.line ON CONFLICT (event_key) DO NOTHING "
            "RETURNING event_key, contact_id, type, occurred_at, machine"
        ),
        (import_id,),
    )
    return list(cur.fetchall())


def seen_in_this_import(cur: Any, dialect: Dialect, table: str, import_id: int) -> set[str]:
    """Keys of the staged rows that an earlier batch of this same import already stored
    (duplicates within the file), as opposed to rows stored by earlier imports."""
    key, target, stage_table = (
        ("order_id", "orders", "wb_stage_orders")
        if table == "orders"
        else ("event_key", "events", "wb_stage_events")
    )
    cur.execute(
        dialect.sql(
            f"SELECT t.{key} FROM {target} t JOIN {stage_table} s ON s.{key} = t.{key} "  # noqa: S608
            "WHERE t.import_id = ?"
        ),
        (import_id,),
    )
    return {str(r[0]) for r in cur.fetchall()}
