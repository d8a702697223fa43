"""``exit``: end the entry with a reason."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from winback.flows._sql import Rule
from winback.flows.steps.base import Batch, Moves, StepModel


class ExitStep(StepModel):
    kind: ClassVar[str] = "exit"
    exit: str = Field(description="Exit reason.")


def run(batch: Batch, step: ExitStep) -> Moves:
    return Moves([Rule(step.exit, None, exit_reason=step.exit)])


def reason(step: ExitStep) -> str:
    return step.exit
