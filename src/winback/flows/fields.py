"""The field types that flow files share between triggers, entry policy and steps:
durations, local times, conditions, channels and event filters, and the goal mapping."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
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


class FlowModel(BaseModel):
    """A mapping of a flow file: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class EventFilter(FlowModel):
    type: str = Field(description="Event type (`purchase` for orders).")
    where: dict[str, Any] = Field(
        default_factory=dict, description="Property filters: each key must equal the value."
    )


class Goal(FlowModel):
    condition: Condition = Field(description="Leave the flow as soon as this holds.")
    reason: str = Field("goal", description="Exit reason recorded when the goal is met.")
