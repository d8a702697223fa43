"""Conditions in flows (``if``, ``goal``, schedule audiences) use the one condition language
of segments, :mod:`winback.segments.conditions`. This module only adapts it to the engine:
validation with the flow file's location, and compilation correlated to
``flow_entries.contact_id`` / ``flow_entries.entered_at``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement

#: Keys that each start a condition of their own.
KIND_KEYS = frozenset(
    {"all", "any", "not", "attribute", "event", "tag", "segment", "in_segment", "consent"}
)


def desugar(data: Any) -> Any:
    """Flows accept several independent tests in one mapping, meaning all of them:
    ``{in_segment: Customers Not Active, consent: email}`` is
    ``{all: [{in_segment: Customers Not Active}, {consent: email}]}``."""
    if isinstance(data, dict) and len(data) > 1 and set(data) <= KIND_KEYS:
        return {"all": [{key: value} for key, value in data.items()]}
    return data


def validate(data: Any, *, path: str, location: str) -> Any:
    """Parse a condition, raising :class:`DefinitionError` naming the file and place."""
    from winback.segments.conditions import parse_condition

    return parse_condition(desugar(data), path=path, location=location)


def compile_sql(
    data: Any,
    *,
    now: datetime,
    contact_id: ColumnElement[Any],
    entered_at: ColumnElement[Any] | None = None,
    path: str = "",
    location: str = "",
) -> ColumnElement[bool]:
    """The condition as a SQL boolean over the given contact (and flow entry time)."""
    from winback.segments.conditions import compile_condition

    cond = validate(data, path=path, location=location)
    return compile_condition(cond, now=now, contact_id=contact_id, entered_at=entered_at)


def required_consent(data: Any) -> frozenset[str]:
    """Channels whose consent the condition requires outright (``{consent: email}`` alone
    or in ``all``): a contact for which it is true has that consent."""
    data = desugar(data)
    if isinstance(data, dict) and set(data) == {"all"} and isinstance(data["all"], list):
        return frozenset().union(*(required_consent(part) for part in data["all"]))
    if isinstance(data, dict) and set(data) == {"consent"} and isinstance(data["consent"], str):
        return frozenset({data["consent"]})
    return frozenset()
