"""The self-contained HTML report of ``winback analyze --html``: one file, inline CSS and
inline SVG charts (:mod:`winback.analytics.charts`), no script, no network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from winback.analytics import charts
from winback.analytics.rfm import DESCRIPTIONS

ASSETS = Path(__file__).parent / "report_assets"


def render_html(report: dict[str, Any], *, title: str = "winback: customer base analysis") -> str:
    env = Environment(loader=FileSystemLoader(ASSETS), autoescape=select_autoescape(["html", "j2"]))
    env.filters["pct"] = lambda v: f"{100 * float(v):.1f}%"
    env.filters["num"] = lambda v: f"{float(v):,.0f}" if float(v) >= 100 else f"{float(v):.3g}"
    return env.get_template("report.html.j2").render(
        title=title, r=report, svg=_charts(report), descriptions=DESCRIPTIONS
    )


def write_html(report: dict[str, Any], path: Path | str) -> Path:
    out = Path(path)
    out.write_text(render_html(report), encoding="utf-8")
    return out


def _charts(r: dict[str, Any]) -> dict[str, Markup]:
    out: dict[str, Markup] = {}
    grid = r["rfm"]["grid"]
    out["rfm_grid"] = Markup(charts.heatmap(grid["counts"], grid["revenue"]))
    segs = [s for s in r["rfm"]["segments"] if s["customers"]]
    out["segments"] = Markup(
        charts.paired_bars(
            [s["segment"] for s in segs],
            [s["share"] for s in segs],
            [s["revenue_share"] for s in segs],
            names=("share of customers", "share of revenue"),
            title="RFM segments: size and revenue share",
        )
    )
    dists = r["health"]["distributions"]
    names = {"last_purchase": "purchase", "last_open": "email open", "last_click": "click",
             "last_visit": "site visit"}  # fmt: skip
    keys = [k for k in names if k in dists]
    out["recency"] = Markup(
        charts.columns(
            [b["bucket"] for b in dists["last_purchase"]],
            [[b["count"] for b in dists[k]] for k in keys],
            names=[names[k] for k in keys],
            title="Days since the last purchase, open, click and visit",
            x_title="days since the last ...",
        )
    )
    dormant = r["health"]["dormant"]
    shares = [dormant["fixed_rule"]["share"]]
    labels = [f"no purchase in {dormant['fixed_rule']['days']} days"]
    if "alive_rule" in dormant:
        shares.append(dormant["alive_rule"]["share"])
        labels.append(f"P(alive) < {dormant['alive_rule']['threshold']}")
    out["dormant"] = Markup(
        charts.paired_bars(
            labels,
            shares,
            None,
            names=("dormant share", ""),
            title="Dormant customers under the two rules",
        )  # fmt: skip
    )
    pred = r.get("predictions")
    if pred:
        out["p_alive"] = Markup(
            charts.columns(
                [f"{i / 10:.1f}-{(i + 1) / 10:.1f}" for i in range(10)],
                [pred["p_alive_histogram"]],
                names=["customers"],
                title="Distribution of P(alive)",
                x_title="probability that the customer is still active",
            )
        )
    hold = r.get("holdout")
    if hold:
        rows = hold["by_frequency"]
        out["holdout"] = Markup(
            charts.columns(
                [row["frequency"] for row in rows],
                [[row["actual"] for row in rows], [row["predicted"] for row in rows]],
                names=["actual", "model"],
                title="Calibration / holdout: purchases per customer in the holdout period",
                x_title="repeat purchases in the calibration period",
                lines=True,
            )
        )
    cl = r["clusters"]["clusters"]
    out["clusters"] = Markup(
        charts.paired_bars(
            [f"{c['cluster']}: {c['label']}" for c in cl],
            [c["customers"] / max(r["customers"], 1) for c in cl],
            None,
            names=("share of customers", ""),
            title="Clusters by size",
            left=330,
        )
    )
    return out
