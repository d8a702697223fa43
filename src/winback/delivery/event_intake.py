"""The event API's way into the store, in two steps.

1. **Accept.** A request's events are validated (everything the store would refuse that can
   be known without it: the schema, purchase properties, ``machine`` flags, dates), then its
   body is appended to the event journal (:mod:`winback.delivery.event_journal`): at once
   when the journal's lock is free, otherwise by group commit
   (:mod:`winback.delivery.ingest_queue`: the requests that arrive while one append commits
   share the next one). The request is answered once its entry is on disk: ``202``
   with the number of events accepted.
2. **Apply.** The applier (a thread of the engine's process under ``winback serve``, of
   the serving process otherwise) takes the oldest entries, as
   many events as one write slice of about :data:`APPLY_SLICE_MS` holds, and writes them through
   :func:`winback.delivery.inbound.ingest` (the single write path of contact activity) in
   one store transaction, then deletes them from the journal. Duplicates (an ``event_id``
   seen before, an order id recorded before) are decided here, by the store's unique keys:
   an entry applied twice (a crash between the store's commit and the journal's delete)
   changes nothing the second time. When the store refuses a group's data, its entries are
   applied one by one and the one refused is moved to the journal's ``rejected`` table, with
   the reason, in the log as well.

When the store is busy (an engine slice, another process) the applier waits and the API
still answers: acceptance never waits for the store. What waits is the events' effect on
the store (a contact's ``last_seen``, an ``email_unsubscribed`` event's consent change),
usually well under a second behind."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import Connection, exc

from winback.clock import as_utc
from winback.delivery.event_journal import JOURNAL, Entry, EventJournal, Record
from winback.delivery.inbound import (
    PURCHASE_TYPES,
    EventIn,
    PurchaseProperties,
    machine_flag,
)
from winback.delivery.ingest_queue import IngestQueue
from winback.errors import WinbackError
from winback.store.busy import StoreBusy, retry_transient
from winback.store.slices import Pacer, held_connection

if TYPE_CHECKING:
    from winback.delivery import Delivery

log = logging.getLogger("winback.delivery")

#: Errors that, for entries applied alone, mean that their data cannot be recorded.
_DATA_ERRORS = (
    exc.DataError,
    exc.IntegrityError,
    exc.InterfaceError,
    exc.ProgrammingError,
    ValidationError,
    ValueError,
    TypeError,
    OverflowError,
)

#: Most events one store transaction of the applier takes (the pacer usually takes fewer).
MAX_APPLY_EVENTS = 20_000
#: Events of the applier's first transaction (then scaled to the slice budget).
FIRST_APPLY_EVENTS = 500
#: Fewest events one transaction of the applier takes while the journal holds that many:
#: a transaction writes each page it changed once, at its commit, so on a large store a
#: slice of 100 page views writes about 2 pages an event to SQLite's WAL, one of 500 about
#: 1.7, one of 5,000 about 0.8. A machine short of CPU stretches every slice's time and
#: would otherwise shrink the slices, and so make each event cost more, just when CPU is
#: scarce.
MIN_APPLY_EVENTS = 500
#: The applier's write slices aim at this many milliseconds of write lock (or
#: ``write_slice_ms`` when shorter), as an engine pass's do: other writers of the store
#: (clicks, feedback) wait at most about one slice, and a one-click unsubscribe that cannot
#: have the store within its quarter of a second is kept in the unsubscribe inbox. Each
#: page a transaction changed is written to SQLite's WAL once, at its commit, so a longer
#: slice writes fewer pages per event: on a 100,000-contact store an event costs about 47 us
#: of CPU in transactions of 500 events, 29 us in transactions of 5,000.
APPLY_SLICE_MS = 200
#: While the journal holds more than a few slices' worth of events (a burst, or the store
#: shared with an engine pass whose slices take turns with the applier's), the applier's
#: slices aim at this factor of :data:`APPLY_SLICE_MS`: it catches up with fewer pages
#: written an event and a larger share of the write lock, and other writers still wait
#: well under a second (a one-click unsubscribe goes to its inbox after a quarter of one).
CATCH_UP_FACTOR = 2
#: Slices' worth of events waiting in the journal from which the applier catches up.
CATCH_UP_SLICES = 3
#: Seconds the applier sleeps when the journal is empty and nobody wakes it.
IDLE_SECONDS = 1.0
#: Seconds the applier waits after the store stayed busy, or after an unexpected error.
RETRY_SECONDS = 0.5
#: Accepted events the journal may hold before the API refuses more with 503 (the store
#: then takes minutes to catch up: it applies several thousand events a second).
MAX_BACKLOG_EVENTS = 1_000_000
#: Events the applier applies between two checkpoints of the journal's WAL while it keeps
#: finding entries (appends never checkpoint).
CHECKPOINT_EVENTS = 100_000
#: Seconds :meth:`EventIntake.close` keeps applying what the journal holds at shutdown.
DRAIN_SECONDS = 30.0


class EventsRejected(WinbackError):
    """The events of one request cannot be recorded."""


#: Most events one batch request may carry.
MAX_BATCH = 1_000


class EventBatchIn(BaseModel):
    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)


class EventsAccepted(BaseModel):
    accepted: int = Field(
        description="Events in the request, now in the event journal: each is applied to the "
        "store once (a repeated event_id or order id is recorded once)."
    )


#: How far after the server's clock an event may be dated (clock skew between shop and server).
FUTURE_TOLERANCE = timedelta(days=1)


def parse(body: bytes, *, batch: bool) -> list[EventIn]:
    """A request body's events (ValidationError when it is not a valid one). Bodies that
    only Python's JSON reader takes (a lone surrogate, which properties keep as U+FFFD;
    NaN, refused with its place) are read by it, so that the same body always gives the
    same events or the same error."""
    model: type[BaseModel] = EventBatchIn if batch else EventIn
    try:
        parsed = model.model_validate_json(body)
    except ValidationError as error:
        if not any(e["type"] == "json_invalid" for e in error.errors()):
            raise
        try:
            data = json.loads(body)
        except ValueError:
            raise error from None
        parsed = model.model_validate(data)
    if isinstance(parsed, EventBatchIn):
        return parsed.events
    assert isinstance(parsed, EventIn)
    return [parsed]


def validate(items: Iterable[EventIn], now: datetime | None = None) -> None:
    """Refuse what ``ingest`` would refuse (pydantic ValidationError for purchase
    properties), and what it must not record: an ``occurred_at`` more than
    :data:`FUTURE_TOLERANCE` after ``now`` (a contact seen "in 9999" would never become
    dormant), a ``machine`` property that is not a boolean."""
    for n, e in enumerate(items):
        if e.type in PURCHASE_TYPES:
            PurchaseProperties.model_validate(e.properties)
        if "machine" in e.properties:
            try:
                machine_flag(e.properties["machine"])
            except ValueError as exc:
                raise EventsRejected(f"event {n}: {exc}") from None
        if e.occurred_at is not None:
            try:
                at = as_utc(e.occurred_at)
            except OverflowError:
                raise EventsRejected(
                    f"event {n}: occurred_at {e.occurred_at.isoformat()} is out of range in UTC"
                ) from None
            if now is not None and at > now + FUTURE_TOLERANCE:
                raise EventsRejected(
                    f"event {n}: occurred_at {e.occurred_at.isoformat()} is more than a day "
                    f"after the server's clock ({now.isoformat(timespec='seconds')})"
                )


def _dated(entry: Entry) -> list[EventIn]:
    """An entry's events, those without ``occurred_at`` dated when it was received."""
    items = parse(entry.body, batch=entry.batch)
    for e in items:
        if e.occurred_at is None:
            e.occurred_at = entry.received_at  # the models are read here, owned by no one else
    return items


def _reason(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class EventIntake:
    """One per workspace (``workspace.delivery.event_intake``)."""

    def __init__(self, delivery: Delivery) -> None:
        self._delivery = delivery
        self.journal = EventJournal(delivery.folder / JOURNAL)
        self.queue: IngestQueue[Record, int] = IngestQueue(
            self._append_group, self._append_one, name="winback-event-journal"
        )
        budget = min(delivery.settings.write_slice_ms, APPLY_SLICE_MS)
        self.pacer = Pacer(budget, first_rows=FIRST_APPLY_EVENTS)
        self.catch_up = Pacer(budget * CATCH_UP_FACTOR, first_rows=FIRST_APPLY_EVENTS)
        self._apply_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._applier: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.idle_seconds = IDLE_SECONDS
        #: Requests :meth:`accept` appended itself (the others went through :attr:`queue`).
        self.appended_here = 0
        #: Most accepted events the journal holds before requests are refused (503).
        self.max_backlog = MAX_BACKLOG_EVENTS
        #: Whether accepting starts this process's applier; False when another process of
        #: the service (the engine's) applies the journal.
        self.applies_here = True
        #: Events applied (new or duplicate) and entries rejected, for tests and benchmarks.
        self.applied = 0
        self.rejected = 0

    # -- accepting ------------------------------------------------------------------------
    def accept(self, body: bytes, *, batch: bool) -> Future[int]:
        """Validate one request's body and append it to the journal; the future gives the
        number of events once the entry is on disk (or the error that kept it out:
        ValidationError and :class:`EventsRejected` at once, StoreBusy)."""
        now = self._delivery.clock.now()
        items = parse(body, batch=batch)
        validate(items, now)
        record = Record(now, batch, len(items), body)
        if self.applies_here:
            self.start()
        # The usual case: the journal is free, the entry is appended here and now (no
        # hand-over to the appender thread and back); otherwise it queues for the next group.
        if self.journal.try_append([record], limit=self.max_backlog):
            self._wake.set()
            self.appended_here += 1
            done: Future[int] = Future()
            done.set_result(record.events)
            return done
        return self.queue.submit([record])

    def submit(self, items: Sequence[EventIn]) -> Future[int]:
        """:meth:`accept` for events already read (a batch written as the API would get it)."""
        now = self._delivery.clock.now()
        validate(items, now)
        payload = [e.model_dump(mode="json", exclude_none=True) for e in items]
        body = json.dumps({"events": payload}).encode("ascii")
        return self._submit(Record(now, True, len(items), body))

    def _submit(self, record: Record) -> Future[int]:
        if self.applies_here:
            self.start()
        return self.queue.submit([record])

    def _append_group(self, requests: Sequence[Sequence[Record]]) -> list[int]:
        self.journal.append([r for records in requests for r in records], limit=self.max_backlog)
        self._wake.set()
        return [sum(r.events for r in records) for records in requests]

    def _append_one(self, records: Sequence[Record]) -> int:
        return self._append_group([records])[0]

    # -- applying -------------------------------------------------------------------------
    def start(self, *, idle: float = IDLE_SECONDS) -> None:
        """Start the applier thread (if it is not running): it applies what the journal
        holds, then what is appended, until :meth:`close`. When idle it looks at the
        journal again after ``idle`` seconds, or at once when this process appends."""
        self.idle_seconds = idle
        with self._start_lock:
            if self._applier is not None and self._applier.is_alive():
                return
            self._stop.clear()
            self._applier = threading.Thread(
                target=self._run, name="winback-event-applier", daemon=True
            )
            self._applier.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.drain(until=self._stop)
            except StoreBusy as busy:
                log.info("event journal: the store is busy (%s); applying again shortly", busy)
                self._stop.wait(RETRY_SECONDS)
                continue
            except Exception:
                log.exception("event journal: applying failed; trying again")
                self._stop.wait(RETRY_SECONDS)
                continue
            self._wake.wait(self.idle_seconds)
            self._wake.clear()
        self.journal.close()

    def drain(self, *, until: threading.Event | None = None, deadline: float | None = None) -> int:
        """Apply the journal's entries until it is empty (or ``until`` is set, or the
        monotonic ``deadline`` has passed); returns the events applied. One connection for
        the whole run on SQLite, checkpointed once at its end."""
        engine = self._delivery.engine
        done = checkpointed = 0
        with self._apply_lock, held_connection(engine) as conn:
            while not (until is not None and until.is_set()):
                if deadline is not None and time.monotonic() > deadline:
                    break
                applied = self._apply_next(conn)
                if applied is None:
                    break
                done += applied
                if done - checkpointed >= CHECKPOINT_EVENTS:  # a long run under load
                    self.journal.checkpoint()
                    checkpointed = done
        if done:
            self.journal.checkpoint()
        return done

    def apply_pending(self) -> int:
        """Apply everything the journal holds now, in this thread; returns the events."""
        return self.drain()

    def _apply_next(self, conn: Connection) -> int | None:
        """Apply the oldest entries (one transaction); None when the journal is empty."""
        pacer = self.pacer
        maximum = max(MIN_APPLY_EVENTS, pacer.rows("events", maximum=MAX_APPLY_EVENTS))
        if self.journal.waiting() > CATCH_UP_SLICES * maximum:
            pacer = self.catch_up
            maximum = max(MIN_APPLY_EVENTS, pacer.rows("events", maximum=MAX_APPLY_EVENTS))
        entries = self.journal.oldest(maximum)
        if not entries:
            return None
        events = sum(e.events for e in entries)
        try:
            items = [e for entry in entries for e in _dated(entry)]
            retry_transient(lambda: self._write(conn, items, pacer))
        except StoreBusy:
            raise
        except _DATA_ERRORS as error:
            if len(entries) == 1:
                self._reject(entries[0], error)
                return 0
            log.info(
                "event journal: %d entries refused together (%s); applying them one by one",
                len(entries),
                _reason(error),
            )
            return sum(self._apply_alone(conn, entry) for entry in entries)
        self.journal.forget(entries)
        self.applied += events
        return events

    def _apply_alone(self, conn: Connection, entry: Entry) -> int:
        try:
            items = _dated(entry)
            retry_transient(lambda: self._write(conn, items, self.pacer))
        except StoreBusy:
            raise
        except _DATA_ERRORS as error:
            self._reject(entry, error)
            return 0
        self.journal.forget([entry])
        self.applied += entry.events
        return entry.events

    def _write(self, conn: Connection, items: list[EventIn], pacer: Pacer) -> None:
        """One write transaction. The pacer learns from the time it held the store's write
        lock (from ``BEGIN`` to the commit), not from the wait for it: a wait behind another
        writer's slice (an engine pass) says nothing of how many events fit in the budget."""
        with conn.begin():
            locked = time.perf_counter()
            self._delivery.ingest(items, conn=conn, now=self._delivery.clock.now())
        pacer.record("events", len(items), time.perf_counter() - locked)

    def _reject(self, entry: Entry, error: BaseException) -> None:
        reason = _reason(error)
        self.journal.reject(entry, reason, self._delivery.clock.now())
        self.rejected += 1
        log.error(
            "event journal: entry %d (%d events received %s) refused by the store and kept "
            "in %s, table rejected: %s",
            entry.id,
            entry.events,
            entry.received_at.isoformat(),
            self.journal.path,
            reason,
        )

    def backlog(self) -> tuple[int, int]:
        """Entries and events in the journal, not yet applied."""
        return self.journal.backlog()

    def close(self, *, drain_seconds: float = DRAIN_SECONDS) -> None:
        """Append what is queued, stop the applier, then apply what the journal holds for up
        to ``drain_seconds`` (what is left stays in the journal, applied at the next start).
        Where another process applies the journal (``applies_here`` False), that process
        drains it, not this one."""
        self.queue.close()
        with self._start_lock:
            applier, self._applier = self._applier, None
        self._stop.set()
        self._wake.set()
        if applier is not None:
            applier.join()
        try:
            if self.applies_here:
                self.drain(deadline=time.monotonic() + drain_seconds)
        except Exception as error:
            left = self.journal.backlog()[1]
            log.warning(
                "event journal: %d events left for the next start (%s: %s)",
                left,
                type(error).__name__,
                error,
            )
        finally:
            self.journal.close()
