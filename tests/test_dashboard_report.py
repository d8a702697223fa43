"""The analysis report served by the dashboard: none yet (offered), generated in the
background by a form POST, then served as ``winback analyze --html`` draws it; stale the
next day."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from tests.dashboard_support import session, small_shop
from tests.web_support import new_api_key, running_service
from winback import snapshots
from winback.analytics.report import write_html
from winback.clock import FixedClock
from winback.store.apikeys import Scope
from winback.store.schema import daily_snapshots
from winback.workspace import Workspace


def _wait_for_analysis(ws: Workspace) -> snapshots.Snapshot:
    for _ in range(600):
        found = snapshots.latest(ws.engine, snapshots.ANALYSIS)
        if found is not None:
            return found
        time.sleep(0.05)
    raise AssertionError("no analysis was stored")


@pytest.mark.slow
def test_the_report_is_generated_in_the_background_and_served(
    workspace: Workspace, tmp_path: Path
) -> None:
    small_shop(workspace, tmp_path)
    with workspace.engine.begin() as conn:  # as if never analysed
        conn.execute(daily_snapshots.delete())
    reader = {"Authorization": f"Bearer {new_api_key(workspace, 'reader', Scope.READ)}"}
    auth = {"Authorization": f"Bearer {new_api_key(workspace, 'admin', Scope.MANAGE)}"}
    with running_service(workspace) as base:
        before = httpx.get(f"{base}/report", headers=auth)
        assert "No analysis yet" in before.text and 'action="/report/generate"' in before.text
        assert httpx.get(f"{base}/report/view", headers=auth).status_code == 404
        anonymous = httpx.post(f"{base}/report/generate", follow_redirects=False)
        assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")
        refused = httpx.post(f"{base}/report/generate", headers=reader)
        assert refused.status_code == 403  # running the analysis changes the store
        with session(workspace, base) as signed_in:
            without_token = signed_in.post("/report/generate", follow_redirects=False)
        assert without_token.status_code == 403 and "CSRF" in without_token.text
        assert snapshots.latest(workspace.engine, snapshots.ANALYSIS) is None
        started = httpx.post(f"{base}/report/generate", headers=auth, follow_redirects=False)
        assert started.status_code == 303 and started.headers["location"] == "/report"
        stored = _wait_for_analysis(workspace)
        time.sleep(0.2)  # the job records its end after the snapshot
        page = httpx.get(f"{base}/report", headers=auth)
        view = httpx.get(f"{base}/report/view", headers=auth)
    assert stored.day == workspace.clock.now().date()
    assert f"Analysis of {stored.day}" in page.text and "stale" not in page.text
    assert '<iframe class="report" src="/report/view"' in page.text
    assert (
        view.status_code == 200 and "default-src 'none'" in view.headers["content-security-policy"]
    )
    # The same document as `winback analyze --html` at the same moment.
    report = workspace.analytics.analyze().report
    write_html(report, tmp_path / "cli.html")
    assert view.text == (tmp_path / "cli.html").read_text(encoding="utf-8")


def test_an_analysis_of_an_earlier_day_is_stale(workspace: Workspace, clock: FixedClock) -> None:
    snapshots.write(
        workspace.engine,
        snapshots.ANALYSIS,
        (clock.now() - timedelta(days=2)).date(),
        {"customers": 1},
        at=clock.now() - timedelta(days=2),
    )
    reader = new_api_key(workspace, "reader", Scope.READ)
    admin = new_api_key(workspace, "admin", Scope.MANAGE)
    with running_service(workspace) as base:
        page = httpx.get(f"{base}/report", headers={"Authorization": f"Bearer {reader}"})
        managed = httpx.get(f"{base}/report", headers={"Authorization": f"Bearer {admin}"})
    day = (clock.now() - timedelta(days=2)).date()
    assert f"The last analysis is of {day}: it is stale." in page.text
    assert "Run the analysis now" not in page.text and "manage scope" in page.text
    assert "Run the analysis now" in managed.text
