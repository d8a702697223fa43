"""Results snapshots: the engine loop keeps each flow's results; the dashboard and the
management API show the kept ones with their age, ``winback flows results`` counts live."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

import httpx

from tests.conftest import T0
from tests.dashboard_support import DAY, cli_json, drive, figures, reader
from tests.shopdata import add_order
from tests.web_support import running_service
from winback.clock import FixedClock
from winback.flows.runner import run_forever
from winback.results import snapshot
from winback.results.report import flow_results
from winback.workspace import Workspace


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def text(d: dict[str, Any]) -> str:
        return json.dumps(d, default=snapshot._text, sort_keys=True)

    return text(a) == text(b)


def test_the_kept_results_equal_the_live_ones_and_age(
    workspace: Workspace, clock: FixedClock
) -> None:
    ws = workspace
    drive(ws, clock)
    now = ws.clock.now()
    assert snapshot.refresh(ws.engine, ws.settings, now) == [
        "reactivation",
        "reactivation-companion",
    ]
    row = ws.flows._row("reactivation")
    kept = snapshot.kept(ws.engine, ws.settings, int(row.id))
    assert kept is not None and kept.computed_at == now
    assert _same(kept.results, flow_results(ws, "reactivation", as_of=now).to_dict())
    assert kept.delivered == 17 and kept.reactivated == 3
    # Younger than results_snapshot_minutes (10): kept; older: counted again.
    assert snapshot.refresh(ws.engine, ws.settings, now + timedelta(minutes=9)) == []
    later = now + timedelta(minutes=10)
    assert "reactivation" in snapshot.refresh(ws.engine, ws.settings, later)
    assert snapshot.kept(ws.engine, ws.settings, int(row.id)).computed_at == later  # type: ignore[union-attr]
    # Off: nothing kept is shown.
    off = ws.settings.model_copy(update={"results_snapshot_minutes": 0})
    assert snapshot.kept(ws.engine, off, int(row.id)) is None
    assert snapshot.refresh(ws.engine, off, later + DAY) == []


def test_pages_and_api_show_the_kept_results_and_the_cli_counts_live(
    workspace: Workspace, clock: FixedClock
) -> None:
    ws = workspace
    people = drive(ws, clock)
    snapshot.refresh(ws.engine, ws.settings, ws.clock.now() - timedelta(minutes=3))
    # An order after the results were kept: the CLI counts it, the pages show the kept ones.
    add_order(ws, people[5], at=T0 + 4 * DAY + timedelta(hours=12), amount=50.0)
    live = cli_json(ws, "flows", "results", "reactivation")
    assert live["groups"][0]["converted"] == 4
    headers = reader(ws)
    with running_service(ws) as base:
        section = httpx.get(f"{base}/flows/reactivation/results", headers=headers).text
        api = httpx.get(f"{base}/api/v1/flows/reactivation/results", headers=headers).json()
        since = httpx.get(
            f"{base}/api/v1/flows/reactivation/results",
            params={"since": "2000-01-01"},
            headers=headers,
        ).json()
        table = httpx.get(f"{base}/flows?figures=1", headers=headers).text
    shown = figures(section)
    assert float(shown["results.groups.treatment.converted"]) == 3
    assert 'id="results-kept" data-age-minutes="3"' in section
    assert api["groups"][0]["converted"] == 3
    assert since["groups"][0]["converted"] == 4  # a period: counted live
    assert 'id="flows-kept" data-age-minutes="3"' in table
    # Once the engine loop ran, the pages show the order too.
    clock.set(ws.clock.now() + timedelta(minutes=10))
    stop = threading.Event()
    run_forever(ws, stop, interval=0, on_pass=lambda _report: stop.set(), sink="file")
    with running_service(ws) as base:
        section = httpx.get(f"{base}/flows/reactivation/results", headers=headers).text
    assert float(figures(section)["results.groups.treatment.converted"]) == 4
    assert 'data-age-minutes="0"' in section
