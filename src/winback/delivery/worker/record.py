"""Recording what became of each claimed outbox row, durably, as soon as it matters.

Two steps per batch:

1. *Accepted.* When the provider accepts a message, its ``sent_at`` (and ``provider_id``) is
   committed on the row, still ``sending``, before the connection that sent it can have
   another message accepted (:meth:`OutcomeRecorder.accept`; the SMTP channel commits it
   just before it sends the next message's content). That tiny write touches the row and one
   index, so it costs a fraction of the full record; acceptances waiting together, from
   several connections, share one commit (group commit: whoever needs one and finds no
   commit in progress writes every acceptance waiting, the others wait for it).
2. *Finished.* At the end of the batch (or of the part of it that was sent, after an error or
   a stop) every outcome is written, in short transactions (:meth:`OutcomeRecorder.finish`):
   ``sent`` with ``message_id`` and the ``email_sent`` event, retry times, bounces...

A row left ``sending`` with ``sent_at`` set was accepted by the provider: a worker killed
between the two steps loses nothing, and the lease reconciliation finishes such rows as sent
(:meth:`OutcomeRecorder.finish_accepted`) instead of sending them again. What a kill can
duplicate is only what was on the wire: one message per connection.

After an error or a stop, :meth:`OutcomeRecorder.finish` also hands back at once, to
``pending``, the rows the worker claimed and did not send, instead of leaving them
``sending`` until the lease runs out.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, and_, bindparam, update
from sqlalchemy.dialects import postgresql, sqlite

from winback.delivery.channels import Durable, SendResult
from winback.delivery.channels.ratelimit import backoff
from winback.delivery.messages.mime import message_id_for
from winback.delivery.records import forget_push_token, record_events, suppress
from winback.store.schema import events, outbox

if TYPE_CHECKING:
    from winback.clock import Clock
    from winback.config import Settings
    from winback.delivery.worker.decide import Decision

#: Outcomes written per transaction at the end of a batch.
FINISH_SLICE = 200

#: A decided row and, when it was sent, what the channel said.
Settled = tuple["Decision", SendResult | None]


@dataclass(slots=True, eq=False)
class _Waiting:
    """One accepted message waiting for its commit."""

    decision: Decision
    result: SendResult
    done: bool = False
    error: BaseException | None = None


class OutcomeRecorder:
    """Writes the outcomes of one worker's claimed rows. :meth:`accept` may be called from
    several threads at once; the other methods from one thread, when no send is running."""

    def __init__(self, engine: Engine, settings: Settings, clock: Clock) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock
        # The acceptance is written once per message, in the sending threads' time: its
        # statement is compiled once and run on the driver's cursor, inside a transaction
        # that SQLAlchemy opens and commits (half the CPU of a Core execute).
        accept = (
            update(outbox)
            .where(outbox.c.id == bindparam("_id"))
            .values(sent_at=bindparam("_sent_at"), provider_id=bindparam("_provider_id"))
            .compile(dialect=engine.dialect)
        )
        self._accept_sql = accept.string
        self._accept_order = accept.positiontup  # None: the driver takes named parameters
        self._accept_time = outbox.c.sent_at.type.bind_processor(engine.dialect)
        self._finish = (
            update(outbox)
            .where(outbox.c.id == bindparam("_id"))
            .values(
                status=bindparam("_status"),
                not_before=bindparam("_not_before"),
                attempts=bindparam("_attempts"),
                last_error=bindparam("_error"),
                message_id=bindparam("_message_id"),
                provider_id=bindparam("_provider_id"),
                sent_at=bindparam("_sent_at"),
            )
        )
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        self._insert_event = dialect.insert(events).on_conflict_do_nothing(
            index_elements=["event_key"]
        )
        self._cond = threading.Condition()
        self._waiting: list[_Waiting] = []
        self._writing = False
        self._conn: Connection | None = None  # kept for the accepts of a batch

    def close(self) -> None:
        """Return the connection the accepts used and forget those not made durable (at the
        end of a batch, whose outcomes :meth:`finish` wrote)."""
        with self._cond:
            self._waiting = []
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # -- step 1: accepted ----------------------------------------------------------------------
    def accept(self, decision: Decision, result: SendResult) -> Durable | None:
        """A channel's outcome for one message. When the provider accepted it, returns what
        to call (:data:`~winback.delivery.channels.Durable`) before that connection can have
        another message accepted: it returns once the message's ``sent_at`` is committed,
        together with those of other connections waiting at that moment. Other outcomes wait
        for :meth:`finish` (nothing went out, so a crash cannot duplicate them)."""
        if result.outcome != "sent":
            return None
        mine = _Waiting(decision, result)
        with self._cond:
            self._waiting.append(mine)
        return lambda: self._durable(mine)

    def _durable(self, mine: _Waiting) -> None:
        with self._cond:
            while self._writing and not mine.done:
                self._cond.wait()
            if mine.done:
                if mine.error is not None:
                    raise mine.error
                return
            group, self._waiting = self._waiting, []
            self._writing = True
        error: BaseException | None = None
        try:
            self._write_accepted(group)
        except BaseException as exc:
            error = exc
        with self._cond:
            for w in group:
                w.done, w.error = True, error
            self._writing = False
            self._cond.notify_all()
        if error is not None:
            raise error

    def _write_accepted(self, group: Sequence[_Waiting]) -> None:
        now = self.clock.now()
        for w in group:
            w.decision.sent_at = now
        at = self._accept_time(now) if self._accept_time is not None else now
        params: list[Any] = []
        for w in group:
            named = {"_id": int(w.decision.row["id"]), "_sent_at": at}
            named["_provider_id"] = w.result.provider_id
            order = self._accept_order
            params.append(tuple(named[k] for k in order) if order is not None else named)
        conn = self._conn = self._conn or self.engine.connect()
        try:
            with conn.begin():
                cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                try:
                    cursor.executemany(self._accept_sql, params)
                finally:
                    cursor.close()
        except BaseException:
            for w in group:
                w.decision.sent_at = None
            self._conn = None  # a fresh connection for the next commit
            conn.close()
            raise

    # -- step 2: finished ----------------------------------------------------------------------
    def finish(
        self,
        settled: Sequence[Settled],
        now: datetime,
        *,
        release: Collection[int] = (),
        reason: str = "",
    ) -> None:
        """Write every outcome of ``settled`` (in short transactions of ``FINISH_SLICE``),
        then put the claimed rows ``release`` that were not sent back to ``pending`` (after
        an error or a stop), due at once, attempts unchanged, ``reason`` noted. A row the
        provider accepted (``sent_at`` set) or no longer ``sending`` is never handed back."""
        # In slices: writers of other processes (the other delivery processes' acceptances)
        # get the lock in between.
        for start in range(0, len(settled), FINISH_SLICE):
            with self.engine.begin() as conn:
                self.write(conn, settled[start : start + FINISH_SLICE], now)
        if release:
            with self.engine.begin() as conn:
                conn.execute(
                    update(outbox)
                    .where(
                        and_(
                            outbox.c.id.in_(sorted(release)),
                            outbox.c.status == "sending",
                            outbox.c.sent_at.is_(None),
                        )
                    )
                    .values(status="pending", claimed_at=None, last_error=reason)
                )

    def finish_accepted(self, conn: Connection, stale: Any, domain: str) -> int:
        """Rows matching ``stale`` (``sending`` past the lease) that the provider accepted
        (``sent_at`` set) become ``sent``, with their Message-ID and ``email_sent`` event: a
        worker died between the two steps. Returns how many."""
        rows = conn.execute(
            update(outbox)
            .where(and_(stale, outbox.c.sent_at.is_not(None)))
            .values(status="sent", attempts=outbox.c.attempts + 1, last_error=None)
            .returning(
                outbox.c.id,
                outbox.c.dedup_key,
                outbox.c.contact_id,
                outbox.c.channel,
                outbox.c.flow,
                outbox.c.step,
                outbox.c.sent_at,
            )
        ).all()
        if not rows:
            return 0
        ids = {int(r.id): message_id_for(r.dedup_key, domain) for r in rows}
        conn.execute(
            update(outbox)
            .where(outbox.c.id == bindparam("_id"))
            .values(message_id=bindparam("_message_id")),
            [{"_id": oid, "_message_id": mid} for oid, mid in ids.items()],
        )
        sent = [
            {
                "event_key": f"sent:{ids[int(r.id)]}",
                "contact_id": int(r.contact_id),
                "type": "email_sent",
                "occurred_at": r.sent_at,
                "properties": {"flow": r.flow, "step": r.step},
                "message_id": ids[int(r.id)],
                "machine": False,
            }
            for r in rows
            if r.channel == "email"
        ]
        if sent:
            conn.execute(self._insert_event, sent)
        return len(rows)

    def write(self, conn: Connection, settled: Sequence[Settled], now: datetime) -> None:
        updates: list[dict[str, Any]] = []
        sent_events: list[dict[str, Any]] = []
        bounces: list[tuple[Decision, SendResult]] = []
        for d, result in settled:
            updates.append(self._row(d, result, now))
            if result is None or d.outgoing is None:
                continue
            if result.outcome == "sent" and d.row["channel"] == "email":
                sent_events.append(
                    {
                        "event_key": f"sent:{d.outgoing.message_id}",
                        "contact_id": int(d.row["contact_id"]),
                        "type": "email_sent",
                        "occurred_at": updates[-1]["_sent_at"],
                        "properties": {"flow": d.row.get("flow"), "step": d.row.get("step")},
                        "message_id": d.outgoing.message_id,
                        "machine": False,
                    }
                )
            elif result.outcome == "bounced":
                bounces.append((d, result))
        if updates:
            conn.execute(self._finish, updates)
        if sent_events:
            conn.execute(self._insert_event, sent_events)
        for d, result in bounces:
            self._bounce(conn, d, result, now)

    def _row(self, d: Decision, result: SendResult | None, now: datetime) -> dict[str, Any]:
        """The outbox row's new state: decided without sending (``result`` None), or sent."""
        row = d.row
        base: dict[str, Any] = {
            "_id": int(row["id"]),
            "_status": d.status,
            "_not_before": row["not_before"],
            "_attempts": row["attempts"],
            "_error": d.reason or None,
            "_message_id": None,
            "_provider_id": None,
            "_sent_at": None,
        }
        if d.status == "deferred":
            base.update(_status="pending", _not_before=d.not_before)
        elif d.status == "retry":
            base.update(
                _status="pending",
                _not_before=now + timedelta(seconds=self.settings.delivery_retry_seconds),
            )
        elif d.status == "sending":
            assert result is not None and d.outgoing is not None
            attempts = int(row["attempts"]) + 1
            base["_attempts"] = attempts
            if result.outcome == "sent":
                base.update(
                    _status="sent",
                    _error=None,
                    _message_id=d.outgoing.message_id,
                    _provider_id=result.provider_id,
                    _sent_at=d.sent_at or now,
                )
            elif result.outcome == "retry" and attempts < self.settings.delivery_max_attempts:
                delay = backoff(attempts, self.settings.delivery_retry_seconds)
                if result.retry_after is not None:  # the provider said when
                    delay = max(delay, result.retry_after)
                base.update(
                    _status="pending",
                    _not_before=now + timedelta(seconds=delay),
                    _error=f"attempt {attempts}: {result.detail}",
                )
            else:
                base.update(_status="failed", _error=result.detail)
        return base

    @staticmethod
    def _bounce(conn: Connection, d: Decision, result: SendResult, now: datetime) -> None:
        assert d.outgoing is not None
        cid = int(d.row["contact_id"])
        suppress(
            conn,
            channel=d.row["channel"],
            address=d.outgoing.to or "",
            contact_id=cid,
            reason="bounced",
            at=now,
            detail=result.detail,
        )
        if d.row["channel"] == "push":  # dead device token: forget it
            forget_push_token(conn, cid, d.outgoing.to or "", at=now)
        if d.row["channel"] == "email":
            record_events(
                conn,
                [
                    {
                        "event_key": f"bounce:{d.outgoing.message_id}",
                        "contact_id": cid,
                        "type": "email_bounced",
                        "occurred_at": now,
                        "properties": {"code": result.code, "detail": result.detail[:500]},
                        "message_id": d.outgoing.message_id,
                    }
                ],
            )
