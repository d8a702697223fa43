"""The RFM page: the 5x5 grid and the segments of the latest analysis (the ``rfm`` part of
``winback analyze --json``), read from its daily snapshot (one indexed read)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from winback import snapshots
from winback.analytics.rfm import DESCRIPTIONS
from winback.readmodels.members import RfmSelection
from winback.snapshots import Snapshot


@dataclass(frozen=True)
class RfmCell:
    r: int
    f: int
    customers: int
    revenue: float
    shade: float  # customers relative to the fullest cell, 0..1


@dataclass(frozen=True)
class RfmView:
    """The latest analysis's RFM figures (None when no analysis was stored)."""

    analysis: Snapshot | None

    @property
    def report(self) -> dict[str, Any]:
        return self.analysis.data if self.analysis is not None else {}

    @property
    def rfm(self) -> dict[str, Any]:
        found: dict[str, Any] = self.report.get("rfm", {})
        return found

    def rows(self) -> list[list[RfmCell]]:
        """The grid as rows, R = 5 on top, F = 1 on the left."""
        grid = self.rfm.get("grid")
        if not grid:
            return []
        counts, revenue = grid["counts"], grid["revenue"]
        peak = max((max(row) for row in counts), default=0) or 1
        return [
            [
                RfmCell(
                    r,
                    f,
                    int(counts[r - 1][f - 1]),
                    float(revenue[r - 1][f - 1]),
                    counts[r - 1][f - 1] / peak,
                )  # fmt: skip
                for f in range(1, 6)
            ]
            for r in range(5, 0, -1)
        ]

    def segments(self) -> list[dict[str, Any]]:
        """The segment table with each segment's description."""
        return [
            {**s, "description": DESCRIPTIONS.get(s["segment"], "")}
            for s in self.rfm.get("segments", [])
        ]

    def total(self, selection: RfmSelection) -> int | None:
        """Customers of a cell or segment in the analysis."""
        if self.analysis is None:
            return None
        if selection.segment is not None:
            for s in self.rfm.get("segments", []):
                if s["segment"] == selection.segment:
                    return int(s["customers"])
            return 0
        assert selection.r is not None and selection.f is not None
        return int(self.rfm["grid"]["counts"][selection.r - 1][selection.f - 1])


def rfm_view(engine: Engine) -> RfmView:
    return RfmView(snapshots.latest(engine, snapshots.ANALYSIS))
