"""SQLite statements run on the driver's own cursor, for the hot write paths (the event API):
no SQL building and no result machinery per call, the errors of SQLAlchemy all the same."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection


def driver_rows(conn: Connection, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Run one SQLite statement on the driver's cursor (no SQL building, no result
    machinery) in the caller's transaction; its rows. A statement the driver refuses is run
    again through SQLAlchemy, so that its error is the one every caller expects (busy:
    :class:`~winback.store.busy.StoreBusy`; bad data: ``sqlalchemy.exc.IntegrityError``...):
    SQLite undoes a failed statement, and it fails again the same way."""
    raw = conn.connection.driver_connection
    assert raw is not None
    cursor = raw.cursor()
    try:
        cursor.execute(sql, params)
        result: list[tuple[Any, ...]] = cursor.fetchall()
        return result
    except sqlite3.DatabaseError:
        return list(conn.exec_driver_sql(sql, tuple(params)).tuples())
    finally:
        cursor.close()


def driver_count(conn: Connection, sql: str, params: Sequence[Any]) -> int:
    """:func:`driver_rows` for a statement that returns no rows (an ``INSERT`` without
    ``RETURNING``): one step of the driver, whatever the number of rows it writes; the
    number of rows it changed."""
    raw = conn.connection.driver_connection
    assert raw is not None
    cursor = raw.cursor()
    try:
        cursor.execute(sql, params)
        return int(cursor.rowcount)
    except sqlite3.DatabaseError:
        return int(conn.exec_driver_sql(sql, tuple(params)).rowcount)
    finally:
        cursor.close()
