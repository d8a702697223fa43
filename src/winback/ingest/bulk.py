"""Set-based bulk writes for orders and events, on the raw driver connection.

Each batch is loaded into a temporary staging table (SQLite: ``executemany``; PostgreSQL:
``COPY``), then moved into the real tables with ``INSERT ... SELECT ... ON CONFLICT DO
NOTHING RETURNING``, which both deduplicates against earlier imports and tells us which rows
are new. Unknown customers become contacts in the same set-based way. The standard contact
attributes are then advanced for the new rows only (:mod:`winback.ingest.attributes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection


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
        "amount NUMERIC, currency TEXT, items TEXT, coupon TEXT",
        "postgresql": "line bigint, order_id text, customer_id text, ordered_at timestamptz, "
        "amount numeric, currency text, items jsonb, coupon text",
    },
    "wb_stage_events": {
        "sqlite": "line INTEGER, event_key TEXT, customer_id TEXT, type TEXT, occurred_at TEXT, "
        "properties TEXT, message_id TEXT, machine INTEGER",
        "postgresql": "line bigint, event_key text, customer_id text, type text, "
        "occurred_at timestamptz, properties jsonb, message_id text, machine boolean",
    },
    # Per-contact aggregates of a batch's new rows (see winback.ingest.attributes).
    "wb_stage_purchases": {
        "sqlite": "contact_id INTEGER, n INTEGER, total NUMERIC, first_at TEXT, last_at TEXT",
        "postgresql": "contact_id bigint, n integer, total numeric, first_at timestamptz, "
        "last_at timestamptz",
    },
    "wb_stage_activity": {
        "sqlite": "contact_id INTEGER, opened TEXT, clicked TEXT, seen TEXT",
        "postgresql": "contact_id bigint, opened timestamptz, clicked timestamptz, "
        "seen timestamptz",
    },
}
_COLUMNS = {
    "wb_stage_orders": ORDER_STAGE_COLUMNS,
    "wb_stage_events": EVENT_STAGE_COLUMNS,
    "wb_stage_purchases": ("contact_id", "n", "total", "first_at", "last_at"),
    "wb_stage_activity": ("contact_id", "opened", "clicked", "seen"),
}


def stage(conn: Connection, dialect: Dialect, table: str, rows: Sequence[tuple[Any, ...]]) -> Any:
    """Load ``rows`` into the (emptied) temporary staging ``table``; returns a raw cursor."""
    columns = _COLUMNS[table]
    raw = conn.connection.driver_connection
    assert raw is not None
    cur = raw.cursor()
    if dialect.postgres:
        cur.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {table} ({_STAGES[table]['postgresql']}) "
            "ON COMMIT DELETE ROWS"
        )
        cur.execute(f"TRUNCATE {table}")
        with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(f"ANALYZE {table}")  # temp tables get no statistics otherwise
    else:
        cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {table} ({_STAGES[table]['sqlite']})")
        cur.execute(f"DELETE FROM {table}")  # noqa: S608 (fixed names)
        marks = ", ".join("?" for _ in columns)
        cur.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)  # noqa: S608
    return cur


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
            "coupon, import_id) "
            "SELECT s.order_id, c.id, s.ordered_at, s.amount, s.currency, s.items, s.coupon, ? "
            "FROM wb_stage_orders s JOIN contacts c ON c.customer_id = s.customer_id "
            "WHERE true ORDER BY s.line ON CONFLICT (order_id) DO NOTHING "
            "RETURNING order_id, contact_id, ordered_at, amount"
        ),
        (import_id,),
    )
    return list(cur.fetchall())


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
