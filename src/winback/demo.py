"""``make demo`` (``python -m winback.demo``): a fresh workspace with a realistic shop.

The demo is a sequence of separate steps, each a function, so that later features add their
own step (analysis, segments, flows, delivery) without touching the others:

1. :func:`fresh_workspace`: recreate ``./demo-workspace``;
2. :func:`generate`: write a 20,000-customer shop with the generator;
3. :func:`import_shop`: import its contacts, orders and events, with progress bars;
4. :func:`show_summary`: print the summary of the base.
"""

from __future__ import annotations

import argparse
import shutil
from datetime import UTC, datetime, time
from pathlib import Path

from rich.console import Console

import winback
from winback.cli.imports import progress_bar
from winback.cli.summary import summary_table
from winback.clock import FixedClock
from winback.config import CONFIG_FILE
from winback.ingest import ImportReport
from winback.summary import base_summary
from winback.workspace import Workspace

DEMO_DIR = Path("demo-workspace")
CUSTOMERS = 20_000
MONTHS = 24
SEED = 42

console = Console()


def fresh_workspace(folder: Path = DEMO_DIR) -> Workspace:
    """Step 1: an empty workspace (an earlier demo workspace is removed first)."""
    if folder.exists():
        if not (folder / CONFIG_FILE).exists():
            raise SystemExit(f"{folder} exists and is not a winback workspace; not touching it")
        shutil.rmtree(folder)
    ws = winback.init(folder)
    console.rule("[bold]1. Workspace")
    console.print(f"Created {ws.path} ({ws.engine.dialect.name})")
    return ws


def generate(ws: Workspace, customers: int = CUSTOMERS, months: int = MONTHS) -> Path:
    """Step 2: a realistic shop in the canonical file format, under ``<workspace>/shop``.

    The workspace clock is then fixed at the end of the generated history, so that "the last
    90 days" means the shop's last 90 days."""
    from winback.generator import generate_shop

    console.rule("[bold]2. Generate a shop")
    out = ws.path / "shop"
    label = f"{customers:,} customers, {months} months"
    with progress_bar(label, True, in_bytes=False) as progress:
        shop = generate_shop(out, customers=customers, months=months, seed=SEED, progress=progress)
    ws.clock = FixedClock(datetime.combine(shop.end, time(), tzinfo=UTC))
    console.print(
        f"{shop.customers:,} customers, {shop.orders:,} orders, {shop.events:,} events "
        f"from {shop.start} to {shop.end}, plus {shop.dirty_rows:,} deliberately dirty rows "
        f"(listed in {shop.dirty_rows_path.name})"
    )
    return out


def import_shop(ws: Workspace, folder: Path) -> list[ImportReport]:
    """Step 3: import contacts, orders and events (bad rows go to ``*.rejects.csv``)."""
    console.rule("[bold]3. Import")
    reports = []
    for kind in ("contacts", "orders", "events"):
        path = folder / f"{kind}.csv"
        with progress_bar(f"{kind:9}", True) as progress:
            report = getattr(ws.imports, kind)(path, progress=progress)
        reports.append(report)
        rejected = (
            f", {report.rejected:,} rejected -> {report.reject_file}" if report.rejected else ""
        )
        console.print(
            f"{kind}: {report.read:,} read, {report.imported:,} imported, "
            f"{report.duplicates:,} duplicates{rejected} ({report.seconds:.1f} s)"
        )
    return reports


def show_summary(ws: Workspace) -> dict[str, object]:
    """Step 4: the base at a glance."""
    console.rule("[bold]4. The customer base")
    data = base_summary(ws)
    console.print(summary_table(data))
    return data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m winback.demo", description=__doc__)
    parser.add_argument("--customers", type=int, default=CUSTOMERS)
    parser.add_argument("--months", type=int, default=MONTHS)
    parser.add_argument("--dir", type=Path, default=DEMO_DIR)
    args = parser.parse_args(argv)
    with fresh_workspace(args.dir) as ws:
        shop = generate(ws, args.customers, args.months)
        import_shop(ws, shop)
        show_summary(ws)
    console.print(f"\nExplore it: [bold]winback summary --workspace {args.dir}[/]")


if __name__ == "__main__":
    main()
