"""The commands (`winback analyze`, `winback models fit|predict`), the HTML report and the
clusters."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.test_analytics_store import load_cdnow
from winback.analytics.clusters import cluster
from winback.cli import app
from winback.clock import FixedClock
from winback.data import CDNOW_SAMPLE
from winback.workspace import Workspace

runner = CliRunner()


def run_json(*args: str) -> dict[str, Any]:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_models_fit_on_orders_file_json() -> None:
    out = run_json(
        "models", "fit", "--model", "bgnbd", "--orders", str(CDNOW_SAMPLE),
        "--calibration-end", "1997-09-30", "--json",
    )  # fmt: skip
    assert round(out["params"]["a"], 3) == 0.793 and out["converged"] is True
    assert out["holdout"]["holdout_end"] == "1998-06-30"
    gg = run_json("models", "fit", "--model", "gamma-gamma", "--orders", str(CDNOW_SAMPLE),
                  "--calibration-end", "1997-09-30", "--json")  # fmt: skip
    assert round(gg["params"]["q"], 2) == 3.74


def test_unknown_model_is_a_clear_error() -> None:
    result = runner.invoke(app, ["models", "fit", "--model", "bgbd", "--orders", str(CDNOW_SAMPLE)])
    assert result.exit_code != 0
    assert "unknown model 'bgbd'" in str(result.exception)


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


@pytest.mark.slow
def test_analyze_orders_file_json_and_html(tmp_path: Path) -> None:
    csv = tmp_path / "orders.csv"
    lines = ["order_id,customer_id,ordered_at,amount,currency,items,coupon"]
    for line in CDNOW_SAMPLE.read_text().splitlines():
        cust, _, day, _, amount = line.split()
        lines.append(
            f"o{len(lines)},{cust},{day[:4]}-{day[4:6]}-{day[6:]}T10:00:00Z,{amount},USD,,"
        )
    csv.write_text("\n".join(lines) + "\n")
    html = tmp_path / "report.html"
    out = run_json("analyze", "--orders", str(csv), "--html", str(html), "--json")
    assert out["customers"] == 2357 and out["orders"] == 6919
    assert str(out["reference_date"]) == "1998-06-30"
    assert {s["segment"] for s in out["rfm"]["segments"]} <= {
        "Champions", "Loyal", "Potential Loyalist", "New Customers", "Promising",
        "Need Attention", "About To Sleep", "At Risk", "Can't Lose Them", "Hibernating", "Lost",
    }  # fmt: skip
    assert sum(s["customers"] for s in out["rfm"]["segments"]) == 2357
    assert 0 < out["health"]["dormant"]["alive_rule"]["share"] < 1
    assert out["holdout"]["by_frequency"][0]["frequency"] == "0"
    text = html.read_text()
    parser = _Collect()
    parser.feed(text)
    svgs = [a for t, a in parser.tags if t == "svg"]
    classes = {(a.get("class") or "") for a in svgs}
    assert {"chart heatmap", "chart bars", "chart columns", "chart lines"} <= classes
    assert len([t for t, a in parser.tags if t == "rect" and a.get("class") == "cell"]) == 25
    assert not [t for t, a in parser.tags if t in ("script", "link")]  # self-contained
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in text


def test_bad_orders_file_names_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("order_id,customer_id,ordered_at,amount\n1,c1,2025-01-02,10\n2,c2,yesterday,5\n")
    result = runner.invoke(app, ["analyze", "--orders", str(bad)])
    assert result.exit_code != 0
    assert "line 3: field ordered_at = 'yesterday'" in str(result.exception)


@pytest.mark.slow
def test_analyze_workspace_json(sqlite_workspace: Workspace, tmp_path: Path) -> None:
    load_cdnow(sqlite_workspace)
    ws_path = str(sqlite_workspace.path)
    sqlite_workspace.close()
    # The CLI opens the workspace itself; its clock is the system clock (after 1998).
    out = run_json("analyze", "-w", ws_path, "--json", "--no-holdout")
    assert out["customers"] == 2357 and out["movement"] is None
    assert out["model"]["converged"] is True
    pred = run_json("models", "predict", "-w", ws_path, "--json")
    assert pred["customers"] == 2357 and "p_alive" in pred["written"]
    text = runner.invoke(app, ["analyze", "-w", ws_path, "--no-holdout"]).stdout
    assert "RFM segments" in text and "Clusters" in text


@pytest.mark.slow
def test_clusters_are_deterministic_and_described() -> None:
    rng = np.random.default_rng(3)
    n = 3000
    freq = np.where(rng.random(n) < 0.6, 1, rng.integers(2, 20, n)).astype(float)
    rec = np.where(freq == 1, rng.integers(200, 700, n), rng.integers(1, 90, n)).astype(float)
    mon = rng.gamma(3, 20, n)
    ten = rec + rng.integers(0, 300, n)
    a = cluster(rec, freq, mon, ten, rec, seed=7)
    b = cluster(rec, freq, mon, ten, rec, seed=7)
    assert a.k == b.k >= 2
    assert np.array_equal(a.labels, b.labels) and a.names == b.names
    assert len(set(a.names)) == a.k and all(a.names)
    assert a.sizes == sorted(a.sizes, reverse=True)
    assert any("one-time" in name for name in a.names)


def test_fixed_clock_reference(sqlite_workspace: Workspace) -> None:
    load_cdnow(sqlite_workspace)
    ws = sqlite_workspace.replace(clock=FixedClock(datetime(1997, 3, 31, tzinfo=UTC)))
    r = ws.analytics.analyze(holdout=False).report
    assert str(r["reference_date"]) == "1997-03-31"
    assert r["orders"] < 6919  # later orders are ignored


def test_report_of_an_analysis_without_predictions(sqlite_workspace: Workspace) -> None:
    """A stored analysis whose model gave no predictions (NaN, kept as null in the daily
    snapshot) is still drawn: the missing figures say so."""
    from winback import snapshots
    from winback.analytics.report import render_html

    load_cdnow(sqlite_workspace)
    sqlite_workspace.analytics.analyze()
    stored = snapshots.latest(sqlite_workspace.engine, snapshots.ANALYSIS)
    assert stored is not None
    report = stored.data
    for key in ("expected_purchases_90d", "clv_total", "clv_mean"):
        report["predictions"][key] = None
    report["holdout"]["predicted_total"] = None
    for row in report["holdout"]["by_frequency"]:
        row["predicted"] = None
    html = render_html(report)
    assert html.count("not computed") == 3
