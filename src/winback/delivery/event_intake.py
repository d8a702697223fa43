"""The event API's way into the store: events are validated, queued, and written by group
commit (:mod:`winback.delivery.ingest_queue`): the requests that arrive while a transaction
commits are written together in the next one, through :func:`winback.delivery.inbound.ingest`
like any other events, and each request gets its own counts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Connection, exc, select

from winback.clock import as_utc
from winback.delivery.inbound import (
    PURCHASE_TYPES,
    EventIn,
    IngestResult,
    PurchaseProperties,
    event_key,
    machine_flag,
)
from winback.delivery.ingest_queue import IngestQueue
from winback.errors import WinbackError
from winback.store.busy import StoreBusy, retry_transient
from winback.store.schema import events, orders

if TYPE_CHECKING:
    from winback.delivery import Delivery


#: Errors that, for events written alone, mean that their data cannot be recorded.
_DATA_ERRORS = (
    exc.DataError,
    exc.IntegrityError,
    exc.InterfaceError,
    exc.ProgrammingError,
    ValueError,
    TypeError,
    OverflowError,
)


class EventsRejected(WinbackError):
    """The events of one request cannot be recorded (those queued with them are written
    all the same)."""


class _Miscounted(Exception):
    """The counts foreseen for the requests of a group disagree with what was written: some
    of the events were recorded before (or, after reading which, by a concurrent writer in
    another process)."""


#: How far after the server's clock an event may be dated (clock skew between shop and server).
FUTURE_TOLERANCE = timedelta(days=1)


def validate(items: Iterable[EventIn], now: datetime | None = None) -> None:
    """Refuse what ``ingest`` would refuse, before queueing (pydantic ValidationError), and
    what it must not record: an ``occurred_at`` more than :data:`FUTURE_TOLERANCE` after
    ``now`` (a contact seen "in 9999" would never become dormant), a ``machine`` property
    that is not a boolean."""
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
                as_utc(e.occurred_at)
            except OverflowError:
                raise EventsRejected(
                    f"event {n}: occurred_at {e.occurred_at.isoformat()} is out of range in UTC"
                ) from None
            if now is not None and as_utc(e.occurred_at) > now + FUTURE_TOLERANCE:
                raise EventsRejected(
                    f"event {n}: occurred_at {e.occurred_at.isoformat()} is more than a day "
                    f"after the server's clock ({now.isoformat(timespec='seconds')})"
                )


def _identity(e: EventIn, now: datetime) -> tuple[str, str]:
    """What makes an event a duplicate: its order id (purchases) or its event key."""
    if e.type in PURCHASE_TYPES:
        return ("order", PurchaseProperties.model_validate(e.properties).order_id)
    return ("event", event_key(e, as_utc(e.occurred_at) if e.occurred_at else now))


def _recorded(conn: Connection, identities: set[tuple[str, str]]) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for kind, column in (("event", events.c.event_key), ("order", orders.c.order_id)):
        wanted = sorted(value for k, value in identities if k == kind)
        for start in range(0, len(wanted), 900):
            chunk = wanted[start : start + 900]
            found.update(
                (kind, v) for v in conn.execute(select(column).where(column.in_(chunk))).scalars()
            )
    return found


def _counted(identities: Sequence[tuple[str, str]], seen: set[tuple[str, str]]) -> IngestResult:
    """One request's counts; ``seen`` (recorded, or earlier in the group) grows."""
    new = 0
    for identity in identities:
        if identity not in seen:
            seen.add(identity)
            new += 1
    return IngestResult(accepted=len(identities), new=new, duplicates=len(identities) - new)


class EventIntake:
    """One per workspace (``workspace.delivery.event_intake``)."""

    def __init__(self, delivery: Delivery) -> None:
        self._delivery = delivery
        self.queue: IngestQueue[EventIn, IngestResult] = IngestQueue(
            self.write_group, self.write_one, name="winback-event-intake"
        )

    def submit(self, items: Sequence[EventIn]) -> Future[IngestResult]:
        """Validate and queue one request's events; the future is answered once they are
        committed (or refused: ValidationError before queueing, StoreBusy, an error of its
        own)."""
        validate(items, self._delivery.clock.now())
        return self.queue.submit(items)

    def write_one(self, items: Sequence[EventIn]) -> IngestResult:
        """Write one request's events alone; when their data cannot be recorded (refused by
        the store, or out of range), :class:`EventsRejected` (an HTTP 400), never a server
        error."""
        try:
            return self._delivery.ingest(list(items))
        except StoreBusy:
            raise
        except _DATA_ERRORS as error:
            reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
            raise EventsRejected(f"these events could not be recorded: {reason}") from error

    def write_group(self, requests: Sequence[Sequence[EventIn]]) -> list[IngestResult]:
        """Write the events of several requests in one transaction; one result each.

        Each request's counts come from the events' identities (event key, or order id for
        purchases). First attempt: none was recorded before (the usual case, no extra read);
        when the store says otherwise, the transaction is rolled back and written again
        after reading which of them were recorded already."""
        if len(requests) == 1:
            return [self.write_one(requests[0])]
        delivery = self._delivery
        now = delivery.clock.now()
        identities = [[_identity(e, now) for e in items] for items in requests]
        flat = [e for items in requests for e in items]

        def write(read_first: bool) -> list[IngestResult]:
            with delivery.engine.begin() as conn:
                seen = (
                    _recorded(conn, {i for ids in identities for i in ids}) if read_first else set()
                )
                results = [_counted(ids, seen) for ids in identities]
                total = delivery.ingest(flat, conn=conn, now=now)
                foreseen = sum(r.new for r in results)
                if total.new != foreseen:
                    raise _Miscounted(f"{total.new} new events, {foreseen} foreseen")
            return results

        try:
            return retry_transient(lambda: write(False))
        except _Miscounted:
            return retry_transient(lambda: write(True))

    def close(self) -> None:
        self.queue.close()
