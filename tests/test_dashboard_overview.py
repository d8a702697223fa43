"""The overview page: its figures are those of ``winback summary --json`` and ``winback
analyze --json`` (the same core functions, read from the day's snapshots)."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from tests.dashboard_support import figure, figures, small_shop
from tests.web_support import new_api_key, running_service
from winback import snapshots
from winback.readmodels.overview import overview
from winback.store.apikeys import Scope
from winback.summary import base_summary
from winback.workspace import Workspace


@pytest.mark.slow
def test_overview_shows_the_figures_of_summary_and_analyze(
    workspace: Workspace, tmp_path: Path
) -> None:
    small_shop(workspace, tmp_path)
    # What `winback summary --json` and `winback analyze --json` print, at the workspace's
    # clock (the CLI's own clock is the system's): the same core calls, as JSON.
    summary = json.loads(json.dumps(base_summary(workspace.engine, now=workspace.clock.now(),
                                                 days=workspace.settings.dormant_days),
                                    default=str))  # fmt: skip
    summary["revenue"] = float(summary["revenue"])
    report = snapshots.plain(workspace.analytics.analyze(holdout=False).report)
    key = new_api_key(workspace, "reader", Scope.READ)
    with running_service(workspace) as base:
        page = httpx.get(f"{base}/overview", headers={"Authorization": f"Bearer {key}"})
    assert page.status_code == 200, page.text
    html = page.text
    shown = figures(html)
    for name in ("customers", "customers_with_orders", "orders"):
        assert shown[f"summary.{name}"] == str(summary[name])
    for name in ("revenue", "share_no_purchase"):
        assert float(shown[f"summary.{name}"]) == summary[name]
    for channel, rate in summary["consent_rate"].items():
        assert float(shown[f"summary.consent_rate.{channel}"]) == rate
    assert figure(html, "customers") == f"{summary['customers']:,}"
    assert figure(html, "revenue") == f"{summary['revenue']:,.2f}"
    dormant = report["health"]["dormant"]
    for rule in ("fixed_rule", "alive_rule"):
        path = f"analyze.health.dormant.{rule}.share"
        assert float(shown[path]) == dormant[rule]["share"]
    for key_, buckets in report["health"]["distributions"].items():
        for i, bucket in enumerate(buckets):
            assert shown[f"analyze.health.distributions.{key_}.{i}.count"] == str(bucket["count"])
    assert "Revenue (USD)" in html
    assert "<svg" in html and 'id="trend-people"' in html and 'id="trend-dormant"' in html
    last_purchase = report["health"]["distributions"]["last_purchase"]
    assert f"<td>{last_purchase[0]['bucket']}</td>" in html
    assert "No snapshot of the base yet" not in html and 'class="notice"' not in html


def test_the_overview_without_snapshots_offers_to_take_one(
    workspace: Workspace, tmp_path: Path
) -> None:
    key = new_api_key(workspace, "admin", Scope.MANAGE)  # taking a snapshot changes the store
    auth = {"Authorization": f"Bearer {key}"}
    with running_service(workspace) as base:
        before = httpx.get(f"{base}/overview", headers=auth)
        assert "No snapshot of the base yet" in before.text
        assert "Take today" in before.text
        taken = httpx.post(f"{base}/overview/snapshot", headers=auth, follow_redirects=False)
        assert taken.status_code == 303
        for _ in range(100):
            if snapshots.latest(workspace.engine, snapshots.BASE) is not None:
                break
            time.sleep(0.05)
        after = httpx.get(f"{base}/overview", headers=auth)
    snap = snapshots.latest(workspace.engine, snapshots.BASE)
    assert snap is not None and snap.day == workspace.clock.now().date()
    assert figure(after.text, "customers") == "0"


def test_the_dormant_trend_reads_each_days_analysis(workspace: Workspace) -> None:
    now = workspace.clock.now()
    for days_ago, share in ((2, 0.5), (1, float("nan")), (0, 0.25)):
        dormant = {"fixed_rule": {"share": share}, "alive_rule": {"share": share / 2}}
        snapshots.write(
            workspace.engine,
            snapshots.ANALYSIS,
            (now - timedelta(days=days_ago)).date(),
            {"health": {"dormant": dormant}, "rfm": {}},
            at=now,
        )
    data = overview(workspace.engine)
    assert data.dormant_trend.days == [
        (now - timedelta(days=d)).date().isoformat() for d in (2, 1, 0)
    ]
    fixed = data.dormant_trend.values["fixed_rule"]
    assert fixed == [0.5, None, 0.25]  # a NaN share is a point left out
    alive = data.dormant_trend.values["alive_rule"]
    assert alive[0] == 0.25 and alive[2] == 0.125
    assert data.analysis is not None and data.analysis.day == now.date()
