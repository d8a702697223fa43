"""Write slices: long passes (segment refresh, enrolment, flow steps) commit in transactions
sized to hold the write lock about ``write_slice_ms`` each, so that other writers (HTTP
requests, another worker) get the store between them.

A :class:`Pacer` learns, per kind of work (its key), how many rows one slice can take within
the budget: it times each slice and scales the next one's row count toward the budget (by
at most :data:`GROWTH` either way, between a minimum and the caller's maximum). After each
commit it gives the store to the writers that wait for it: on SQLite the writers of this
process queue first come, first served at the engine's write gate
(:class:`winback.store.engine.WriteGate`), so a writer that waited during a slice gets the
lock as soon as the slice commits, before the pass's next slice; writers of other processes
meet at SQLite's own lock, and the pacer pauses ``gap`` seconds after each slice for them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, Engine

DEFAULT_SLICE_MS = 200
#: A slice takes at least this many rows (below it the statements' fixed cost dominates).
MIN_ROWS = 100
#: Rows of a key's first slice.
FIRST_ROWS = 5_000
#: The next slice takes at most this factor more (or less) rows than the last one.
GROWTH = 8.0
#: SQLite: WAL pages (4 KiB each) a pass lets accumulate before a checkpoint copies them into
#: the database file (SQLite's default is 1,000). A checkpoint after every slice copied the
#: pages that many slices share (index interiors, the outbox's tail) again each time and
#: synced the file each time; the pass checkpoints once at its end instead.
PASS_WAL_PAGES = 262_144


@dataclass
class SliceLog:
    """The write slices of one pass: how many, and the longest (seconds, commit included)."""

    slices: int = 0
    longest: float = 0.0
    total: float = 0.0

    def note(self, seconds: float) -> None:
        self.slices += 1
        self.total += seconds
        self.longest = max(self.longest, seconds)

    def add(self, other: SliceLog) -> None:
        self.slices += other.slices
        self.total += other.total
        self.longest = max(self.longest, other.longest)


class Slice:
    """One timed slice: ``rows`` may be corrected inside the block (e.g. rows actually
    taken); ``rows = 0`` records nothing (an empty slice says nothing of the rate)."""

    def __init__(self, rows: int) -> None:
        self.rows = rows


class Pacer:
    """Rows per write slice, adapted to a time budget (see the module notes)."""

    def __init__(
        self,
        budget_ms: float = DEFAULT_SLICE_MS,
        *,
        gap: float = 0.0,
        first_rows: int = FIRST_ROWS,
    ) -> None:
        self.budget = max(float(budget_ms), 1.0) / 1000.0
        self.gap = gap
        self.first_rows = first_rows
        self._next: dict[Hashable, int] = {}
        self._lock = threading.Lock()

    def rows(self, key: Hashable, *, maximum: int | None = None) -> int:
        """Rows the next slice of ``key`` should take."""
        with self._lock:
            rows = self._next.get(key, self.first_rows)
        return max(1, min(rows, maximum)) if maximum is not None else rows

    def record(self, key: Hashable, rows: int, seconds: float) -> None:
        if rows <= 0:
            return
        scale = self.budget / max(seconds, 1e-4)
        scale = min(max(scale, 1.0 / GROWTH), GROWTH)
        with self._lock:
            self._next[key] = max(MIN_ROWS, int(rows * scale))

    @contextmanager
    def slice(self, key: Hashable, rows: int, log: SliceLog | None = None) -> Iterator[Slice]:
        """Time the block (one write transaction, commit included), learn from it, then
        give the store to the writers waiting for it (see the module notes)."""
        piece = Slice(rows)
        started = time.perf_counter()
        yield piece
        seconds = time.perf_counter() - started
        self.record(key, piece.rows, seconds)
        if log is not None:
            log.note(seconds)
        time.sleep(self.gap)


@contextmanager
def held_connection(engine: Engine, *, cache_mb: int | None = None) -> Iterator[Connection]:
    """One connection for the slices of a pass. On SQLite it checkpoints the WAL once, when
    the pass ends, rather than after every slice (:data:`PASS_WAL_PAGES` bounds the WAL
    meanwhile); each slice still commits on its own (a commit in WAL mode is durable once it
    is in the WAL). ``cache_mb`` (SQLite): the connection's page cache meanwhile, restored
    afterwards."""
    with engine.connect() as conn:
        raw = conn.connection.driver_connection if conn.dialect.name == "sqlite" else None
        before = cache = 0
        if raw is not None:
            before = int(raw.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
            raw.execute(f"PRAGMA wal_autocheckpoint={max(before, PASS_WAL_PAGES)}")
            if cache_mb is not None:
                cache = int(raw.execute("PRAGMA cache_size").fetchone()[0])
                raw.execute(f"PRAGMA cache_size={-1024 * int(cache_mb)}")
        try:
            yield conn
        finally:
            if conn.in_transaction():
                conn.rollback()
            if raw is not None:
                raw.execute(f"PRAGMA wal_autocheckpoint={before}")
                if cache_mb is not None:
                    raw.execute(f"PRAGMA cache_size={cache}")
                # PASSIVE: copies what no reader still needs, never waits for readers.
                raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
