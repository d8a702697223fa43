"""Crafted data for flow tests: contacts, consent, segment membership."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update

from winback.store.schema import (
    contacts,
    flow_entries,
    flows,
    orders,
    outbox,
    segment_membership,
    segments,
)
from winback.workspace import Workspace


def make_contacts(
    ws: Workspace, n: int, *, at: datetime, consent: bool = True, prefix: str = "c"
) -> list[int]:
    ids = [f"{prefix}{i}" for i in range(n)]
    with ws.engine.begin() as conn:
        mapping = ws.store.ensure_contacts(ids, at=at, conn=conn)
        conn.execute(
            update(contacts)
            .where(contacts.c.id.in_(list(mapping.values())))
            .values(email_consent=consent, email=contacts.c.customer_id + "@example.com")
        )
    return [mapping[i] for i in ids]


def segment_id(ws: Workspace, name: str, *, at: datetime) -> int:
    with ws.engine.begin() as conn:
        sid = conn.execute(select(segments.c.id).where(segments.c.name == name)).scalar()
        if sid is None:
            sid = conn.execute(
                insert(segments).values(name=name, definition={}, updated_at=at)
            ).inserted_primary_key[0]
    return int(sid)


def enter_segment(ws: Workspace, name: str, ids: list[int], *, at: datetime) -> None:
    sid = segment_id(ws, name, at=at)
    with ws.engine.begin() as conn:
        conn.execute(
            insert(segment_membership),
            [{"segment_id": sid, "contact_id": i, "entered_at": at} for i in ids],
        )


def leave_segment(ws: Workspace, name: str, ids: list[int], *, at: datetime) -> None:
    sid = segment_id(ws, name, at=at)
    with ws.engine.begin() as conn:
        conn.execute(
            update(segment_membership)
            .where(
                segment_membership.c.segment_id == sid,
                segment_membership.c.contact_id.in_(ids),
                segment_membership.c.exited_at.is_(None),
            )
            .values(exited_at=at)
        )


def add_order(ws: Workspace, contact_id: int, *, at: datetime, amount: float = 50.0) -> None:
    with ws.engine.begin() as conn:
        n = conn.execute(select(func.count()).select_from(orders)).scalar_one()
        conn.execute(
            insert(orders).values(
                order_id=f"o{n}-{contact_id}",
                contact_id=contact_id,
                ordered_at=at,
                amount=amount,
                currency="USD",
            )
        )


def messages(ws: Workspace, flow: str | None = None) -> list[tuple[int, str, str]]:
    """(contact_id, step, template) of every outbox row, sorted."""
    q = select(outbox.c.contact_id, outbox.c.step, outbox.c.template)
    if flow:
        q = q.where(outbox.c.flow == flow)
    with ws.engine.connect() as conn:
        return sorted((int(a), b, c) for a, b, c in conn.execute(q))


def entries(ws: Workspace, flow: str) -> dict[int, dict[str, Any]]:
    """contact_id -> latest entry (status, step, exit_reason)."""
    fe = flow_entries
    with ws.engine.connect() as conn:
        rows = conn.execute(
            select(
                fe.c.contact_id, fe.c.status, fe.c.step, fe.c.exit_reason, fe.c.holdout, fe.c.branch
            )
            .join(flows, flows.c.id == fe.c.flow_id)
            .where(flows.c.key == flow)
            .order_by(fe.c.id)
        )
        return {int(r.contact_id): dict(r._mapping) for r in rows}
