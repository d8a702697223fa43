"""``set_attribute``: set a custom attribute of the contacts to a value."""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import update

from winback.flows._sql import Rule, at, set_attribute_value
from winback.flows.fields import FlowModel
from winback.flows.steps.base import Batch, Moves, StepModel
from winback.store.schema import contacts


class SetAttribute(FlowModel):
    name: str
    value: Any


class SetAttributeStep(StepModel):
    kind: ClassVar[str] = "set_attribute"
    set_attribute: SetAttribute


def run(batch: Batch, step: SetAttributeStep) -> Moves:
    attr = step.set_attribute
    batch.conn.execute(
        update(contacts)
        .where(contacts.c.id.in_(batch.contact_ids))
        .values(
            {
                contacts.c.attributes: set_attribute_value(batch.conn, attr.name, attr.value),
                contacts.c.updated_at: at(batch.now),
            }
        )
    )
    return Moves([Rule("set", batch.node.next)])
