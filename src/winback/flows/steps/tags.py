"""``add_tag`` and ``remove_tag``: change the contacts' tags (with their history, through
:mod:`winback.store.activity`)."""

from __future__ import annotations

from typing import ClassVar

from winback.flows._sql import Rule
from winback.flows.steps.base import Batch, Moves, StepModel
from winback.store import activity


class AddTagStep(StepModel):
    kind: ClassVar[str] = "add_tag"
    add_tag: str


class RemoveTagStep(StepModel):
    kind: ClassVar[str] = "remove_tag"
    remove_tag: str


def _source(batch: Batch) -> str:
    return f"flow:{batch.flow.program.key}"


def run_add(batch: Batch, step: AddTagStep) -> Moves:
    activity.add_tags(
        batch.conn, batch.contact_ids, step.add_tag, source=_source(batch), at=batch.now
    )
    return Moves([Rule("tagged", batch.node.next)])


def run_remove(batch: Batch, step: RemoveTagStep) -> Moves:
    activity.remove_tags(
        batch.conn, batch.contact_ids, step.remove_tag, source=_source(batch), at=batch.now
    )
    return Moves([Rule("untagged", batch.node.next)])
