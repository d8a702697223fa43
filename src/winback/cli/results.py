"""``winback flows results FLOW``: what a flow achieved, per group, step and variant."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from winback.cli._app import JsonOption, WorkspaceOption, console, print_json, workspace_from
from winback.cli.flows import NameArg, flows_app


def _pct(r: dict[str, Any]) -> str:
    return "-" if r["rate"] is None else f"{r['count']:g} ({r['rate']:.1%} of {r['of']})"


def _interval(lift: dict[str, Any], money: bool) -> str:
    def fmt(x: float | None) -> str:
        if x is None:
            return "?"
        return f"{x:+.2f}" if money else f"{x * 100:+.1f} pt"

    return f"{fmt(lift['difference'])} [{fmt(lift['low'])}, {fmt(lift['high'])}]"


def print_results(data: dict[str, Any]) -> None:
    """A flow's results as Rich tables (also used by ``simulate``)."""
    rule = data["rule"]
    console.print(
        f"[bold]{escape(data['name'])}[/] ({data['flow']}) as of {data['as_of']:%Y-%m-%d %H:%M}: "
        f"conversion = an order within {rule['conversion_window_days']} days of entering; "
        f"orders attributed by {rule['attribution']} within "
        f"{rule['attribution_window_days']} days of a delivered message"
    )
    groups = Table(
        "group", "contacts", "converted", "reactivated", "orders", "revenue", "revenue/contact"
    )
    for g in data["groups"]:
        r = g["rates"]
        groups.add_row(
            g["group"], str(g["contacts"]), _pct(r["conversion_rate"]),
            _pct(r["reactivation_rate"]), str(g["orders"]), f"{g['revenue']:.2f}",
            "-" if r["revenue_per_contact"]["rate"] is None
            else f"{r['revenue_per_contact']['rate']:.2f}",
        )  # fmt: skip
    console.print(groups)
    lifts = Table(
        "against", "incremental conversion [95 %]", "verdict", "revenue/contact [95 %]", "verdict"
    )
    for other, lift in data["lift"].items():
        if lift is None:
            continue
        conv, rev = lift["conversion"], lift["revenue_per_contact"]
        lifts.add_row(
            other, _interval(conv, False), conv["verdict"], _interval(rev, True), rev["verdict"]
        )
    if lifts.row_count:
        console.print(lifts)
    steps = Table("step", "variant", "sent", "delivered", "opened", "machine opens", "clicked",
                  "unsubscribed", "complained", "bounced", "orders", "revenue")  # fmt: skip
    for s in data["steps"]:
        r = s["rates"]
        steps.add_row(
            escape(s["name"]), escape(s["variant"] or ""), str(s["sent"]), _pct(r["delivery_rate"]),
            _pct(r["open_rate"]), str(s["machine_opened"]), _pct(r["click_rate"]),
            _pct(r["unsubscribe_rate"]), _pct(r["complaint_rate"]), _pct(r["bounce_rate"]),
            str(s["orders"]), f"{s['revenue']:.2f}",
        )  # fmt: skip
    console.print(steps)
    arms = Table("A/B step", "arm", "contacts", "converted", "revenue/contact")
    for kind, key in (("branches", "branch"), ("variants", "variant")):
        for a in data[kind]:
            r = a["rates"]
            arms.add_row(
                escape(a["name"]), escape(a[key]), str(a["contacts"]), _pct(r["conversion_rate"]),
                "-" if r["revenue_per_contact"]["rate"] is None
                else f"{r['revenue_per_contact']['rate']:.2f}",
            )  # fmt: skip
    if arms.row_count:
        console.print(arms)
    for e in data["experiments"]:
        console.print(
            f"{escape(e['name'])}: [bold]{escape(e['status'])}[/] ({escape(e['reason'])})"
        )


@flows_app.command("results")
def results(
    name: NameArg,
    since: Annotated[
        str | None, typer.Option(help="Only entries from this date (ISO date or date-time).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Only entries up to this date, included.")
    ] = None,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="One figure per row as CSV (formula-safe).")
    ] = False,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """What a flow achieved: per group, step and variant, delivered, opened, clicked,
    converted, orders and revenue with their denominators; lift over the holdout and the
    control group; A/B winners."""
    from winback.results.export import write_csv
    from winback.results.period import period
    from winback.results.report import flow_results

    with workspace_from(workspace) as ws:
        begin, end = period(since, until, ws.settings.timezone, names=("--since", "--until"))
        ws.flows.sync()
        data = flow_results(ws, name, since=begin, until=end).to_dict()
    if as_json:
        print_json(data)
    elif as_csv:
        write_csv(data, sys.stdout)
    else:
        print_results(data)
