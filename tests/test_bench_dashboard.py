"""The dashboard benchmark runs end to end at a tiny size: the workspace builder (SQL bulk
rows, then segments, the reference flow and the analysis by the product) and every page
through a real server beside its reference query."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from benchmarks import bench_dashboard, dashboard_workspace

pytestmark = pytest.mark.slow


def test_builder_writes_a_consistent_shop_and_reuses_it(tmp_path: Path) -> None:
    folder = tmp_path / "shop"
    built = dashboard_workspace.ensure(400, folder, say=lambda _m: None)
    rows = built.manifest["rows"]
    assert rows["contacts"] == 400
    assert 3_800 <= rows["events"] <= 4_000
    assert rows["orders"] > 400
    assert rows["flow_entries"] > 0 and rows["outbox"] > 0 and rows["rfm_snapshots"] > 0
    db = sqlite3.connect(folder / "winback.db")
    try:
        # The maintained columns agree with the rows they summarise.
        mismatched = db.execute(
            "SELECT count(*) FROM contacts c WHERE orders_count != (SELECT count(*) FROM orders o "
            "WHERE o.contact_id = c.id AND o.status = 'paid')"
        ).fetchone()[0]
        assert mismatched == 0
        assert db.execute("SELECT count(*) FROM outbox WHERE status = 'sent'").fetchone()[0] > 0
        assert db.execute("SELECT count(*) FROM contacts WHERE rfm_segment IS NOT NULL").fetchone()[
            0
        ]
    finally:
        db.close()
    said: list[str] = []
    again = dashboard_workspace.ensure(400, folder, say=said.append)
    assert again.manifest["built_at"] == built.manifest["built_at"]
    assert said and said[0].startswith("reusing")


def test_every_page_is_measured_beside_its_query(tmp_path: Path) -> None:
    built = dashboard_workspace.ensure(300, tmp_path / "shop", say=lambda _m: None)
    figures = bench_dashboard.measure(built.folder, built.now, requests=2)
    assert set(figures) == {p.name for p in bench_dashboard.pages()}
    # Every page the benchmark knows is served (a renamed route shows up here).
    assert [name for name, f in figures.items() if f.get("absent")] == []
    for name, f in figures.items():
        assert f["sql_p95_ms"] is not None, name
        assert f["statuses"] == {"200": 2}, (name, f)
        assert f["p50_ms"] <= f["p95_ms"], name
