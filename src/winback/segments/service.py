"""``Workspace.segments``: the segments facade used by the CLI, the HTTP service, the flow
engine and embedding programs."""

from __future__ import annotations

import builtins
import csv
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, text, update

from winback import snapshots
from winback.channels import CONSENT_CHANNELS
from winback.clock import Clock, as_utc
from winback.config import Settings
from winback.csvsafe import safe_cell
from winback.errors import NotFound
from winback.segments.conditions import Condition
from winback.segments.definitions import SegmentDefinition, find, load_definitions
from winback.segments.history import in_past, needs_history
from winback.segments.refresh import (
    Plan,
    SegmentChange,
    SharedCandidates,
    any_open,
    close_stints,
    full_reason,
    inlinable,
    open_stints,
    plan,
    refresh_one,
    shared_candidates,
)
from winback.store.schema import contacts, segment_membership, segments
from winback.store.slices import Pacer, SliceLog, held_connection

#: On PostgreSQL, a segment refresh changing this many stints refreshes the statistics.
ANALYZE_AFTER = 5000
#: PostgreSQL advisory lock held by the worker refreshing segments (the others wait).
REFRESH_LOCK = 0x77696E6273656731  # "winbseg1"
#: Seconds between two tries of a worker waiting for another one's refresh.
LOCK_POLL = 0.05
#: Seconds a refresh leaves the store to other writers after each write slice.
SLICE_GAP = 0.002

#: A refresh at an instant at most this long before the clock's is at the present.
PRESENT_SLACK = timedelta(minutes=1)

#: Columns of a members listing.
MEMBER_COLUMNS = ("contact_id", "customer_id", "email", "first_name", "last_name", "entered_at")
#: Columns of an export: the listing's, consent per channel (true, false, empty: unknown),
#: the purchase history and the analytics of the last ``winback analyze``.
EXPORT_COLUMNS = (
    *MEMBER_COLUMNS,
    *(f"{channel}_consent" for channel in CONSENT_CHANNELS),
    "orders_count",
    "revenue_total",
    "last_purchase_at",
    "rfm_segment",
    "p_alive",
    "clv",
    "analyzed_at",
)


@dataclass(frozen=True)
class MemberPage:
    """A page of a segment's members, and the contact id the next one starts after (None:
    this is the last)."""

    rows: builtins.list[dict[str, Any]]
    next: int | None


@dataclass(frozen=True)
class RefreshResult:
    """What one refresh changed, per segment (in dependency order)."""

    now: datetime
    segments: builtins.list[SegmentChange] = field(default_factory=builtins.list)
    closed: int = 0  # open stints ended because their segment's file was removed
    #: Stopped between two slices (the segments not listed are refreshed next time).
    stopped: bool = False

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.segments)

    def get(self, name: str) -> SegmentChange:
        for s in self.segments:
            if s.name == name:
                return s
        raise NotFound(f"segment {name!r} was not refreshed")

    def to_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "seconds": round(self.seconds, 3),
            "closed": self.closed,
            "segments": [asdict(s) for s in self.segments],
        }


class Segments:
    """Segment definitions (the files in ``folder/segments`` and the shipped defaults) and
    their materialised membership in the store."""

    def __init__(self, engine: Engine, settings: Settings, clock: Clock, folder: Path) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.folder = folder
        self.pacer = Pacer(settings.write_slice_ms, gap=SLICE_GAP)

    # -- definitions ------------------------------------------------------------------------
    def definitions(self) -> dict[str, SegmentDefinition]:
        """Validated definitions in dependency order (raises DefinitionError)."""
        return load_definitions(self.folder, dormant_days=self.settings.dormant_days)

    def validate(self) -> builtins.list[SegmentDefinition]:
        return builtins.list(self.definitions().values())

    def load(self) -> builtins.list[SegmentDefinition]:
        """Validate the definitions and record them in the store (a changed definition is
        refreshed in full next time)."""
        defs = self.definitions()
        with self.engine.begin() as conn:
            _sync(conn, defs, now=self.clock.now())
        return builtins.list(defs.values())

    def get(self, name: str) -> SegmentDefinition:
        return find(self.definitions(), name)

    def list(self) -> builtins.list[dict[str, Any]]:
        """Every defined segment with its current size and last refresh."""
        defs = self.definitions()
        with self.engine.connect() as conn:
            stored = {
                r.name: r
                for r in conn.execute(
                    select(segments.c.name, segments.c.member_count, segments.c.refreshed_at)
                )
            }
        out = []
        for d in defs.values():
            row = stored.get(d.name)
            out.append(
                {
                    "name": d.name,
                    "description": d.description,
                    "source": d.source,
                    "depends_on": sorted(d.depends_on),
                    "members": row.member_count if row is not None else None,
                    "refreshed_at": row.refreshed_at if row is not None else None,
                }
            )
        return out

    def summary(self, name: str) -> dict[str, Any]:
        """One segment as :meth:`list` has it, with its definition (``definition``)."""
        definition = self.get(name)
        row = next(r for r in self.list() if r["name"] == definition.name)
        return {**row, "definition": definition.data}

    # -- refresh ----------------------------------------------------------------------------
    def refresh(
        self,
        now: datetime | None = None,
        *,
        full: bool = False,
        progress: Callable[[str], None] | None = None,
        stop: threading.Event | None = None,
        log: SliceLog | None = None,
    ) -> RefreshResult:
        """Bring every segment's membership up to ``now`` (default: the clock),
        in dependency order. Incremental where sound (see :mod:`winback.segments.refresh`);
        ``full=True`` re-evaluates every contact. Refreshing twice at the same instant
        changes nothing.

        Each segment is refreshed in write slices of contact ids (about ``write_slice_ms``
        each); its ``refreshed_at`` moves with its last slice and its member count with
        every slice. Readers may see a segment half refreshed meanwhile. When ``stop`` is
        set the refresh returns after the slice in progress (``stopped``): the segments not
        finished are completed by the next refresh. On PostgreSQL one worker refreshes at
        a time (an advisory lock): another waits for it to finish (so that no worker steps
        flows on a membership half refreshed), and is done when that refresh was for the
        same instant or a later one."""
        at = as_utc(now) if now is not None else self.clock.now()
        defs = self.definitions()
        changes: builtins.list[SegmentChange] = []
        inline: dict[str, Condition] = {}
        cache_mb = self.settings.segments_cache_mb
        stopping: Callable[[], bool] = (lambda: False) if stop is None else stop.is_set
        with _refresh_connection(self.engine, cache_mb=cache_mb) as conn:
            taken, waited = _lock(conn, stopping)
            if not taken:
                return RefreshResult(at, changes, 0, stopped=True)
            shared: SharedCandidates | None = None
            try:
                if waited and _done_already(conn, defs, at):
                    return RefreshResult(at, changes, 0)
                with self.pacer.slice(("segments", "prepare"), 0, log), conn.begin():
                    rows = _sync(conn, defs, now=at)
                    ids = {name: r["id"] for name, r in rows.items()}
                    gone = [r["id"] for name, r in rows.items() if name not in defs]
                    closed = close_stints(conn, gone, now=at)
                    past = self._in_the_past(conn, defs, at)
                    shared = (
                        None if past else _shared_candidates(conn, defs, rows, now=at, full=full)
                    )
                    low, high = conn.execute(
                        select(func.min(contacts.c.id), func.max(contacts.c.id))
                    ).one()
                    candidates = None
                    if shared is not None:
                        candidates = conn.execute(
                            select(func.count()).select_from(shared.table)
                        ).scalar_one()
                for name, definition in defs.items():
                    if stopping():
                        return RefreshResult(at, changes, closed, stopped=True)
                    if progress is not None:
                        progress(name)
                    change = self._refresh_segment(
                        conn,
                        name,
                        definition,
                        rows[name],
                        now=at,
                        ids=ids,
                        full=full,
                        shared=shared,
                        inline=inline,
                        contact_ids=(int(low or 0), int(high or 0)),
                        candidates=candidates,
                        stopping=stopping,
                        log=log,
                        history=past,
                    )
                    if change is None:
                        return RefreshResult(at, changes, closed, stopped=True)
                    if not past and inlinable(definition.condition, inline):
                        inline[name] = definition.condition
                    changes.append(change)
            finally:
                if conn.in_transaction():
                    conn.rollback()
                if shared is not None:
                    with conn.begin():
                        shared.table.drop(conn, checkfirst=True)
                _unlock(conn)
        if not past:
            self._snapshot(at)
        return RefreshResult(at, changes, closed)

    def _snapshot(self, at: datetime) -> None:
        """The day's member counts, and the day's figures of the base when they are due
        (:mod:`winback.snapshots`): what the dashboard's trends read."""
        with self.engine.begin() as conn:
            snapshots.record_segment_counts(conn, now=at)
        if snapshots.base_is_due(self.engine, at):
            settings = self.settings
            snapshots.take_base(
                self.engine, now=at, days=settings.dormant_days, currency=settings.currency
            )

    def _in_the_past(
        self, conn: Connection, defs: dict[str, SegmentDefinition], at: datetime
    ) -> bool:
        """Whether this refresh evaluates a past instant from history: inside a simulated
        pass at a past day (:func:`winback.segments.history.in_past`), or at an instant
        more than :data:`PRESENT_SLACK` before the clock's when something the definitions
        read is stamped after it. At the clock's time the maintained columns answer, even
        if an event stamped ahead of the clock arrived (ingestion moves them no further
        than the time it applies an event)."""
        if in_past():
            return True
        if at >= self.clock.now() - PRESENT_SLACK:
            return False
        return needs_history(conn, [d.condition for d in defs.values()], at)

    def _refresh_segment(
        self,
        conn: Connection,
        name: str,
        definition: SegmentDefinition,
        row: dict[str, Any],
        *,
        now: datetime,
        ids: dict[str, int],
        full: bool,
        shared: SharedCandidates | None,
        inline: dict[str, Condition],
        contact_ids: tuple[int, int],
        candidates: int | None,
        stopping: Callable[[], bool],
        log: SliceLog | None,
        history: bool = False,
    ) -> SegmentChange | None:
        """One segment, in slices of contact ids; None when stopped before its last.

        A full refresh's slices hold about as many contacts as the pacer gives; an
        incremental one's about as many candidates (the contacts that may have changed,
        taken as evenly spread over the ids), so that a quiet day is one slice."""
        started = time.perf_counter()
        sid = row["id"]
        had_members = any_open(conn, sid)
        conn.rollback()  # a read: no write lock
        entered = exited = 0
        members: int | None = None
        since = row["refreshed_at"]
        incremental = not full_reason(
            plan(definition.condition),
            since=since,
            members_before=row["member_count"],
            now=now,
            full=full,
            history=history,
        )
        low, high = contact_ids
        density = 1.0  # rows of the pacer's unit per contact id
        if incremental and shared is not None and shared.since == since and candidates is not None:
            density = max(candidates, 1) / max(high - low + 1, 1)
        key = ("segment", name, "incremental" if incremental else "full")
        start = low
        while True:
            rows = self.pacer.rows(key)
            width = max(1, int(rows / density))
            last = start + width > high
            with self.pacer.slice(key, rows, log), conn.begin():
                mode, reason, e, x = refresh_one(
                    conn,
                    segment_id=sid,
                    condition=definition.condition,
                    now=now,
                    since=since,
                    segment_ids=ids,
                    members_before=row["member_count"],
                    full=full,
                    shared=shared,
                    inline=inline,
                    window=(start, None if last else start + width - 1),
                    any_open=had_members,
                    history=history,
                )
                entered, exited = entered + e, exited + x
                values: dict[str, Any] = {"member_count": segments.c.member_count + (e - x)}
                if last:
                    if mode == "full" or row["member_count"] is None:
                        values["member_count"] = open_stints(conn, sid)
                    # After a refresh at a past instant, facts stored earlier but dated later
                    # carry no change stamp after it: the next refresh must be full.
                    values["refreshed_at"] = None if history else now
                conn.execute(update(segments).where(segments.c.id == sid).values(values))
                if last:
                    members = conn.execute(
                        select(segments.c.member_count).where(segments.c.id == sid)
                    ).scalar_one()
            if last:
                break
            if stopping():
                return None
            start += width
        if entered + exited >= ANALYZE_AFTER and conn.dialect.name == "postgresql":
            # Fresh statistics, or PostgreSQL plans later statements for the empty table it
            # last saw (nested loops over thousands of stints).
            with conn.begin():
                conn.exec_driver_sql("ANALYZE segment_membership")
        return SegmentChange(
            name,
            mode,  # type: ignore[arg-type]
            entered,
            exited,
            int(members or 0),
            round(time.perf_counter() - started, 4),
            reason,
        )

    # -- membership -------------------------------------------------------------------------
    def _id(self, conn: Connection, name: str) -> int:
        definition = self.get(name)
        found = conn.execute(select(segments.c.id).where(segments.c.name == definition.name))
        sid = found.scalar()
        if sid is None:
            raise NotFound(
                f"segment {definition.name!r} has not been refreshed yet; "
                "run `winback segments refresh`"
            )
        return int(sid)

    def iter_members(
        self, name: str, columns: tuple[str, ...] = MEMBER_COLUMNS
    ) -> Iterator[dict[str, Any]]:
        """Current members in order of entry, read in batches (a server-side cursor on
        PostgreSQL), with ``columns`` (names of :data:`EXPORT_COLUMNS`)."""
        sm = segment_membership
        chosen = [
            contacts.c.id.label("contact_id")
            if c == "contact_id"
            else sm.c.entered_at
            if c == "entered_at"
            else contacts.c[c]
            for c in columns
        ]
        with self.engine.connect() as conn:
            sid = self._id(conn, name)
            query = (
                select(*chosen)
                .select_from(sm.join(contacts, contacts.c.id == sm.c.contact_id))
                .where(sm.c.segment_id == sid, sm.c.exited_at.is_(None))
                .order_by(sm.c.entered_at, contacts.c.id)
            )
            for row in conn.execution_options(yield_per=5000).execute(query).mappings():
                yield dict(row)

    def page(
        self,
        name: str,
        *,
        limit: int,
        after: int | None = None,
        columns: tuple[str, ...] = MEMBER_COLUMNS,
    ) -> MemberPage:
        """Up to ``limit`` current members with a contact id above ``after``, in order of
        contact id, with ``columns`` (names of :data:`EXPORT_COLUMNS`). The order is that
        of the index of open stints (segment, contact) on both databases: a page reads its
        own rows however deep it is, and members entering or leaving between two pages
        shift no other member to another page."""
        sm = segment_membership
        chosen = [
            contacts.c.id.label("contact_id")
            if c == "contact_id"
            else sm.c.entered_at
            if c == "entered_at"
            else contacts.c[c]
            for c in dict.fromkeys(("contact_id", *columns))
        ]
        with self.engine.connect() as conn:
            sid = self._id(conn, name)
            query = (
                select(*chosen)
                .select_from(sm.join(contacts, contacts.c.id == sm.c.contact_id))
                .where(sm.c.segment_id == sid, sm.c.exited_at.is_(None))
                .order_by(sm.c.contact_id)
                .limit(limit + 1)
            )
            if after is not None:
                query = query.where(sm.c.contact_id > after)
            rows = [dict(r) for r in conn.execute(query).mappings()]
        more = len(rows) > limit
        rows = rows[:limit]
        following = int(rows[-1]["contact_id"]) if more else None
        return MemberPage([{c: r[c] for c in columns} for r in rows], following)

    def members(self, name: str, *, limit: int | None = None) -> builtins.list[dict[str, Any]]:
        """Current members (contact id, customer id, email, names, entered_at)."""
        out: builtins.list[dict[str, Any]] = []
        for row in self.iter_members(name):
            if limit is not None and len(out) >= limit:
                break
            out.append(row)
        return out

    def export(self, name: str, path: Path | str) -> int:
        """Write the current members with :data:`EXPORT_COLUMNS` to a CSV file that is safe
        to open in a spreadsheet (cells that would start a formula are prefixed with a
        quote), row by row as they are read. Returns the row count."""
        count = 0
        with Path(path).open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            for i, row in enumerate(self.export_rows(name)):
                writer.writerow(row)
                count += 1 if i else 0
        return count

    def export_rows(self, name: str) -> Iterator[builtins.list[Any]]:
        """The rows of :meth:`export`, header first, each cell safe for a spreadsheet."""
        yield builtins.list(EXPORT_COLUMNS)
        for row in self.iter_members(name, EXPORT_COLUMNS):
            yield [_export_cell(row[c]) for c in EXPORT_COLUMNS]

    def is_member(self, name: str, contact_id: int) -> bool:
        sm = segment_membership
        with self.engine.connect() as conn:
            sid = self._id(conn, name)
            hit = conn.execute(
                select(sm.c.id).where(
                    sm.c.segment_id == sid, sm.c.contact_id == contact_id, sm.c.exited_at.is_(None)
                )
            ).first()
        return hit is not None

    def of_contact(
        self, contact_id: int, *, history: bool = False
    ) -> builtins.list[dict[str, Any]]:
        """The contact's current segments with entry time (``history``: every stint)."""
        sm = segment_membership
        query = (
            select(segments.c.name.label("segment"), sm.c.entered_at, sm.c.exited_at)
            .select_from(sm.join(segments, segments.c.id == sm.c.segment_id))
            .where(sm.c.contact_id == contact_id)
            .order_by(sm.c.entered_at, segments.c.name)
        )
        if not history:
            query = query.where(sm.c.exited_at.is_(None))
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
        if not history:
            for r in rows:
                del r["exited_at"]
        return rows


@contextmanager
def _refresh_connection(engine: Engine, *, cache_mb: int) -> Iterator[Connection]:
    """The connection of a refresh pass, whose slices are each one transaction on it.

    On SQLite it runs with a page cache of ``cache_mb`` and with foreign key checks off (both
    restored before the connection goes back to the pool), and checkpoints the WAL once at
    the end (:func:`~winback.store.slices.held_connection`). Every row a refresh writes is a
    stint whose ``contact_id`` was just read from ``contacts`` and whose ``segment_id`` from
    ``segments``, inside the same write transaction (SQLite has one writer at a time, and a
    WAL snapshot that another writer has moved on cannot write), and a refresh deletes
    nothing; so the checks could never fail, and skipping them halves the cost of writing a
    stint. PostgreSQL keeps its checks (turning them off needs superuser rights)."""
    with held_connection(engine, cache_mb=cache_mb) as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:  # outside a transaction: foreign_keys is a no-op inside one
            _pragma(conn, "PRAGMA foreign_keys=OFF")
        try:
            yield conn
        finally:
            if conn.in_transaction():
                conn.rollback()
            if sqlite:
                _pragma(conn, "PRAGMA foreign_keys=ON")


def _lock(conn: Connection, stopping: Callable[[], bool]) -> tuple[bool, bool]:
    """PostgreSQL: take the refresh's advisory lock for this session, waiting while another
    worker refreshes; returns (taken, waited). Not taken: asked to stop meanwhile. SQLite
    has one writer: (True, False)."""
    if conn.dialect.name != "postgresql":
        return True, False
    waited = False
    while True:
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": REFRESH_LOCK}).scalar()
        conn.commit()
        if got:
            return True, waited
        if stopping():
            return False, waited
        waited = True
        time.sleep(LOCK_POLL)


def _done_already(conn: Connection, defs: dict[str, SegmentDefinition], at: datetime) -> bool:
    """Whether every segment, as defined now, was refreshed at ``at`` or later (by the
    worker this one waited for). What changed since is stamped at or after that refresh
    and is picked up by the next one."""
    rows = {
        r.name: r
        for r in conn.execute(
            select(
                segments.c.name, segments.c.definition, segments.c.source, segments.c.refreshed_at
            )
        )
    }
    conn.rollback()
    for name, d in defs.items():
        row = rows.get(name)
        if row is None or row.definition != d.data or row.source != d.source:
            return False
        if row.refreshed_at is None or as_utc(row.refreshed_at) < at:
            return False
    return True


def _export_cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return round(value, 6)
    return safe_cell(value)


def _unlock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": REFRESH_LOCK})
        conn.commit()


def _pragma(conn: Connection, sql: str) -> Any:
    """Run a pragma on the driver connection (outside SQLAlchemy's transaction)."""
    driver = conn.connection.driver_connection
    assert driver is not None
    row = driver.execute(sql).fetchone()
    return row[0] if row else None


def _shared_candidates(
    conn: Connection,
    defs: dict[str, SegmentDefinition],
    rows: dict[str, dict[str, Any]],
    *,
    now: datetime,
    full: bool,
) -> SharedCandidates | None:
    """One candidate set for the segments refreshed incrementally from the same instant (the
    usual case: all of them), instead of one per statement."""
    by_since: dict[datetime, builtins.list[Plan]] = {}
    for name, definition in defs.items():
        row = rows[name]
        p = plan(definition.condition)
        since, before = row["refreshed_at"], row["member_count"]
        if not full_reason(p, since=since, members_before=before, now=now, full=full):
            by_since.setdefault(since, []).append(p)
    if not by_since:
        return None
    since, plans = max(by_since.items(), key=lambda item: len(item[1]))
    return shared_candidates(conn, plans, since=since, now=now)


def _sync(
    conn: Connection, defs: dict[str, SegmentDefinition], *, now: datetime
) -> dict[str, dict[str, Any]]:
    """Record definitions in ``segments``; returns every stored row by name. A changed
    definition resets ``refreshed_at`` so that its next refresh is full."""
    rows = {
        r["name"]: dict(r)
        for r in conn.execute(
            select(
                segments.c.id,
                segments.c.name,
                segments.c.definition,
                segments.c.source,
                segments.c.refreshed_at,
                segments.c.member_count,
            )
        ).mappings()
    }
    for name, d in defs.items():
        row = rows.get(name)
        if row is None:
            sid = conn.execute(
                insert(segments)
                .values(name=name, definition=d.data, source=d.source, updated_at=now)
                .returning(segments.c.id)
            ).scalar_one()
            rows[name] = {
                "id": sid,
                "name": name,
                "definition": d.data,
                "source": d.source,
                "refreshed_at": None,
                "member_count": None,
            }
        elif row["definition"] != d.data or row["source"] != d.source:
            changed = row["definition"] != d.data
            values: dict[str, Any] = {"definition": d.data, "source": d.source, "updated_at": now}
            if changed:
                values.update(refreshed_at=None, member_count=None)
                row.update(refreshed_at=None, member_count=None)
            conn.execute(update(segments).where(segments.c.id == row["id"]).values(values))
            row.update(definition=d.data, source=d.source)
    return rows
