"""Flows as validated data: the YAML syntax of ``flows/*.yaml``, as pydantic models.

A flow is a trigger, an entry policy and a list of typed steps. Each step is a mapping with
exactly one action key (``send``, ``wait``, ``if`` ...) plus an optional explicit ``id``.
Conditions (``if``, ``goal``, trigger audiences) use the segment condition language and are
kept here as plain mappings; :mod:`winback.flows.conditions` validates and compiles them.

The JSON schema of these models is ``docs/flows-schema.md`` (generated, checked by a test).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> timedelta:
    """``"4d"`` -> 4 days. Units: s, m, h, d, w. A bare 0 is accepted."""
    if isinstance(value, timedelta):
        return value
    if value == 0:
        return timedelta(0)
    match = _DURATION.match(str(value)) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"expected a duration like 4d, 12h or 30m (got {value!r})")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit in ("w", "d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {"type": "string", "pattern": r"^\d+(\.\d+)?(s|m|h|d|w)$", "examples": ["4d", "12h"]}
    ),
]

_LOCAL_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def _local_time(value: Any) -> str:
    if not isinstance(value, str) or not _LOCAL_TIME.match(value):
        raise ValueError(f'expected a local time of day like "09:00" (got {value!r})')
    return value


LocalTime = Annotated[
    str,
    BeforeValidator(_local_time),
    WithJsonSchema({"type": "string", "pattern": r"^\d\d:\d\d$", "examples": ["09:00"]}),
]

#: A condition in the segment condition language (see docs/segments.md), e.g.
#: ``{in_segment: Customers Not Active, consent: email}``.
Condition = Annotated[
    dict[str, Any],
    WithJsonSchema(
        {
            "type": "object",
            "description": "A condition in the segment condition language (docs/segments.md).",
        }
    ),
]

Channel = Literal["email", "sms", "push", "webhook", "file"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# -- triggers -------------------------------------------------------------------------------
class SegmentEntryTrigger(_Model):
    segment_entry: str = Field(description="Enrol contacts when they enter this segment.")
    include_existing: bool = Field(
        True,
        description="When the flow is first enabled, also enrol the segment's current members.",
    )


class TagAddedTrigger(_Model):
    tag_added: str = Field(description="Enrol contacts when this tag is added to them.")


class EventFilter(_Model):
    type: str = Field(description="Event type (`purchase` for orders).")
    where: dict[str, Any] = Field(
        default_factory=dict, description="Property filters: each key must equal the value."
    )


class EventTrigger(_Model):
    event: EventFilter | str = Field(description="Enrol contacts when they perform this event.")

    @property
    def filter(self) -> EventFilter:
        return self.event if isinstance(self.event, EventFilter) else EventFilter(type=self.event)


class Schedule(_Model):
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


class ScheduleTrigger(_Model):
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


class Entry(_Model):
    consent: Literal["email", "sms", "push"] | None = Field(
        None, description="Only contacts with consent on this channel enter."
    )
    reentry: str = Field(
        "never",
        description="`never`, `always` (once the previous stint is over) or `after <duration>`.",
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


class Goal(_Model):
    condition: Condition = Field(description="Leave the flow as soon as this holds.")
    reason: str = Field("goal", description="Exit reason recorded when the goal is met.")


# -- steps ----------------------------------------------------------------------------------
class Variant(_Model):
    name: str
    template: str
    weight: float = Field(1.0, gt=0)


class Send(_Model):
    channel: Channel = "email"
    template: str | None = None
    variants: list[Variant] = Field(default_factory=list)
    priority: Literal["marketing", "transactional"] = "marketing"

    @model_validator(mode="after")
    def _template(self) -> Send:
        if self.template is None and not self.variants:
            raise ValueError("a send needs a template or variants")
        return self


class _Step(_Model):
    kind: ClassVar[str]
    id: str | None = Field(None, description="Stable id; default is the step's path (s3.then.0).")


class SendStep(_Step):
    kind: ClassVar[str] = "send"
    send: Send


class WaitStep(_Step):
    kind: ClassVar[str] = "wait"
    wait: Duration


class WaitUntil(_Model):
    local_time: LocalTime


class WaitUntilStep(_Step):
    kind: ClassVar[str] = "wait_until"
    wait_until: WaitUntil


class WaitFor(_Model):
    event: EventFilter | str
    timeout: Duration

    @property
    def filter(self) -> EventFilter:
        return self.event if isinstance(self.event, EventFilter) else EventFilter(type=self.event)


class WaitForStep(_Step):
    kind: ClassVar[str] = "wait_for"
    wait_for: WaitFor
    then: list[Step] = Field(default_factory=list, description="When the event happens.")
    else_: list[Step] = Field(default_factory=list, alias="else", description="On timeout.")


class IfStep(_Step):
    kind: ClassVar[str] = "if"
    if_: Condition = Field(alias="if")
    then: list[Step] = Field(default_factory=list)
    else_: list[Step] = Field(default_factory=list, alias="else")


class AddTagStep(_Step):
    kind: ClassVar[str] = "add_tag"
    add_tag: str


class RemoveTagStep(_Step):
    kind: ClassVar[str] = "remove_tag"
    remove_tag: str


class SetAttribute(_Model):
    name: str
    value: Any


class SetAttributeStep(_Step):
    kind: ClassVar[str] = "set_attribute"
    set_attribute: SetAttribute


class SuppressStep(_Step):
    """Put the contact's address for ``channel`` on the suppression list (delivery checks it
    at send time): what the sunset flow does to non-openers to protect deliverability."""

    kind: ClassVar[str] = "suppress"
    suppress: Literal["email", "sms"] = Field(description="Channel whose address to suppress.")


class DeleteContact(_Model):
    reason: str | None = Field(None, description="Why, recorded in the erasure audit trail.")


class DeleteContactStep(_Step):
    """Erase the contact's personal data (GDPR-style; see docs/flows.md): email, phone, names,
    birthday and custom attributes nulled, consent revoked on every channel, tags removed,
    other flows exited, an audit row in ``erasures``; the row stays as a tombstone so that
    re-imports do not bring the person back; orders stay, detached from any personal data.
    What the sunset flow does instead of suppressing when configured to delete."""

    kind: ClassVar[str] = "delete_contact"
    delete_contact: DeleteContact = Field(
        default_factory=DeleteContact,
        description="`{}` or `{reason: ...}` (also `true` or empty).",
    )

    @field_validator("delete_contact", mode="before")
    @classmethod
    def _empty(cls, value: Any) -> Any:
        return {} if value is None or value is True else value


class GoalStep(_Step):
    kind: ClassVar[str] = "goal"
    goal: Goal


class Branch(_Model):
    name: str
    weight: float = Field(gt=0)
    steps: list[Step] = Field(default_factory=list)


class Split(_Model):
    branches: list[Branch] = Field(min_length=2)


class SplitStep(_Step):
    kind: ClassVar[str] = "split"
    split: Split


class Holdout(_Model):
    share: float = Field(gt=0, lt=1, description="Share of entrants held out, e.g. 0.1.")


class HoldoutStep(_Step):
    kind: ClassVar[str] = "holdout"
    holdout: Holdout


class ExitStep(_Step):
    kind: ClassVar[str] = "exit"
    exit: str = Field(description="Exit reason.")


STEP_KINDS = (
    "send",
    "wait",
    "wait_until",
    "wait_for",
    "if",
    "add_tag",
    "remove_tag",
    "set_attribute",
    "suppress",
    "delete_contact",
    "goal",
    "split",
    "holdout",
    "exit",
)


def _step_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        found = [k for k in STEP_KINDS if k in value]
        return found[0] if len(found) == 1 else None
    if isinstance(value, _Step):
        return value.kind
    return None


Step = Annotated[
    Annotated[SendStep, Tag("send")]
    | Annotated[WaitStep, Tag("wait")]
    | Annotated[WaitUntilStep, Tag("wait_until")]
    | Annotated[WaitForStep, Tag("wait_for")]
    | Annotated[IfStep, Tag("if")]
    | Annotated[AddTagStep, Tag("add_tag")]
    | Annotated[RemoveTagStep, Tag("remove_tag")]
    | Annotated[SetAttributeStep, Tag("set_attribute")]
    | Annotated[SuppressStep, Tag("suppress")]
    | Annotated[DeleteContactStep, Tag("delete_contact")]
    | Annotated[GoalStep, Tag("goal")]
    | Annotated[SplitStep, Tag("split")]
    | Annotated[HoldoutStep, Tag("holdout")]
    | Annotated[ExitStep, Tag("exit")],
    Discriminator(
        _step_kind,
        custom_error_type="step",
        custom_error_message="expected a mapping with exactly one of " + ", ".join(STEP_KINDS),
    ),
]


class FlowDefinition(_Model):
    """One flow file."""

    name: str = Field(description="Display name.")
    description: str | None = None
    trigger: Trigger
    entry: Entry = Field(default_factory=Entry)
    goal: Goal | None = Field(None, description="Checked before every step.")
    steps: list[Step] = Field(min_length=1)


for _model in (WaitForStep, IfStep, Branch, FlowDefinition):
    _model.model_rebuild()
