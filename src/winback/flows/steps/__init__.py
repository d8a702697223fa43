"""Every step kind of a flow file, in one table: the model of its mapping, its handler and
what the engine may assume of it (:class:`~winback.flows.steps.base.StepKind`).

A new step kind is a module here (its model and handler) and a row in :data:`KINDS`; the
flow-file syntax (:mod:`winback.flows.models`), the compiled program and the engine read
the table. The order of the table is the order of the flow-file schema.
"""

from __future__ import annotations

from typing import Any

from winback.flows.steps import (
    delete_contact,
    exit_,
    goal,
    holdout,
    if_,
    send,
    set_attribute,
    split,
    suppress,
    tags,
    wait,
    wait_for,
    wait_until,
)
from winback.flows.steps.base import StepKind

KINDS: tuple[StepKind[Any], ...] = (
    StepKind(send.SendStep, send.run, pure=True, start=send.start),
    StepKind(wait.WaitStep, wait.run, delay=wait.delay, holds=True),
    StepKind(wait_until.WaitUntilStep, wait_until.run, holds=True),
    StepKind(wait_for.WaitForStep, wait_for.run, arms=wait_for.arms, resolve=wait_for.resolve),
    StepKind(if_.IfStep, if_.run, pure=True, arms=if_.arms, conditions=if_.conditions),
    StepKind(tags.AddTagStep, tags.run_add),
    StepKind(tags.RemoveTagStep, tags.run_remove),
    StepKind(set_attribute.SetAttributeStep, set_attribute.run),
    StepKind(suppress.SuppressStep, suppress.run),
    StepKind(delete_contact.DeleteContactStep, delete_contact.run),
    StepKind(goal.GoalStep, goal.run, goal=goal.goal, conditions=goal.conditions),
    StepKind(split.SplitStep, split.run, pure=True, arms=split.arms),
    StepKind(holdout.HoldoutStep, holdout.run, pure=True),
    StepKind(exit_.ExitStep, exit_.run, exit=exit_.reason),
)

#: The kinds by action key.
BY_KEY: dict[str, StepKind[Any]] = {kind.key: kind for kind in KINDS}
