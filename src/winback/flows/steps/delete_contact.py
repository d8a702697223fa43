"""``delete_contact``: erase the contacts' personal data (:mod:`winback.erasure`)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator

from winback.flows._sql import Rule
from winback.flows.fields import FlowModel
from winback.flows.steps.base import Batch, Moves, StepModel


class DeleteContact(FlowModel):
    reason: str | None = Field(None, description="Why, recorded in the erasure audit trail.")


class DeleteContactStep(StepModel):
    """Erase the contact's personal data (GDPR-style; see docs/flows.md): email, phone, names,
    birthday and custom attributes nulled, consent revoked on every channel, tags removed,
    other flows exited, an audit row in ``erasures``; the row stays as a tombstone so that
    re-imports do not bring the person back; orders stay, detached from any personal data.
    What the sunset flow does instead of suppressing when configured to delete."""

    kind: ClassVar[str] = "delete_contact"
    delete_contact: DeleteContact = Field(
        default_factory=DeleteContact,
        description="`{}` or `{reason: ...}` (also `true` or empty).",
    )

    @field_validator("delete_contact", mode="before")
    @classmethod
    def _empty(cls, value: Any) -> Any:
        return {} if value is None or value is True else value


def run(batch: Batch, step: DeleteContactStep) -> Moves:
    from winback.erasure import erase_contacts

    erase_contacts(
        batch.conn,
        batch.contact_ids,
        at=batch.now,
        source=f"flow:{batch.flow.program.key}",
        reason=step.delete_contact.reason,
        keep_flow_id=batch.flow.id,
    )
    return Moves([Rule("deleted", batch.node.next)])
