"""Claiming due outbox rows for one worker, and reconciling the rows a dead worker left
``sending`` (docs/delivery.md, "Exactly once to the wire")."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, literal_column, select, union_all, update
from sqlalchemy.sql.elements import ColumnElement

from winback.config import Settings
from winback.delivery.worker.record import OutcomeRecorder
from winback.store.schema import outbox

#: The columns of a claimed row.
FIELDS = (
    outbox.c.id,
    outbox.c.dedup_key,
    outbox.c.contact_id,
    outbox.c.channel,
    outbox.c.template,
    outbox.c.variant,
    outbox.c.flow,
    outbox.c.entry_id,
    outbox.c.step,
    outbox.c.priority,
    outbox.c.payload,
    outbox.c.attempts,
    outbox.c.not_before,
)


def claimable(channel_keys: Collection[str]) -> list[str]:
    """The outbox channels a worker with these channels can claim (``webhook:crm`` claims
    ``webhook`` rows)."""
    return sorted({key.split(":", 1)[0] for key in channel_keys})


def claim(
    engine: Engine, channels: Collection[str], limit: int, now: datetime
) -> list[dict[str, Any]]:
    """Take up to ``limit`` due ``pending`` rows of ``channels``, transactional messages
    first, then the others, each oldest first, and make them ``sending``: one UPDATE (a
    write transaction from its start, so concurrent SQLite workers queue on the busy
    timeout). Each kind is read along an index in its order and stops at the batch size, so
    a backlog of a million marketing messages costs a claim no more than one of a thousand
    (no sort of the whole backlog)."""
    if not channels:
        return []
    due = and_(
        outbox.c.status == literal_column("'pending'"),  # inline: matches the partial index
        outbox.c.not_before <= now,
        outbox.c.channel.in_(sorted(channels)),
    )
    transactional = outbox.c.priority == literal_column("'transactional'")
    kinds = [
        select(outbox.c.id, literal_column(str(rank)).label("rank"), outbox.c.not_before)
        .where(due, which)
        .order_by(outbox.c.not_before, outbox.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .subquery()
        for rank, which in ((0, transactional), (1, ~transactional))
    ]
    both = union_all(*(select(k.c.id, k.c.rank, k.c.not_before) for k in kinds)).subquery()
    chosen = select(both.c.id).order_by(both.c.rank, both.c.not_before, both.c.id).limit(limit)
    stmt = (
        update(outbox)
        .where(outbox.c.id.in_(chosen.scalar_subquery()))
        .values(status="sending", claimed_at=now)
        .returning(*FIELDS)
    )
    with engine.begin() as conn:
        result = conn.execute(stmt)
        keys = tuple(result.keys())
        rows = [dict(zip(keys, r, strict=True)) for r in result]
    rows.sort(key=lambda r: (r["priority"] != "transactional", r["not_before"], r["id"]))
    return rows


def reconcile(
    engine: Engine, settings: Settings, recorder: OutcomeRecorder, domain: str, now: datetime
) -> int:
    """Rows left in ``sending`` past the lease by a worker that died: those the provider
    had accepted (``sent_at`` recorded) become ``sent``; the others are resent (same
    Message-ID) or failed, as ``delivery_stale_policy`` says."""
    stale = and_(
        outbox.c.status == "sending",
        outbox.c.claimed_at < now - timedelta(seconds=settings.delivery_lease_seconds),
    )
    with engine.begin() as conn:
        accepted = recorder.finish_accepted(conn, stale, domain)
        stale = and_(stale, outbox.c.sent_at.is_(None))
        if settings.delivery_stale_policy == "fail":
            return accepted + _fail_stale(conn, stale)
        return accepted + _resend_stale(conn, stale, settings.delivery_max_attempts, now)


def _fail_stale(conn: Connection, stale: ColumnElement[bool]) -> int:
    result = conn.execute(
        update(outbox)
        .where(stale)
        .values(
            status="failed",
            last_error="outcome unknown: the worker died after claiming this "
            "message; not resent (delivery_stale_policy = fail, at-most-once)",
        )
    )
    return int(result.rowcount or 0)


def _resend_stale(
    conn: Connection, stale: ColumnElement[bool], max_attempts: int, now: datetime
) -> int:
    exhausted = conn.execute(
        update(outbox)
        .where(and_(stale, outbox.c.attempts + 1 >= max_attempts))
        .values(
            status="failed",
            attempts=outbox.c.attempts + 1,
            last_error="outcome unknown after a worker crash, and no attempts left",
        )
    ).rowcount
    resent = conn.execute(
        update(outbox)
        .where(stale)
        .values(
            status="pending",
            attempts=outbox.c.attempts + 1,
            not_before=now,
            claimed_at=None,
            last_error="reconciled after the lease: outcome unknown, resending with "
            "the same Message-ID (at-least-once)",
        )
    ).rowcount
    return int(exhausted or 0) + int(resent or 0)
