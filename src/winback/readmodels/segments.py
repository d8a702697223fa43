"""The segments pages: every segment with its member count (as ``winback segments list
--json``) and its trend from the daily ``segments`` snapshots; one segment's definition as
written.

Queries: ``Segments.list`` (one read of the ``segments`` table, definitions from their
files) and one indexed range read of the last days' ``segments`` snapshots."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from sqlalchemy import Engine

from winback import snapshots
from winback.segments.definitions import META_KEYS
from winback.segments.service import Segments

#: Days of trend shown.
TREND_DAYS = 90


@dataclass(frozen=True)
class SegmentTrend:
    """Member counts per day (ISO dates), None on days without a count for the segment."""

    days: list[str]
    members: dict[str, list[int | None]]

    def of(self, name: str) -> list[int | None]:
        return self.members.get(name, [None] * len(self.days))


def segment_trend(engine: Engine, *, days: int = TREND_DAYS) -> SegmentTrend:
    rows = snapshots.series(engine, snapshots.SEGMENTS, limit=days)
    names = sorted({n for s in rows for n in s.data.get("members", {})})
    return SegmentTrend(
        [s.day.isoformat() for s in rows],
        {n: [s.data.get("members", {}).get(n) for s in rows] for n in names},
    )


def segment_list(segments: Segments, engine: Engine) -> tuple[list[dict[str, Any]], SegmentTrend]:
    """``winback segments list`` rows and the member counts per day."""
    return segments.list(), segment_trend(engine)


def definition_yaml(segments: Segments, name: str) -> tuple[dict[str, Any], str]:
    """Segment ``name``'s summary row (as ``segments show --json`` without the definition)
    and its condition as YAML, as written in its file."""
    definition = segments.get(name)
    summary = next(r for r in segments.list() if r["name"] == definition.name)
    body = {k: v for k, v in definition.data.items() if k not in META_KEYS}
    return summary, yaml.safe_dump(body, sort_keys=False, allow_unicode=True)
