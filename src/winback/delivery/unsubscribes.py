"""One-click unsubscribes, never lost.

Mail providers do not retry a one-click POST (RFC 8058), so an unsubscribe must be kept
whatever the state of the store. Its write is tiny (one short write transaction: consent off
with its log line, the address suppressed, an ``email_unsubscribed`` event). When the store
stays busy for more than :data:`WAIT_SECONDS` (a quarter of a second: a write slice of an
engine pass in another process, a long import), the unsubscribe is recorded instead in the
workspace's inbox, ``inbox/unsubscribes.db`` (a small SQLite file of its own, written
with ``synchronous=FULL``: on disk once recorded), and the request is answered as done.

:func:`apply_pending_unsubscribes` moves what the inbox holds into the store (idempotently:
applying one twice changes nothing) and empties it. It runs after the next unsubscribe that
reaches the store, before every delivery batch (so nothing is sent to an address whose
unsubscribe is still in the inbox), and at the start of each engine pass."""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, select

from winback.delivery.records import record_events, suppress
from winback.delivery.worker.policies import hashed_address
from winback.store.busy import StoreBusy, retry_transient
from winback.store.schema import contacts
from winback.store.tombstones import erased_among

if TYPE_CHECKING:
    from winback.store.repository import Store

log = logging.getLogger("winback.delivery")

#: The inbox, relative to the workspace folder.
INBOX = Path("inbox") / "unsubscribes.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS unsubscribes (
    id INTEGER PRIMARY KEY,
    outbox_id INTEGER NOT NULL,
    contact_id INTEGER NOT NULL,
    email TEXT,
    message_id TEXT,
    flow TEXT,
    step TEXT,
    source TEXT NOT NULL,
    at TEXT NOT NULL
)
"""
_COLUMNS = ("outbox_id", "contact_id", "email", "message_id", "flow", "step", "source", "at")
_create_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """One contact's unsubscribe from the email of one message, at a time."""

    outbox_id: int
    contact_id: int
    email: str | None
    message_id: str | None
    flow: str | None
    step: str | None
    source: str
    at: datetime


def write(conn: Connection, store: Store, u: Unsubscribe) -> bool:
    """The unsubscribe itself, in the caller's write transaction; writing it again changes
    nothing. False when the contact no longer exists (nothing written) or was erased (only
    its address suppressed, hashed)."""
    row = conn.execute(
        select(contacts.c.email, contacts.c.erased_at).where(contacts.c.id == u.contact_id)
    ).first()
    if row is None:
        log.warning("unsubscribe of contact %d dropped: no such contact", u.contact_id)
        return False
    if erased_among(conn, [u.contact_id]):
        # Erased after the unsubscribe arrived: no event or consent row for the tombstone,
        # the address blocked as the erasure keeps it (hashed), as if applied before it.
        if u.email:
            suppress(
                conn,
                channel="email",
                address=hashed_address("email", u.email),
                contact_id=None,
                reason="unsubscribed",
                at=u.at,
            )
        log.info("unsubscribe of contact %d applied to an erased contact", u.contact_id)
        return False
    email = u.email if u.email is not None else row.email
    store.set_consent(
        u.contact_id, "email", False, at=u.at, source=f"unsubscribe:{u.source}", conn=conn
    )
    if email:
        suppress(
            conn,
            channel="email",
            address=email,
            contact_id=u.contact_id,
            reason="unsubscribed",
            at=u.at,
            detail=u.source,
        )
    record_events(
        conn,
        [
            {
                "event_key": f"unsub:{u.outbox_id}",
                "contact_id": u.contact_id,
                "type": "email_unsubscribed",
                "occurred_at": u.at,
                "properties": {"flow": u.flow, "step": u.step, "via": u.source},
                "message_id": u.message_id,
                "machine": False,
            }
        ],
    )
    return True


#: Seconds a one-click unsubscribe waits for the store before it is kept in the inbox
#: instead (at most: ``store_busy_timeout`` when that is shorter).
WAIT_SECONDS = 0.25


def record(
    engine: Engine, store: Store, folder: Path, u: Unsubscribe, *, wait: float = WAIT_SECONDS
) -> bool:
    """Write ``u`` to the store if the store can be had within ``wait`` seconds (True);
    otherwise keep it in the inbox of the workspace in ``folder`` (False). Either way it is
    recorded when this returns."""
    from winback.store.engine import SQLiteConnection

    def apply() -> None:
        with engine.connect() as conn:
            if isinstance(conn, SQLiteConnection):
                conn.busy_timeout = min(wait, conn.busy_timeout)
            with conn.begin():
                write(conn, store, u)

    try:
        retry_transient(apply)
    except StoreBusy:
        keep(folder, u)
        return False
    return True


def inbox_path(workspace_path: Path) -> Path:
    return workspace_path / INBOX


def _open(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    db.execute("PRAGMA synchronous=FULL")
    return db


def keep(workspace_path: Path, u: Unsubscribe) -> None:
    """Record ``u`` in the inbox; on disk when this returns."""
    path = inbox_path(workspace_path)
    with _create_lock:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = _open(path)
    try:
        db.execute(_SCHEMA)
        values = asdict(u)
        values["at"] = u.at.isoformat()
        db.execute(
            f"INSERT INTO unsubscribes ({', '.join(_COLUMNS)}) "  # noqa: S608
            f"VALUES ({', '.join('?' for _ in _COLUMNS)})",
            [values[c] for c in _COLUMNS],
        )
    finally:
        db.close()
    log.info(
        "store busy: unsubscribe of contact %d kept in %s, applied when the store is free",
        u.contact_id,
        path,
    )


def pending(workspace_path: Path) -> list[tuple[int, Unsubscribe]]:
    """What the inbox holds, oldest first, with each entry's inbox id."""
    path = inbox_path(workspace_path)
    if not path.exists():
        return []
    db = _open(path)
    try:
        db.execute(_SCHEMA)
        rows = db.execute(
            f"SELECT id, {', '.join(_COLUMNS)} FROM unsubscribes ORDER BY id"  # noqa: S608
        ).fetchall()
    finally:
        db.close()
    return [
        (
            int(row[0]),
            Unsubscribe(
                outbox_id=int(row[1]),
                contact_id=int(row[2]),
                email=row[3],
                message_id=row[4],
                flow=row[5],
                step=row[6],
                source=str(row[7]),
                at=datetime.fromisoformat(row[8]),
            ),
        )
        for row in rows
    ]


def _forget(workspace_path: Path, ids: list[int]) -> None:
    db = _open(inbox_path(workspace_path))
    try:
        for i in range(0, len(ids), 900):
            chunk = ids[i : i + 900]
            db.execute(
                f"DELETE FROM unsubscribes WHERE id IN ({', '.join('?' for _ in chunk)})",  # noqa: S608
                chunk,
            )
    finally:
        db.close()


def apply_pending_unsubscribes(engine: Engine, store: Store, folder: Path) -> int:
    """Write the unsubscribes waiting in the inbox of the workspace ``folder`` into the store
    (one write transaction) and empty the inbox of them; returns how many. Cheap when the
    inbox is empty (one file check). Raises :class:`~winback.store.busy.StoreBusy` when the
    store is still busy: the inbox is then left as it was, and nothing should be delivered
    until this succeeds."""
    items = pending(folder)
    if not items:
        return 0

    def apply() -> None:
        with engine.begin() as conn:
            for _, u in items:
                write(conn, store, u)

    retry_transient(apply)
    _forget(folder, [i for i, _ in items])
    log.info("applied %d unsubscribe(s) kept while the store was busy", len(items))
    return len(items)
