"""``suppress``: put the contacts' address for a channel on the suppression list."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field
from sqlalchemy import func, literal, select

from winback.flows._sql import Rule, at, upsert_insert
from winback.flows.steps.base import Batch, Moves, StepModel
from winback.store.schema import contacts, suppressions


class SuppressStep(StepModel):
    """Put the contact's address for ``channel`` on the suppression list (delivery checks it
    at send time): what the sunset flow does to non-openers to protect deliverability."""

    kind: ClassVar[str] = "suppress"
    suppress: Literal["email", "sms"] = Field(description="Channel whose address to suppress.")


def run(batch: Batch, step: SuppressStep) -> Moves:
    address = contacts.c.email if step.suppress == "email" else contacts.c.phone
    chosen = select(
        literal(step.suppress),
        func.lower(address) if step.suppress == "email" else address,
        contacts.c.id,
        literal("flow"),
        literal(f"suppressed by flow {batch.flow.program.key}"),
        at(batch.now),
    ).where(
        contacts.c.id.in_(batch.contact_ids),
        address.is_not(None),
        address != "",
    )
    batch.conn.execute(
        upsert_insert(batch.conn, suppressions)
        .from_select(["channel", "address", "contact_id", "reason", "detail", "created_at"], chosen)
        .on_conflict_do_nothing(index_elements=["channel", "address"])
    )
    return Moves([Rule("suppressed", batch.node.next)])
