"""The overview of the base: the latest ``base`` and ``analysis`` snapshots (what
``winback summary --json`` and ``winback analyze --json`` print), their trends over the last
days, and the flows at a glance.

Queries: indexed range reads of ``daily_snapshots``: the last ``limit`` ``base`` rows, the
dormant shares of the last ``limit`` ``analysis`` rows (extracted in SQL) and the latest
``analysis`` row; and the flows with their entries per status (one aggregate over the
entries' index: :func:`winback.results.glance.flows_status`, as on the Flows page).
Nothing scans contacts, orders or events."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import Engine

from winback import snapshots
from winback.results.glance import FlowGlance, flows_status
from winback.snapshots import Snapshot

#: Days of trend shown.
TREND_DAYS = 90


@dataclass(frozen=True)
class Trend:
    """Values per day of one kind of snapshot: ``days`` (ISO dates) and one list per
    figure, aligned with the days."""

    days: list[str] = field(default_factory=list)
    values: dict[str, list[float | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class Overview:
    base: Snapshot | None
    analysis: Snapshot | None
    base_trend: Trend
    dormant_trend: Trend
    flows: list[FlowGlance]

    def stale(self, today: date) -> list[str]:
        """The kinds whose latest snapshot is not of ``today`` (or missing)."""
        return [
            kind
            for kind, snap in ((snapshots.BASE, self.base), (snapshots.ANALYSIS, self.analysis))
            if snap is None or snap.day < today
        ]


def _base_trend(rows: list[Snapshot]) -> Trend:
    keys = ("customers", "customers_with_orders", "revenue", "share_no_purchase")
    return Trend(
        [s.day.isoformat() for s in rows],
        {k: [_number(s.data.get(k)) for s in rows] for k in keys},
    )


def _dormant_trend(rows: list[tuple[date, Any]]) -> Trend:
    fixed: list[float | None] = []
    alive: list[float | None] = []
    for _day, dormant in rows:
        found: dict[str, Any] = dormant if isinstance(dormant, dict) else {}
        fixed.append(_number(found.get("fixed_rule", {}).get("share")))
        alive.append(_number(found.get("alive_rule", {}).get("share")))
    return Trend([d.isoformat() for d, _ in rows], {"fixed_rule": fixed, "alive_rule": alive})


def _number(value: Any) -> float | None:
    """A figure to draw: None when missing or not finite (a point left out)."""
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def overview(engine: Engine, *, days: int = TREND_DAYS) -> Overview:
    """The overview's figures (see the module docstring for its queries)."""
    base_rows = snapshots.series(engine, snapshots.BASE, limit=days)
    dormant = snapshots.series_part(engine, snapshots.ANALYSIS, ("health", "dormant"), limit=days)
    return Overview(
        base=base_rows[-1] if base_rows else None,
        analysis=snapshots.latest(engine, snapshots.ANALYSIS),
        base_trend=_base_trend(base_rows),
        dormant_trend=_dormant_trend(dormant),
        flows=flows_status(engine),
    )
