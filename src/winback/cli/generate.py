"""``winback generate-shop``: write a realistic synthetic shop in the canonical import format."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from winback.cli._app import JsonOption, app, console, err_console, print_json
from winback.generator import generate_shop


def _parse_date(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise typer.BadParameter(f"expected a date like 2026-03-01, got {value!r}") from None


@app.command("generate-shop")
def generate_shop_command(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the files into.")],
    customers: Annotated[
        int, typer.Option(help="Number of contacts (customers and prospects).")
    ] = 20_000,
    months: Annotated[int, typer.Option(help="Length of the history in months.")] = 24,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same files.")] = 1,
    end: Annotated[
        str | None,
        typer.Option(help="End of the period (exclusive), YYYY-MM-DD. Default 2026-03-01."),
    ] = None,
    dirty_share: Annotated[float, typer.Option(help="Share of dirty rows per file.")] = 0.01,
    mean_orders: Annotated[
        float | None,
        typer.Option(help="Scale purchase rates to this many orders per contact on average."),
    ] = None,
    mean_events: Annotated[
        float | None,
        typer.Option(help="Scale email sends and site visits to this many events per contact."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Processes to use (default: one per CPU for large shops)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Generate contacts.csv, orders.csv, events.csv, ground_truth.csv and dirty_rows.csv."""
    end_date = _parse_date(end)
    with Progress(
        TextColumn("[bold]generating shop"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("customers"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=as_json,
    ) as bar:
        task = bar.add_task("generate", total=customers)
        shop = generate_shop(
            out,
            customers=customers,
            months=months,
            seed=seed,
            end=end_date,
            dirty_share=dirty_share,
            mean_orders=mean_orders,
            mean_events=mean_events,
            workers=workers,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if as_json:
        print_json(shop.as_dict())
        return
    console.print(
        f"Wrote [bold]{shop.customers:,}[/] contacts, [bold]{shop.orders:,}[/] orders and "
        f"[bold]{shop.events:,}[/] events ({shop.start} to {shop.end}, "
        f"{shop.dirty_rows:,} dirty rows) to [bold]{shop.out_dir}[/]."
    )
