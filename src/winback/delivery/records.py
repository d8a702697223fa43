"""Store writes shared by delivery, tracking and the event API: events (idempotent by
``event_key``, the contacts' standard attributes moved by :mod:`winback.store.activity`),
suppressions."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import Connection, exc, select, update
from sqlalchemy.dialects import postgresql, sqlite

from winback.channels import normalise_address
from winback.clock import as_utc
from winback.store import activity
from winback.store.driver import driver_count, driver_rows
from winback.store.schema import contacts, events, suppressions
from winback.store.types import sqlite_text


def insert_ignore(
    conn: Connection,
    table: Any,
    rows: Sequence[Mapping[str, Any]],
    key: str,
    *,
    count: bool = True,
) -> int:
    """Insert rows, skipping those whose unique ``key`` exists; returns how many were new
    (with ``count=False``, 0: a plain executemany, without RETURNING, is cheaper)."""
    if not rows:
        return 0
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table).on_conflict_do_nothing(index_elements=[key])
    if not count:
        conn.execute(stmt, list(rows))
        return 0
    return len(conn.execute(stmt.returning(table.c[key]), list(rows)).scalars().all())


def record_events(
    conn: Connection, rows: Sequence[Mapping[str, Any]], *, now: datetime | None = None
) -> int:
    """Insert events (``event_key``, ``contact_id``, ``type``, ``occurred_at``, ``properties``,
    ``message_id``, ``machine``) and move the contacts' standard attributes forward
    (:func:`winback.store.activity.apply_events`, ``updated_at = now``; default: the latest
    event time). Returns the number of new events."""
    return len(store_events(conn, rows, now=now))


def store_events(
    conn: Connection, rows: Sequence[Mapping[str, Any]], *, now: datetime | None = None
) -> list[Mapping[str, Any]]:
    """:func:`record_events`, returning the rows that were new: one per new ``event_key``
    (a key given twice in ``rows`` is stored, counted and applied once, as given first)."""
    full: dict[str, Mapping[str, Any]] = {}
    plain = True  # every row gives the event columns only
    for r in rows:
        key = r["event_key"]
        if key in full:
            continue
        if len(r) != len(EVENT_COLUMNS) or not _COLUMN_SET.issuperset(r):
            r = {**_DEFAULTS, **r}
            plain = plain and _COLUMN_SET.issuperset(r)
        full[key] = r
    if not full:
        return []
    if conn.dialect.name == "sqlite" and plain:
        return _sqlite_store_events(conn, full, now)
    if conn.dialect.name == "postgresql" and plain and len(full) >= COPY_FROM_ROWS:
        inserted = _postgres_copy_events(conn, list(full.values()))
    else:
        inserted = set(conn.execute(_insert_events("postgresql"), list(full.values())).scalars())
    new = [r for key, r in full.items() if key in inserted]
    if new:
        activity.apply_events(
            conn,
            [(int(r["contact_id"]), r["type"], r["occurred_at"], r["machine"]) for r in new],
            now=now or max(r["occurred_at"] for r in new),
        )
    return new


#: The columns an event row gives, in the order of the SQLite statement's values.
EVENT_COLUMNS = (
    "event_key",
    "contact_id",
    "type",
    "occurred_at",
    "properties",
    "message_id",
    "machine",
)

_COLUMN_SET = frozenset(EVENT_COLUMNS)
_DEFAULTS: dict[str, Any] = {"properties": None, "message_id": None, "machine": False}


def _sqlite_store_events(
    conn: Connection, full: dict[str, Mapping[str, Any]], now: datetime | None
) -> list[Mapping[str, Any]]:
    """SQLite: insert the rows (see :func:`_sqlite_insert_events`) and move the contacts'
    attributes from the events just stored, read back by id (the transaction holds the write
    lock, so the ids above the largest before the insert are its own): no row passes through
    Python twice, and each statement is one step of the driver."""
    before = driver_rows(conn, "SELECT coalesce(max(id), 0) FROM events", ())[0][0]
    rows = list(full.values())
    added = _sqlite_insert_events(conn, rows)
    if added == len(rows):
        new = rows
    elif added == 0:
        return []
    else:
        (keys,) = driver_rows(
            conn,
            "SELECT json_group_array(event_key) FROM events NOT INDEXED WHERE id > ?",
            (before,),
        )[0]
        inserted = set(json.loads(keys))
        new = [r for key, r in full.items() if key in inserted]
    activity.apply_stored_events(conn, after=before, now=now or max(r["occurred_at"] for r in new))
    return new


def _sqlite_insert_events(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
    """SQLite: insert the rows with multi-row ``INSERT ... ON CONFLICT DO NOTHING`` statements
    through the driver, with the values as SQLAlchemy would store them (instants as UTC
    text, properties as JSON text); returns how many were new."""
    raw = conn.connection.driver_connection
    assert raw is not None
    per = max(1, raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(EVENT_COLUMNS))
    added = 0
    texts: dict[int, str] = {}  # the rows' instants are often one object (a batch's "now")
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        params: list[Any] = []
        for r in chunk:
            at = r["occurred_at"]
            if isinstance(at, datetime):
                text = texts.get(id(at))
                if text is None:
                    text = texts[id(at)] = sqlite_text(at)
                at = text
            properties = r["properties"]
            params += (
                r["event_key"],
                int(r["contact_id"]),
                r["type"],
                at,
                "null" if properties is None else json.dumps(properties),
                r["message_id"],
                1 if r["machine"] else 0,
            )
        values = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
        sql = (
            "INSERT INTO events (event_key, contact_id, type, occurred_at, properties, "  # noqa: S608 (placeholders only)
            f"message_id, machine) VALUES {values} ON CONFLICT (event_key) DO NOTHING"
        )
        added += driver_count(conn, sql, params)
    return added


#: PostgreSQL: events from this many rows on are inserted through ``COPY`` (fewer: one
#: multi-row ``INSERT``, which costs less for a handful).
COPY_FROM_ROWS = 50
_COLUMNS = ", ".join(EVENT_COLUMNS)
_STAGE = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS events_in ON COMMIT DELETE ROWS AS "  # noqa: S608 (names only)
    f"SELECT {_COLUMNS} FROM events WITH NO DATA"
)
_COPY_IN = f"COPY events_in ({_COLUMNS}) FROM STDIN"
_MOVE_IN = (
    f"WITH moved AS (DELETE FROM events_in RETURNING {_COLUMNS}) "  # noqa: S608 (names only)
    f"INSERT INTO events ({_COLUMNS}) SELECT {_COLUMNS} "
    "FROM moved ON CONFLICT (event_key) DO NOTHING RETURNING event_key"
)


def _postgres_copy_events(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> set[str]:
    """PostgreSQL: ``COPY`` the rows into a temporary table of this session, then move them
    into ``events`` with one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING``
    (three round trips, and no statement of thousands of parameters for the driver to
    build); returns the keys inserted. Errors are SQLAlchemy's, as on the other paths."""
    raw = conn.connection.driver_connection
    assert raw is not None
    statement = _STAGE
    try:
        with raw.cursor() as cursor:
            cursor.execute(_STAGE)
            statement = _COPY_IN
            with cursor.copy(_COPY_IN) as copy:
                for r in rows:
                    copy.write_row(
                        (
                            r["event_key"],
                            int(r["contact_id"]),
                            r["type"],
                            as_utc(r["occurred_at"]),
                            json.dumps(r["properties"]),
                            r["message_id"],
                            bool(r["machine"]),
                        )
                    )
            statement = _MOVE_IN
            cursor.execute(_MOVE_IN)
            return {key for (key,) in cursor.fetchall()}
    except psycopg.Error as error:
        raise exc.DBAPIError.instance(statement, None, error, psycopg.Error) from error


_INSERT_EVENTS: dict[str, Any] = {}


def _insert_events(dialect: str) -> Any:
    """``INSERT ... ON CONFLICT (event_key) DO NOTHING RETURNING event_key``, built once per
    dialect."""
    statement = _INSERT_EVENTS.get(dialect)
    if statement is None:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = (
            insert(events)
            .on_conflict_do_nothing(index_elements=["event_key"])
            .returning(events.c.event_key)
        )
        _INSERT_EVENTS[dialect] = statement
    return statement


def suppress(
    conn: Connection,
    *,
    channel: str,
    address: str,
    contact_id: int | None,
    reason: str,
    at: datetime,
    detail: str | None = None,
) -> bool:
    """Put an address on the suppression list; False when it already was."""
    return (
        insert_ignore_pair(
            conn,
            {
                "channel": channel,
                "address": normalise_address(channel, address),
                "contact_id": contact_id,
                "reason": reason,
                "detail": detail,
                "created_at": at,
            },
        )
        > 0
    )


def insert_ignore_pair(conn: Connection, row: Mapping[str, Any]) -> int:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = (
        dialect.insert(suppressions)
        .on_conflict_do_nothing(index_elements=["channel", "address"])
        .returning(suppressions.c.id)
    )
    # RETURNING, not rowcount: psycopg reports -1 for an INSERT ... ON CONFLICT here.
    return len(conn.execute(stmt, dict(row)).all())


def forget_push_token(conn: Connection, contact_id: int, token: str, *, at: datetime) -> bool:
    """A push provider said the device token is dead (FCM ``UNREGISTERED``, web push 410):
    drop it from the contact's ``push_token`` attribute (when it is still that token) and
    record when, as ``push_unreachable_at``. The token itself stays on the suppression list.
    Returns False when the contact had another token by then."""
    attributes = conn.execute(
        select(contacts.c.attributes).where(contacts.c.id == contact_id)
    ).scalar()
    if not isinstance(attributes, dict) or attributes.get("push_token") != token:
        return False
    changed = {k: v for k, v in attributes.items() if k != "push_token"}
    changed["push_unreachable_at"] = at.isoformat()
    conn.execute(
        update(contacts)
        .where(contacts.c.id == contact_id)
        .values(attributes=changed, updated_at=at)
    )
    return True
