"""Flows as validated data: the YAML syntax of ``flows/*.yaml``, as pydantic models.

A flow is a trigger, an entry policy and a list of typed steps. Each step is a mapping with
exactly one action key (``send``, ``wait``, ``if`` ...) plus an optional explicit ``id``;
the step kinds and their models are the table :data:`winback.flows.steps.KINDS`.
Conditions (``if``, ``goal``, trigger audiences) use the segment condition language and are
kept here as plain mappings; :mod:`winback.flows.conditions` validates and compiles them.

The JSON schema of these models is ``docs/flows-schema.md`` (generated, checked by a test).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from winback.flows.fields import (
    Channel,
    Condition,
    Duration,
    EventFilter,
    FlowModel,
    Goal,
    LocalTime,
    format_duration,
    parse_duration,
)
from winback.flows.steps import KINDS
from winback.flows.steps.base import StepModel
from winback.flows.steps.delete_contact import DeleteContact, DeleteContactStep
from winback.flows.steps.exit_ import ExitStep
from winback.flows.steps.goal import GoalStep
from winback.flows.steps.holdout import Holdout, HoldoutStep
from winback.flows.steps.if_ import IfStep
from winback.flows.steps.send import Send, SendStep, Variant
from winback.flows.steps.set_attribute import SetAttribute, SetAttributeStep
from winback.flows.steps.split import Branch, Split, SplitStep
from winback.flows.steps.suppress import SuppressStep
from winback.flows.steps.tags import AddTagStep, RemoveTagStep
from winback.flows.steps.wait import WaitStep
from winback.flows.steps.wait_for import WaitFor, WaitForStep
from winback.flows.steps.wait_until import WaitUntil, WaitUntilStep


# -- triggers -------------------------------------------------------------------------------
class SegmentEntryTrigger(FlowModel):
    segment_entry: str = Field(description="Enrol contacts when they enter this segment.")
    include_existing: bool = Field(
        True,
        description="When the flow is first enabled, also enrol the segment's current members.",
    )


class TagAddedTrigger(FlowModel):
    tag_added: str = Field(description="Enrol contacts when this tag is added to them.")


class EventTrigger(FlowModel):
    event: EventFilter | str = Field(description="Enrol contacts when they perform this event.")

    @property
    def filter(self) -> EventFilter:
        return self.event if isinstance(self.event, EventFilter) else EventFilter(type=self.event)


class Schedule(FlowModel):
    every: (
        Literal["day", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
        | None
    ) = Field(None, description="Repeat daily or weekly on that day.")
    dates: list[str] = Field(
        default_factory=list,
        description="Explicit dates: `MM-DD` every year or `YYYY-MM-DD` once.",
    )
    at: LocalTime = Field("09:00", description="Local time of day (shop time zone).")
    segment: str | None = Field(None, description="Audience: members of this segment.")
    condition: Condition | None = Field(None, description="Audience: contacts matching this.")
    birthday: bool = Field(False, description="Audience: only contacts whose birthday is today.")
    anniversary: Literal["first_order", "signup"] | None = Field(
        None,
        description="Audience: only contacts whose first order (`first_order`: "
        "`first_purchase_at`) or sign-up (`signup`: `created_at`) was on today's date (UTC) "
        "in an earlier year.",
    )
    overdue: bool = Field(
        False,
        description="Audience: only contacts past their expected purchase interval "
        "(`days_overdue > 0` from the analytics, else more days since their last order than "
        "the median interval between their own orders; needs two orders).",
    )

    @field_validator("dates")
    @classmethod
    def _dates(cls, value: list[str]) -> list[str]:
        for item in value:
            if not re.match(r"^(\d{4}-)?\d\d-\d\d$", item):
                raise ValueError(f"expected dates like 12-27 or 2026-12-27 (got {item!r})")
        return value

    @model_validator(mode="after")
    def _when(self) -> Schedule:
        if self.every is None and not self.dates:
            raise ValueError("a schedule needs `every` (day or a weekday) or `dates`")
        return self


class ScheduleTrigger(FlowModel):
    schedule: Schedule


def _trigger_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        for key in ("segment_entry", "tag_added", "event", "schedule"):
            if key in value:
                return key
    elif isinstance(value, BaseModel):
        return _trigger_kind(value.model_dump())
    return None


Trigger = Annotated[
    Annotated[SegmentEntryTrigger, Tag("segment_entry")]
    | Annotated[TagAddedTrigger, Tag("tag_added")]
    | Annotated[EventTrigger, Tag("event")]
    | Annotated[ScheduleTrigger, Tag("schedule")],
    Discriminator(
        _trigger_kind,
        custom_error_type="trigger",
        custom_error_message="expected one of segment_entry, tag_added, event, schedule",
    ),
]


class Entry(FlowModel):
    consent: Literal["email", "sms", "push"] | None = Field(
        None, description="Only contacts with consent on this channel enter."
    )
    reentry: str = Field(
        "never",
        description="`never`, `always` (once the previous stint is over) or `after <duration>`.",
    )
    backfill: Duration | None = Field(
        None,
        description="Event and tag triggers: when the flow is enabled, contacts whose "
        "qualifying event falls within this look-back enter as if the flow had been on, "
        "each at the step their timing calls for (docs/flows.md#back-fill).",
    )
    late_by: Duration | None = Field(
        None,
        description="Back-fill: how long after its moment a step (a message) may still be "
        "taken; a contact whose step is later than that skips a message or does not enter. "
        "Default 1d.",
    )

    @field_validator("reentry")
    @classmethod
    def _reentry(cls, value: str) -> str:
        if value in ("never", "always"):
            return value
        if value.startswith("after "):
            parse_duration(value.removeprefix("after "))
            return value
        raise ValueError(
            f"expected never, always or 'after <duration>' like 'after 180d' (got {value!r})"
        )

    @property
    def reentry_after(self) -> timedelta | None:
        if self.reentry.startswith("after "):
            return parse_duration(self.reentry.removeprefix("after "))
        return None


# -- steps ----------------------------------------------------------------------------------
#: The action keys of the step kinds, in the table's order.
STEP_KINDS = tuple(kind.key for kind in KINDS)


def _step_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        found = [k for k in STEP_KINDS if k in value]
        return found[0] if len(found) == 1 else None
    if isinstance(value, StepModel):
        return value.kind
    return None


if TYPE_CHECKING:
    Step = StepModel
else:
    Step = Annotated[
        Union[tuple(Annotated[kind.model, Tag(kind.key)] for kind in KINDS)],  # noqa: UP007
        Discriminator(
            _step_kind,
            custom_error_type="step",
            custom_error_message="expected a mapping with exactly one of " + ", ".join(STEP_KINDS),
        ),
    ]


class FlowDefinition(FlowModel):
    """One flow file."""

    name: str = Field(description="Display name.")
    description: str | None = None
    trigger: Trigger
    entry: Entry = Field(default_factory=Entry)
    goal: Goal | None = Field(None, description="Checked before every step.")
    steps: list[Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _backfill_trigger(self) -> FlowDefinition:
        if self.entry.backfill is not None and not isinstance(
            self.trigger, EventTrigger | TagAddedTrigger
        ):
            raise ValueError(
                "entry.backfill needs an event or tag_added trigger (a segment_entry flow "
                "says whether current members enter with include_existing)"
            )
        return self


_NESTING: list[type[BaseModel]] = [*(kind.model for kind in KINDS), Branch, FlowDefinition]
for _model in _NESTING:
    _model.model_rebuild(_types_namespace={"Step": Step})

__all__ = [
    "AddTagStep",
    "Branch",
    "Channel",
    "Condition",
    "DeleteContact",
    "DeleteContactStep",
    "Duration",
    "EventFilter",
    "ExitStep",
    "Goal",
    "GoalStep",
    "Holdout",
    "HoldoutStep",
    "IfStep",
    "LocalTime",
    "RemoveTagStep",
    "Send",
    "SendStep",
    "SetAttribute",
    "SetAttributeStep",
    "Split",
    "SplitStep",
    "Step",
    "StepModel",
    "SuppressStep",
    "Variant",
    "WaitFor",
    "WaitForStep",
    "WaitStep",
    "WaitUntil",
    "WaitUntilStep",
    "format_duration",
    "parse_duration",
]
