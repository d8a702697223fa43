"""``goal``: from this step on, entries leave the flow as soon as the goal holds (checked
before every later step of the same list and of the lists nested in it)."""

from __future__ import annotations

from typing import Any, ClassVar

from winback.flows._sql import Rule
from winback.flows.fields import Goal
from winback.flows.steps.base import Batch, Moves, StepModel


class GoalStep(StepModel):
    kind: ClassVar[str] = "goal"
    goal: Goal


def run(batch: Batch, step: GoalStep) -> Moves:
    return Moves([Rule("goal", batch.node.next)], log=False)


def goal(step: GoalStep) -> Goal:
    return step.goal


def conditions(step: GoalStep) -> list[tuple[str, Any]]:
    return [("goal", step.goal.condition)]
