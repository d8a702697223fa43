"""Engines for the two supported databases.

SQLite (embedded default) runs in WAL mode with foreign keys on; PostgreSQL uses psycopg 3.
Engines are made by the workspace at open time, never at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url


def sqlite_url(path: Path) -> str:
    return f"sqlite+pysqlite:///{path}"


def normalise_url(url: str) -> str:
    """Accept ``postgres://`` and ``postgresql://`` and use the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


class SQLiteConnection(Connection):
    """A connection that knows whether its transaction was begun explicitly (a write: ``BEGIN
    IMMEDIATE``) or by autobegin (a read: deferred ``BEGIN``)."""

    autobeginning = False

    def _autobegin(self) -> None:
        self.autobeginning = True
        try:
            super()._autobegin()
        finally:
            self.autobeginning = False


def _sqlite_begin(conn: Connection) -> None:
    deferred = isinstance(conn, SQLiteConnection) and conn.autobeginning
    conn.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")


def make_engine(url: str, **kwargs: Any) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        engine._connection_cls = SQLiteConnection
        event.listen(engine, "connect", _sqlite_pragmas)
        # Let SQLAlchemy issue BEGIN itself so that transactions are real (pysqlite quirk).
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # autocommit at driver level; SQLAlchemy sends BEGIN
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA temp_store=MEMORY")
    cur.execute("PRAGMA cache_size=-65536")
    # A large write (a flow tick over a million contacts checkpoints once, at its end) can
    # grow the WAL file to a gigabyte; once checkpointed, it is cut back to 64 MiB.
    cur.execute("PRAGMA journal_size_limit=67108864")
    cur.close()


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"
