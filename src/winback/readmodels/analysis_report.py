"""The analysis report served by the dashboard: the report of the latest ``winback analyze``
(its ``analysis`` snapshot), drawn as ``analyze --html`` draws it, and whether it is stale
(from an earlier day than today)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import Engine

from winback import snapshots
from winback.analytics.report import render_html
from winback.snapshots import Snapshot


@dataclass(frozen=True)
class ReportState:
    """The latest stored analysis (None: never analysed) as of ``today``."""

    analysis: Snapshot | None
    today: date

    @property
    def stale(self) -> bool:
        return self.analysis is None or self.analysis.day < self.today


def report_state(engine: Engine, today: date) -> ReportState:
    return ReportState(snapshots.latest(engine, snapshots.ANALYSIS), today)


def report_html(analysis: Snapshot) -> str:
    """The self-contained HTML report of a stored analysis."""
    return render_html(analysis.data)
