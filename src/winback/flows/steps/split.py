"""``split``: an A/B test of paths. Each entry draws a branch for good, by weight, from a
number fixed by its id (:func:`~winback.flows._sql.stable_uniform`); the branch is recorded
on the entry."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from winback.flows._sql import Rule, fe, stable_uniform
from winback.flows.fields import FlowModel
from winback.flows.steps.base import Arm, Batch, Moves, StepModel

if TYPE_CHECKING:
    from winback.flows.models import Step


class Branch(FlowModel):
    name: str
    weight: float = Field(gt=0)
    steps: list[Step] = Field(default_factory=list)


class Split(FlowModel):
    branches: list[Branch] = Field(min_length=2)
    winner: Literal["off", "auto"] = Field(
        "off",
        description="`auto`: once the A/B winner rule declares a branch the winner "
        "(docs/results.md), new entrants all take it.",
    )


class SplitStep(StepModel):
    kind: ClassVar[str] = "split"
    split: Split


def run(batch: Batch, step: SplitStep) -> Moves:
    branches = batch.node.branches
    winner = batch.flow.winners.get(batch.node.id) if step.split.winner == "auto" else None
    if winner is not None:
        first = next(f for name, _, f in branches if name == winner)
        return Moves([Rule(f"branch:{winner}", first, values={"branch": winner})])
    u = stable_uniform(fe.c.id, batch.salt)
    total = sum(w for _, w, _ in branches)
    rules, cum = [], 0.0
    for i, (name, weight, first) in enumerate(branches):
        cum += weight / total
        last = i == len(branches) - 1
        when = None if last else u < cum
        rules.append(Rule(f"branch:{name}", first, when=when, values={"branch": name}))
    return Moves(rules)


def arms(step: SplitStep) -> list[Arm]:
    names = [b.name for b in step.split.branches]
    if len(set(names)) != len(names):
        raise ValueError("branch names must differ")
    return [Arm(b.name, b.steps, b.weight) for b in step.split.branches]
