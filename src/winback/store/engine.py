"""Engines for the two supported databases.

SQLite (embedded default) runs in WAL mode with foreign keys on; PostgreSQL uses psycopg 3.
Engines are made by the workspace at open time, never at import time.

Writer discipline, the same on both databases: a write transaction is opened with
``engine.begin()`` or ``conn.begin()``; a connection used without ``begin()`` (autobegun by
its first statement) is for reads. On SQLite an explicit ``begin()`` sends ``BEGIN
IMMEDIATE``, so the transaction takes the write lock at its start and waits for it up to
``store_busy_timeout`` (a deferred transaction that reads and then writes would get
SQLITE_BUSY at once, whatever the timeout); the writers of one process queue for it in
order (:class:`WriteGate`), and the one at the head tries again every millisecond while
another process holds it (so that it gets the lock in the short gap a writer of slices
leaves). Autobegun reads send a deferred ``BEGIN`` and never block a
writer. On PostgreSQL a lock wait is cut short after the same bounded time
(``lock_timeout``). Either way a store still locked after that raises
:class:`~winback.store.busy.StoreBusy` (see :mod:`winback.store.busy`).
"""

from __future__ import annotations

import sqlite3
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from winback.errors import InvalidSetting
from winback.masking import mask_text, mask_url
from winback.store.busy import StoreBusy, is_busy, retry_after_for, translate_errors

#: Seconds a write waits for the store's lock before giving up (``store_busy_timeout``).
DEFAULT_BUSY_TIMEOUT = 10.0
#: SQLite: seconds between two tries of a writer waiting for another process's write lock.
POLL_SECONDS = 0.001


def sqlite_url(path: Path) -> str:
    return f"sqlite+pysqlite:///{path}"


def normalise_url(url: str) -> str:
    """Accept ``postgres://`` and ``postgresql://`` and use the psycopg 3 driver. A URL that
    cannot be parsed or names no known database is an :class:`InvalidSetting` showing it
    with its password hidden."""
    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise InvalidSetting(
            f"database_url {mask_url(url)!r}: {mask_text(str(exc))} (expected "
            "sqlite+pysqlite:///path or postgresql+psycopg://user@host:port/db)"
        ) from None
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


class WriteGate:
    """The writers of one process, queued first come, first served, for the SQLite write
    lock. SQLite's own busy handler polls with growing sleeps: a writer that holds the lock
    in back-to-back slices (an engine pass) can keep the others out until their timeout.
    Behind the gate a waiting writer gets the lock when the holder lets it go. Writers in
    other processes still meet at SQLite's lock (and its busy timeout)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[object] = deque()
        self._holder: weakref.ref[Connection] | None = None

    def _free(self) -> bool:
        # A connection dropped without being closed (garbage collected) lets go as well.
        return self._holder is None or self._holder() is None

    def acquire(self, conn: Connection, timeout: float) -> bool:
        """Take the gate for ``conn``, waiting at most ``timeout`` seconds."""
        me = object()
        deadline = time.monotonic() + timeout
        with self._cond:
            self._queue.append(me)
            while not (self._free() and self._queue[0] is me):
                left = deadline - time.monotonic()
                if left <= 0:
                    self._queue.remove(me)
                    self._cond.notify_all()
                    return False
                self._cond.wait(min(left, 0.5))
            self._queue.popleft()
            self._holder = weakref.ref(conn)
            self._cond.notify_all()
            return True

    def release(self) -> None:
        with self._cond:
            self._holder = None
            self._cond.notify_all()


class SQLiteConnection(Connection):
    """A connection that knows whether its transaction was begun explicitly (a write: ``BEGIN
    IMMEDIATE``, behind the engine's :class:`WriteGate`) or by autobegin (a read: deferred
    ``BEGIN``)."""

    autobeginning = False
    holds_gate = False
    gate: WriteGate | None = None
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT

    def _autobegin(self) -> None:
        self.autobeginning = True
        try:
            super()._autobegin()
        finally:
            self.autobeginning = False

    def _begin_write(self) -> None:
        started = time.monotonic()
        if self.gate is not None:
            if not self.gate.acquire(self, self.busy_timeout):
                wait = retry_after_for(self.busy_timeout)
                raise StoreBusy(
                    f"the store is busy (another writer of this process held it for "
                    f"{self.busy_timeout:g} s); try again in {wait} s",
                    retry_after=wait,
                )
            self.holds_gate = True
        try:
            # The wait at the gate counts: other processes are waited for what is left.
            self._begin_immediate(started + self.busy_timeout)
        except BaseException:
            self._let_go()
            raise

    def _begin_immediate(self, deadline: float) -> None:
        """``BEGIN IMMEDIATE``, trying again every :data:`POLL_SECONDS` while a writer of
        another process holds the lock, until ``deadline``. SQLite's own busy handler sleeps
        in growing steps (up to 100 ms) and so mostly misses the short gaps that a writer in
        back-to-back slices (an engine pass in another process) leaves between them."""
        driver: Any = self.connection.driver_connection
        driver.execute("PRAGMA busy_timeout=0")
        try:
            while True:
                try:
                    driver.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as error:
                    if not is_busy(error):
                        raise
                    if time.monotonic() >= deadline:
                        wait = retry_after_for(self.busy_timeout)
                        raise StoreBusy(
                            f"the store is busy ({error}; another process held it for "
                            f"{self.busy_timeout:g} s); try again in {wait} s",
                            retry_after=wait,
                        ) from error
                    time.sleep(POLL_SECONDS)
        finally:
            driver.execute(f"PRAGMA busy_timeout={round(self.busy_timeout * 1000)}")

    def _let_go(self) -> None:
        if self.holds_gate and self.gate is not None:
            self.holds_gate = False
            self.gate.release()

    def _commit_impl(self) -> None:
        try:
            super()._commit_impl()
        finally:
            self._let_go()

    def _rollback_impl(self) -> None:
        try:
            super()._rollback_impl()
        finally:
            self._let_go()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._let_go()


def _sqlite_begin(conn: Connection) -> None:
    if isinstance(conn, SQLiteConnection):
        if conn.autobeginning:
            conn.exec_driver_sql("BEGIN")
        else:
            conn._begin_write()
        return
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT, **kwargs: Any) -> Engine:
    """An engine for ``url``; writes wait at most ``busy_timeout`` seconds for a lock."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": busy_timeout}, **kwargs)
        engine._connection_cls = type(
            "SQLiteConnection",
            (SQLiteConnection,),
            {"gate": WriteGate(), "busy_timeout": busy_timeout},
        )
        millis = max(0, round(busy_timeout * 1000))

        def pragmas(dbapi_conn: Any, _record: Any) -> None:
            _sqlite_pragmas(dbapi_conn, busy_millis=millis)

        event.listen(engine, "connect", pragmas)
        # Let SQLAlchemy issue BEGIN itself so that transactions are real (pysqlite quirk).
        event.listen(engine, "begin", _sqlite_begin)
    else:
        kwargs.setdefault("pool_pre_ping", True)
        engine = create_engine(url, **kwargs)
        millis = max(0, round(busy_timeout * 1000))

        def lock_timeout(dbapi_conn: Any, _record: Any) -> None:
            with dbapi_conn.cursor() as cur:
                cur.execute(f"SET lock_timeout = {int(millis)}")
            dbapi_conn.commit()

        event.listen(engine, "connect", lock_timeout)
    translate_errors(engine, busy_timeout=busy_timeout)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, *, busy_millis: int) -> None:
    dbapi_conn.isolation_level = None  # autocommit at driver level; SQLAlchemy sends BEGIN
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={int(busy_millis)}")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA temp_store=MEMORY")
    cur.execute("PRAGMA cache_size=-65536")
    # A large write (a flow tick over a million contacts checkpoints once, at its end) can
    # grow the WAL file to a gigabyte; once checkpointed, it is cut back to 64 MiB.
    cur.execute("PRAGMA journal_size_limit=67108864")
    cur.close()


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"
