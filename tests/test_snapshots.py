"""Daily snapshots on both databases: one per kind and day (a later one replaces it), read
back oldest first with their keys in order and NaN kept; a part of each read in SQL."""

from __future__ import annotations

import math
from datetime import timedelta
from decimal import Decimal

import pytest

from winback import snapshots
from winback.workspace import Workspace


def test_snapshots_are_kept_per_kind_and_day(workspace: Workspace) -> None:
    now = workspace.clock.now()
    for days_ago in (3, 1, 2):
        day = (now - timedelta(days=days_ago)).date()
        snapshots.write(workspace.engine, snapshots.BASE, day, {"n": days_ago}, at=now)
    today = now.date()
    doc = {"zeta": 1, "alpha": [Decimal("1.50"), float("nan")], "as_of": today, "inf": math.inf}
    snapshots.write(workspace.engine, snapshots.BASE, today, {"n": 0}, at=now)
    snapshots.write(workspace.engine, snapshots.BASE, today, doc, at=now)  # replaces
    rows = snapshots.series(workspace.engine, snapshots.BASE, limit=3)
    assert [r.day for r in rows] == [today - timedelta(days=d) for d in (2, 1, 0)]
    latest = rows[-1].data
    assert list(latest) == ["zeta", "alpha", "as_of", "inf"]  # key order kept
    assert latest["alpha"][0] == 1.5 and math.isnan(latest["alpha"][1])
    assert latest["as_of"] == today.isoformat() and latest["inf"] == math.inf
    assert snapshots.latest(workspace.engine, snapshots.ANALYSIS) is None
    snapshots.write(
        workspace.engine, snapshots.ANALYSIS, today, {"health": {"dormant": {"x": 1}}}, at=now
    )
    assert snapshots.series_part(workspace.engine, snapshots.ANALYSIS, ("health", "dormant")) == [
        (today, {"x": 1})
    ]
    with pytest.raises(ValueError, match="unknown snapshot kind"):
        snapshots.write(workspace.engine, "nope", today, {}, at=now)


def test_the_base_snapshot_is_due_once_an_hour(workspace: Workspace) -> None:
    now = workspace.clock.now()
    assert snapshots.base_is_due(workspace.engine, now)
    taken = snapshots.take_base(workspace.engine, now=now, days=90, currency="EUR")
    assert taken.data["customers"] == 0 and taken.data["currency"] == "EUR"
    assert not snapshots.base_is_due(workspace.engine, now + timedelta(minutes=59))
    assert snapshots.base_is_due(workspace.engine, now + timedelta(hours=1))
