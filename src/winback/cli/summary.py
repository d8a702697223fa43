"""``winback summary``: the base at a glance."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from winback.cli._app import JsonOption, WorkspaceOption, app, console, print_json, workspace_from
from winback.summary import base_summary


def summary_table(data: dict[str, Any]) -> Table:
    days = data["window_days"]
    table = Table(title=f"Customer base at {data['as_of']:%Y-%m-%d %H:%M} UTC", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("customers", f"{data['customers']:,}")
    table.add_row("customers with orders", f"{data['customers_with_orders']:,}")
    table.add_row("orders", f"{data['orders']:,}")
    table.add_row("revenue", f"{data['revenue']:,.2f} {data.get('currency', '')}".rstrip())
    table.add_row(f"no purchase in {days} days", f"{data['share_no_purchase']:.1%}")
    table.add_row(f"no email open in {days} days", f"{data['share_no_open']:.1%}")
    table.add_row(f"no click in {days} days", f"{data['share_no_click']:.1%}")
    table.add_row(f"no site visit in {days} days", f"{data['share_no_visit']:.1%}")
    table.add_row(f"none of these in {days} days", f"{data['share_not_active']:.1%}")
    for channel, rate in data["consent_rate"].items():
        table.add_row(f"{channel} consent", f"{rate:.1%}")
    return table


@app.command("summary")
def summary(workspace: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """Customers, orders, revenue, dormant shares and consent rates."""
    with workspace_from(workspace) as ws:
        data = base_summary(ws.engine, now=ws.clock.now(), days=ws.settings.dormant_days)
        data["currency"] = ws.settings.currency
    if as_json:
        print_json(data)
    else:
        console.print(summary_table(data))
