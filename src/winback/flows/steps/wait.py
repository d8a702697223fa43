"""``wait``: hold the entry for a fixed time. The engine never parks an entry at a wait:
it moves entries straight past it, due at its end (goals are checked before the next step)."""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

from winback.flows._sql import Rule
from winback.flows.fields import Duration
from winback.flows.steps.base import Batch, Moves, StepModel


class WaitStep(StepModel):
    kind: ClassVar[str] = "wait"
    wait: Duration


def run(batch: Batch, step: WaitStep) -> Moves:
    rule = Rule("waited", batch.node.next, wake_at=batch.now + step.wait)
    return Moves([rule], log=False)


def delay(step: WaitStep) -> timedelta:
    return step.wait
