"""``if``: entries for which the condition holds take ``then``, the others (false or
unknown) ``else``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field
from sqlalchemy import Boolean, false, func

from winback.flows._sql import Rule
from winback.flows.conditions import required_consent
from winback.flows.fields import Condition
from winback.flows.steps.base import Arm, Batch, Moves, StepModel

if TYPE_CHECKING:
    from winback.flows.models import Step


class IfStep(StepModel):
    kind: ClassVar[str] = "if"
    if_: Condition = Field(alias="if")
    then: list[Step] = Field(default_factory=list)
    else_: list[Step] = Field(default_factory=list, alias="else")


def run(batch: Batch, step: IfStep) -> Moves:
    node = batch.node
    cond = batch.condition(step.if_, node.id)
    if batch.chains(node.then_first) and not batch.chains(node.else_first):
        # ``else`` first, so that the rows left are the ``then`` ones, taken on at once
        # (false and unknown conditions go to ``else``, as below).
        not_true = ~func.coalesce(cond, false(), type_=Boolean)
        rules = [Rule("else", node.else_first, when=not_true), Rule("then", node.then_first)]
    else:
        rules = [Rule("then", node.then_first, when=cond), Rule("else", node.else_first)]
    consent: frozenset[str] = frozenset()
    if rules[-1].outcome == "then" and batch.conn.dialect.name == "sqlite":
        # The rows left passed the condition in this transaction, and SQLite has one
        # writer: the consent it requires still holds for the next step.
        consent = required_consent(step.if_)
    return Moves(rules, consent=consent)


def arms(step: IfStep) -> list[Arm]:
    return [Arm("then", step.then), Arm("else", step.else_)]


def conditions(step: IfStep) -> list[tuple[str, Any]]:
    return [("if", step.if_)]
