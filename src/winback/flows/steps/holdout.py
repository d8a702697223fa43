"""``holdout``: hold a share of the entrants out of every later send, for good (the
control group of the flow's lift); the draw is fixed by the entry's id."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from winback.flows._sql import Rule, fe, stable_uniform
from winback.flows.fields import FlowModel
from winback.flows.steps.base import Batch, Moves, StepModel


class Holdout(FlowModel):
    share: float = Field(gt=0, lt=1, description="Share of entrants held out, e.g. 0.1.")


class HoldoutStep(StepModel):
    kind: ClassVar[str] = "holdout"
    holdout: Holdout


def run(batch: Batch, step: HoldoutStep) -> Moves:
    u = stable_uniform(fe.c.id, batch.salt)
    go = batch.node.next
    return Moves(
        [
            Rule("holdout", go, when=u < step.holdout.share, values={"holdout": True}),
            Rule("treatment", go),
        ]
    )
