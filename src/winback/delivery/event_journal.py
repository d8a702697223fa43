"""The event journal: what the event API accepted, kept on disk until it is in the store.

A request's events are validated, appended to the journal (``inbox/events.db`` in the
workspace folder, a small SQLite database of its own in WAL mode) and only then answered
``202``. The applier (:mod:`winback.delivery.event_intake`) reads the oldest entries, writes
their events to the store in one set-based transaction, and deletes them from the journal
once that transaction has committed. A crash between the two leaves them in the journal:
they are written again, which changes nothing (events are unique by key, orders by order
id). An entry the store refuses is moved to the journal's ``rejected`` table with the
reason.

Each entry is one request as it arrived (its JSON body, a single event or a batch) with the
time it was received, which stands for the ``occurred_at`` of events that have none: an
entry is read back exactly as it was validated.

Durability: the journal is written like the store (WAL, ``synchronous=NORMAL``): an entry
survives the end of the process (kill -9 included) once appended; like the store's own
last commits, the last entries can be lost if the machine loses power."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from winback.store.busy import StoreBusy

#: The journal, relative to the workspace folder.
JOURNAL = Path("inbox") / "events.db"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS entries ("
    "id INTEGER PRIMARY KEY, received_at TEXT NOT NULL, batch INTEGER NOT NULL, "
    "events INTEGER NOT NULL, total INTEGER NOT NULL, body BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rejected ("
    "id INTEGER PRIMARY KEY, received_at TEXT NOT NULL, batch INTEGER NOT NULL, "
    "events INTEGER NOT NULL, body BLOB NOT NULL, reason TEXT NOT NULL, rejected_at TEXT NOT NULL)",
)
#: Seconds a journal write waits for the journal's own lock (held by the applier's delete
#: for a few milliseconds at most).
LOCK_SECONDS = 5.0
#: Pages of WAL after which the journal is checkpointed (SQLite's default is 1,000): the
#: applier checkpoints it when it has emptied the journal, appends never wait for it.
WAL_PAGES = 16_384


#: One record appended in one statement: the running total moved on, refused (no row) when
#: the journal already holds events and would then hold more than the limit (?5).
_APPEND_ONE = (
    "INSERT INTO entries (received_at, batch, events, total, body) "
    "SELECT ?1, ?2, ?3, coalesce(last, 0) + ?3, ?4 FROM ("
    "SELECT (SELECT total FROM entries ORDER BY id DESC LIMIT 1) AS last, "
    "(SELECT total - events FROM entries ORDER BY id LIMIT 1) AS first) "
    "WHERE coalesce(last - first, 0) = 0 OR coalesce(last - first, 0) + ?3 <= ?5"
)
_NO_LIMIT = 2**62

#: Seconds a client is asked to wait when the journal is full.
FULL_RETRY_SECONDS = 5


class JournalFull(StoreBusy):
    """The journal holds as many accepted events as it may: the store is not keeping up."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One request's events: its body as received, and when."""

    id: int
    received_at: datetime
    batch: bool
    events: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Record:
    """What a request appends: its body, whether it is a batch, how many events."""

    received_at: datetime
    batch: bool
    events: int
    body: bytes


class EventJournal:
    """The journal of one workspace; safe to use from several threads (one SQLite
    connection each)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._create = threading.Lock()

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            with self._create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(
                    self.path, timeout=LOCK_SECONDS, isolation_level=None, check_same_thread=False
                )
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
                for statement in _SCHEMA:
                    db.execute(statement)
            self._local.db = db
        return db

    def _db_now(self) -> sqlite3.Connection:
        """This thread's connection for :meth:`try_append`: it never waits for the lock and
        never checkpoints (the applier does)."""
        db: sqlite3.Connection | None = getattr(self._local, "now", None)
        if db is None:
            self._db()  # the file and its tables
            db = sqlite3.connect(
                self.path, timeout=0, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA wal_autocheckpoint=0")
            self._local.now = db
        return db

    def try_append(self, records: Sequence[Record], *, limit: int | None = None) -> bool:
        """:meth:`append` if the journal's lock is free at once (True), else nothing (False);
        for a caller that must not wait (an event loop). One record is appended by a single
        statement (its own transaction: the limit checked, the running total taken and the
        row written under one lock, one commit)."""
        db = self._db_now()
        if len(records) == 1:
            return self._try_append_one(db, records[0], limit)
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):
                return False
            raise
        try:
            self._insert(db, records, limit)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return True

    def _try_append_one(self, db: sqlite3.Connection, record: Record, limit: int | None) -> bool:
        try:
            cursor = db.execute(
                _APPEND_ONE,
                (
                    record.received_at.isoformat(),
                    int(record.batch),
                    record.events,
                    record.body,
                    _NO_LIMIT if limit is None else limit,
                ),
            )
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):
                return False
            raise
        if cursor.rowcount == 1:
            return True
        assert limit is not None  # refused by the limit alone
        raise JournalFull(
            f"{self._waiting(db)} accepted events are still to be written to the store "
            f"(at most {limit} wait); try again shortly",
            retry_after=FULL_RETRY_SECONDS,
        )

    def _insert(self, db: sqlite3.Connection, records: Sequence[Record], limit: int | None) -> None:
        waiting = self._waiting(db)
        adding = sum(r.events for r in records)
        if limit is not None and waiting and waiting + adding > limit:
            raise JournalFull(
                f"{waiting} accepted events are still to be written to the store "
                f"(at most {limit} wait); try again shortly",
                retry_after=FULL_RETRY_SECONDS,
            )
        row = db.execute("SELECT total FROM entries ORDER BY id DESC LIMIT 1").fetchone()
        total = int(row[0]) if row else 0
        rows = []
        for r in records:
            total += r.events
            rows.append((r.received_at.isoformat(), int(r.batch), r.events, total, r.body))
        db.executemany(
            "INSERT INTO entries (received_at, batch, events, total, body) VALUES (?, ?, ?, ?, ?)",
            rows,
        )

    def append(self, records: Sequence[Record], *, limit: int | None = None) -> None:
        """Append the records in one transaction: in the journal's file when this returns.
        :class:`StoreBusy` when the journal stayed locked past :data:`LOCK_SECONDS`, and
        :class:`JournalFull` (nothing appended) when it would then hold more than ``limit``
        events not yet applied."""
        try:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                self._insert(db, records, limit)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):
                raise StoreBusy(f"the event journal is busy ({error}); try again") from error
            raise

    def oldest(self, max_events: int) -> list[Entry]:
        """The oldest entries, as many as hold ``max_events`` events (at least one entry)."""
        rows = (
            self._db()
            .execute(
                "SELECT id, received_at, batch, events, body FROM entries ORDER BY id LIMIT ?",
                (max(1, max_events),),
            )
            .fetchall()
        )
        taken: list[Entry] = []
        total = 0
        for row in rows:
            if taken and total + int(row[3]) > max_events:
                break
            total += int(row[3])
            taken.append(
                Entry(int(row[0]), datetime.fromisoformat(row[1]), bool(row[2]), row[3], row[4])
            )
        return taken

    def forget(self, entries: Sequence[Entry]) -> None:
        """Delete entries whose events are in the store."""
        ids = [e.id for e in entries]
        db = self._db()
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            db.execute(
                f"DELETE FROM entries WHERE id IN ({', '.join('?' * len(chunk))})",  # noqa: S608
                chunk,
            )

    def reject(self, entry: Entry, reason: str, at: datetime) -> None:
        """Move an entry the store refused to the ``rejected`` table, with the reason."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT INTO rejected (id, received_at, batch, events, body, reason, "
                "rejected_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.id,
                    entry.received_at.isoformat(),
                    int(entry.batch),
                    entry.events,
                    entry.body,
                    reason,
                    at.isoformat(),
                ),
            )
            db.execute("DELETE FROM entries WHERE id = ?", (entry.id,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @staticmethod
    def _waiting(db: sqlite3.Connection) -> int:
        """Events in the journal, from the running totals of its first and last entries
        (two index look-ups, whatever its size)."""
        row = db.execute(
            "SELECT (SELECT total FROM entries ORDER BY id DESC LIMIT 1) - "
            "(SELECT total - events FROM entries ORDER BY id LIMIT 1)"
        ).fetchone()
        return int(row[0] or 0)

    def waiting(self) -> int:
        """Events waiting to be applied (two index look-ups, whatever the journal's size)."""
        return self._waiting(self._db())

    def backlog(self) -> tuple[int, int]:
        """Entries and events waiting to be applied."""
        row = (
            self._db().execute("SELECT count(*), coalesce(sum(events), 0) FROM entries").fetchone()
        )
        return int(row[0]), int(row[1])

    def rejected(self) -> list[dict[str, object]]:
        """The entries the store refused: id, when received and refused, why, the body."""
        rows = (
            self._db()
            .execute("SELECT id, received_at, rejected_at, reason, body FROM rejected ORDER BY id")
            .fetchall()
        )
        keys = ("id", "received_at", "rejected_at", "reason", "body")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def checkpoint(self) -> None:
        """Copy the WAL into the journal's file (PASSIVE: never waits for the appenders)."""
        self._db().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def close(self) -> None:
        """Close this thread's connections (other threads' close when they end)."""
        for name in ("db", "now"):
            db: sqlite3.Connection | None = getattr(self._local, name, None)
            if db is not None:
                db.close()
                setattr(self._local, name, None)
