"""``wait_for``: park the entry until the contact performs an event (then ``then``) or the
timeout passes (then ``else``). Parked entries are ``waiting``; each tick resolves those
whose event happened since they arrived or whose time is up."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import Field
from sqlalchemy import or_

from winback.flows._sql import Rule, at, event_happened, fe
from winback.flows.fields import Duration, EventFilter, FlowModel
from winback.flows.steps.base import Arm, Batch, Moves, StepModel

if TYPE_CHECKING:
    from winback.flows.models import Step


class WaitFor(FlowModel):
    event: EventFilter | str
    timeout: Duration

    @property
    def filter(self) -> EventFilter:
        return self.event if isinstance(self.event, EventFilter) else EventFilter(type=self.event)


class WaitForStep(StepModel):
    kind: ClassVar[str] = "wait_for"
    wait_for: WaitFor
    then: list[Step] = Field(default_factory=list, description="When the event happens.")
    else_: list[Step] = Field(default_factory=list, alias="else", description="On timeout.")


def run(batch: Batch, step: WaitForStep) -> Moves:
    node = batch.node
    rule = Rule("waiting", node.id, wake_at=batch.now + step.wait_for.timeout, waiting=True)
    return Moves([rule])


def resolve(batch: Batch, step: WaitForStep) -> Moves:
    spec, node, now = step.wait_for.filter, batch.node, batch.now
    happened = event_happened(batch.conn, fe.c.contact_id, spec.type, spec.where, fe.c.step_at, now)
    timed_out = fe.c.wake_at <= at(now)
    rules = [
        Rule("event", node.then_first, when=happened),
        Rule("timeout", node.else_first, when=timed_out),
    ]
    return Moves(rules, only=or_(happened, timed_out))


def arms(step: WaitForStep) -> list[Arm]:
    return [Arm("then", step.then), Arm("else", step.else_)]
