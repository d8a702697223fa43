"""``winback analyze`` and ``winback models fit|predict``: thin wrappers over
``ws.analytics`` (or, with ``--orders FILE``, over the pure analysis of an orders file)."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from winback.cli._app import (
    JsonOption,
    WorkspaceOption,
    app,
    console,
    err_console,
    print_json,
    workspace_from,
)

models_app = typer.Typer(help="Fit and apply the purchase and spend models.", no_args_is_help=True)
app.add_typer(models_app, name="models")

OrdersOption = Annotated[
    Path | None,
    typer.Option(
        "--orders",
        help="Analyse this orders file (canonical orders CSV or CDNOW text) without a workspace.",
        exists=True,
        dir_okay=False,
        show_default=False,
    ),
]


def _status(as_json: bool) -> Any:
    target = err_console if as_json else console
    return target.status("analysing ...")


@app.command("analyze")
def analyze(
    workspace: WorkspaceOption = None,
    orders: OrdersOption = None,
    as_of: Annotated[
        datetime | None,
        typer.Option(
            "--as-of",
            formats=["%Y-%m-%d"],
            help="Analyse as of this date: later orders and engagement are ignored (default: "
            "today for a workspace, the last order's date for --orders).",
        ),
    ] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Write a self-contained HTML report here.")
    ] = None,
    no_write: Annotated[
        bool, typer.Option("--no-write", help="Do not store the results on the contacts.")
    ] = False,
    no_holdout: Annotated[
        bool, typer.Option("--no-holdout", help="Skip the calibration / holdout check.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """RFM segments, P(alive), expected purchases, CLV, clusters and base health."""
    from winback.analytics import analysis as an

    with _status(as_json) as status:

        def progress(step: str) -> None:
            status.update(f"analysing: {step} ...")

        if orders is not None:
            from winback.analytics.orders_file import read_orders
            from winback.config import Settings

            progress(f"reading {orders}")
            data = read_orders(orders)
            ref = an.day_of(as_of.date()) if as_of else int(data.transactions.day.max())
            result = an.analyze(
                data.transactions, ref, Settings(), holdout=not no_holdout, progress=progress
            )
            report = result.report
            report["source"] = str(orders)
        else:
            with workspace_from(workspace) as ws:
                result = ws.analytics.analyze(
                    write=not no_write,
                    holdout=not no_holdout,
                    progress=progress,
                    as_of=as_of.date() if as_of else None,
                )
                report = result.report
                report["source"] = str(ws.path)
    if html is not None:
        from winback.analytics.report import write_html

        write_html(report, html)
    if as_json:
        print_json(report)
        return
    print_analysis(report)
    if html is not None:
        console.print(f"HTML report written to [bold]{html.resolve()}[/]")


def print_analysis(r: dict[str, Any]) -> None:
    """The analysis report as Rich text and tables (also used by the demo)."""
    console.print(
        f"[bold]{r['customers']:,}[/] customers, {r['orders']:,} orders, revenue "
        f"{r['revenue']:,.2f} {r.get('currency', '')}".rstrip()
        + f", as of {r['reference_date']} ({r['source']})"
    )
    d = r["health"]["dormant"]
    line = f"Dormant: {d['fixed_rule']['share']:.1%} under the fixed {d['fixed_rule']['days']}-day rule"
    if "alive_rule" in d:
        line += f", {d['alive_rule']['share']:.1%} with P(alive) < {d['alive_rule']['threshold']}"
    console.print(line)
    seg = Table("RFM segment", "customers", "share", "revenue share", title="RFM segments")
    for s in r["rfm"]["segments"]:
        seg.add_row(
            s["segment"], f"{s['customers']:,}", f"{s['share']:.1%}", f"{s['revenue_share']:.1%}"
        )
    console.print(seg)
    for key in ("model", "spend_model"):
        m = r.get(key)
        if m:
            params = ", ".join(f"{k}={v:.4g}" for k, v in m["params"].items())
            ok = "converged" if m["converged"] else "[red]NOT converged[/]"
            console.print(f"{m['model']}: {params}; LL {m['log_likelihood']:.1f}; {ok}")
    hold = r.get("holdout")
    if hold:
        console.print(
            f"Holdout {hold['calibration_end']} → {hold['holdout_end']}: predicted "
            f"{hold['predicted_total']:,.0f} repeat purchases, actual {hold['actual_total']:,.0f}"
        )
    cl = Table("cluster", "description", "customers", title=f"Clusters (k={r['clusters']['k']})")
    for c in r["clusters"]["clusters"]:
        cl.add_row(str(c["cluster"]), c["label"], f"{c['customers']:,}")
    console.print(cl)
    mv = r.get("movement")
    if mv:
        moved = [t for t in mv["transitions"] if t["from"] != t["to"]][:8]
        console.print(f"Largest moves {mv['from_date']} → {mv['to_date']}:")
        for t in moved:
            console.print(f"  {t['from']} → {t['to']}: {t['customers']:,}")
    for note in r.get("notes", []):
        console.print(f"[yellow]note:[/] {note}")


@models_app.command("fit")
def models_fit(
    model: Annotated[
        str, typer.Option("--model", help="bgnbd, mbgnbd, pareto-nbd or gamma-gamma.")
    ],
    calibration_end: Annotated[
        datetime | None,
        typer.Option(
            "--calibration-end",
            formats=["%Y-%m-%d"],
            help="Fit on purchases up to this date; later ones form the holdout check.",
        ),
    ] = None,
    as_of: Annotated[
        datetime | None,
        typer.Option(
            "--as-of",
            formats=["%Y-%m-%d"],
            help="End of the observation (and of the holdout check): later orders are ignored "
            "(default: today for a workspace, the last order's date for --orders).",
        ),
    ] = None,
    workspace: WorkspaceOption = None,
    orders: OrdersOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fit a model and print its parameters and log-likelihood (time unit: weeks)."""
    from winback.analytics import analysis as an

    cal: date | None = calibration_end.date() if calibration_end else None
    end: date | None = as_of.date() if as_of else None
    if orders is not None:
        from winback.analytics.orders_file import read_orders

        tx = read_orders(orders).transactions
        last = an.day_of(end) if end else int(tx.day.max())
        result = an.fit_model(tx, model, an.day_of(cal) if cal else last, last)
    else:
        with workspace_from(workspace) as ws:
            result = ws.analytics.fit(model, calibration_end=cal, as_of=end)
    if as_json:
        print_json(result)
        return
    table = Table("parameter", "value", title=f"{result['model']} (time unit: weeks)")
    for k, v in result["params"].items():
        table.add_row(k, f"{v:.6g}")
    console.print(table)
    console.print(
        f"log-likelihood {result['log_likelihood']:.2f} over {result['customers']:,} customers; "
        f"{'converged' if result['converged'] else '[red]NOT converged[/]'} after "
        f"{result['iterations']} iterations (gradient {result['gradient_norm']:.1e}); "
        f"calibration ends {result['calibration_end']}"
    )
    if result.get("at_bound"):
        console.print(
            f"at the bound of its range: {', '.join(result['at_bound'])} (the likelihood keeps "
            "rising beyond it; see docs/analytics.md)"
        )
    hold = result.get("holdout")
    if hold:
        t = Table("repeat purchases (calibration)", "customers", "actual", "predicted",
                  title=f"Holdout {hold['calibration_end']} → {hold['holdout_end']}")  # fmt: skip
        for row in hold["by_frequency"]:
            t.add_row(
                row["frequency"],
                f"{row['customers']:,}",
                f"{row['actual']:.3f}",
                f"{row['predicted']:.3f}",
            )
        console.print(t)
        console.print(
            f"total: actual {hold['actual_total']:,.0f}, predicted {hold['predicted_total']:,.1f}"
        )


@models_app.command("predict")
def models_predict(workspace: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """Write P(alive), expected purchases (90 days), next order date, days overdue, expected
    spend and CLV onto every contact with a purchase."""
    with workspace_from(workspace) as ws, _status(as_json):
        result = ws.analytics.predict()
    if as_json:
        print_json(result)
        return
    console.print(f"Wrote {', '.join(result['written'])} for {result['customers']:,} customers.")
