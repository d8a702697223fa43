"""``make demo`` (``python -m winback.cli.demo``): a fresh workspace with a realistic shop.

The demo is a sequence of separate steps, each a function, so that later features add their
own step (analysis, segments, flows, delivery) without touching the others:

1. :func:`fresh_workspace`: recreate ``./demo-workspace``;
2. :func:`generate`: write a 20,000-customer shop with the generator; the workspace is then
   used with its clock fixed at the end of the generated history;
3. :func:`import_shop`: import its contacts, orders and events, with progress bars;
4. :func:`show_summary`: print the summary of the base;
5. :func:`analyse`: RFM, P(alive), CLV, clusters, stored on the contacts, and the HTML report;
6. :func:`simulate_reactivation`: the reference flow for 30 simulated days on a copy, against
   the generator's ground-truth response model, with a 10% holdout;
7. :func:`deliver_reactivation`: the reference flow for real, its emails delivered to a local
   SMTP server started by the demo (one ``.eml`` file per message);
8. :func:`dashboard_user`: a user for the dashboard of ``winback serve``, and how to sign in.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
from datetime import UTC, datetime, time
from pathlib import Path

from rich.console import Console
from rich.table import Table

import winback
from winback.cli.imports import progress_bar
from winback.cli.summary import summary_table
from winback.clock import FixedClock
from winback.config import CONFIG_FILE
from winback.generator.shop import GeneratedShop
from winback.ingest import ImportReport
from winback.summary import base_summary
from winback.workspace import Workspace

DEMO_DIR = Path("demo-workspace")
CUSTOMERS = 20_000
MONTHS = 24
SEED = 42
#: The dashboard user the demo creates.
DEMO_USER = "demo"
#: When set, the demo user's password; otherwise one is generated and printed once.
PASSWORD_VARIABLE = "WINBACK_DEMO_PASSWORD"
#: Where ``winback serve`` listens by default.
SERVE_URL = "http://127.0.0.1:8000"

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


def generate(ws: Workspace, customers: int = CUSTOMERS, months: int = MONTHS) -> GeneratedShop:
    """Step 2: a realistic shop in the canonical file format, under ``<workspace>/shop``."""
    from winback.generator import generate_shop

    console.rule("[bold]2. Generate a shop")
    out = ws.path / "shop"
    label = f"{customers:,} customers, {months} months"
    with progress_bar(label, True, in_bytes=False) as progress:
        shop = generate_shop(out, customers=customers, months=months, seed=SEED, progress=progress)
    console.print(
        f"{shop.customers:,} customers, {shop.orders:,} orders, {shop.events:,} events "
        f"from {shop.start} to {shop.end}, plus {shop.dirty_rows:,} deliberately dirty rows "
        f"(listed in {shop.dirty_rows_path.name})"
    )
    return shop


def at_shop_end(ws: Workspace, shop: GeneratedShop) -> Workspace:
    """The workspace with its clock fixed at the end of the generated history, so that "the
    last 90 days" means the shop's last 90 days."""
    return ws.replace(clock=FixedClock(datetime.combine(shop.end, time(), tzinfo=UTC)))


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
    data = base_summary(ws.engine, now=ws.clock.now(), days=ws.settings.dormant_days)
    console.print(summary_table(data))
    return data


def analyse(ws: Workspace) -> Path:
    """Step 5: the whole analysis, written to the contacts, and the HTML report."""
    from winback.analytics.report import write_html
    from winback.cli.analyze import print_analysis

    console.rule("[bold]5. Analysis")
    with console.status("analysing ...") as status:
        result = ws.analytics.analyze(progress=lambda step: status.update(f"analysing: {step}"))
    report = result.report
    report["source"] = str(ws.path)
    print_analysis(report)
    html = ws.path / "report.html"
    write_html(report, html)
    console.print(f"HTML report (opens with no internet): [bold]{html.resolve()}[/]")
    return html


def simulate_reactivation(ws: Workspace, shop: Path, days: int = 30) -> dict[str, object]:
    """Step 6: the reference flow in simulated time, on a copy of the workspace."""
    from winback.cli.flows import print_simulation
    from winback.flows.simulate import simulate

    console.rule(f"[bold]6. Reactivation flow, {days} simulated days")
    ws.flows.add("reactivation")
    start = ws.clock.now()
    with console.status("simulating ..."):
        result = simulate(
            ws,
            "reactivation",
            start=start,
            days=days,
            ground_truth=shop / "ground_truth.csv",
            holdout=0.1,
        )
    print_simulation(result, "reactivation", days, start)
    return result.to_dict()


def deliver_reactivation(ws: Workspace) -> Path:
    """Step 7: run the reference flow for real over its first 7 days; its emails go to a
    local SMTP server that writes each message it receives to ``<workspace>/mailbox``."""
    from datetime import timedelta

    from winback.delivery.channels.demo_sink import demo_smtp_sink
    from winback.flows.runner import run_once

    console.rule("[bold]7. Reactivation flow, delivered by SMTP")
    start = ws.clock.now()
    clock = FixedClock(start)
    with demo_smtp_sink(ws.path / "mailbox") as sink:
        # The demo's clock sits at midnight UTC: no quiet hours, so that nobody is deferred.
        settings = ws.settings.model_copy(update={"smtp_url": sink.url, "quiet_hours": ""})
        table = Table("day", "entered", "emails delivered", "not sent")
        with ws.replace(settings=settings, clock=clock) as live:
            for day in (0, 4, 7):
                now = start + timedelta(days=day)
                clock.set(now)
                report = run_once(live, now)
                table.add_row(
                    f"{now:%Y-%m-%d}",
                    f"{report.tick.total_enrolled:,}",
                    f"{report.delivery.sent:,}",
                    f"{sum(report.delivery.not_sent.values()):,}",
                )
    console.print(table)
    count = len(list(sink.folder.glob("*.eml")))
    console.print(f"{count:,} emails received: open the .eml files in [bold]{sink.folder}[/]")
    return sink.folder


def dashboard_user(ws: Workspace, password: str | None = None) -> tuple[str, str]:
    """Step 8: the user ``demo`` for the dashboard, with ``password``, else the value of
    ``$WINBACK_DEMO_PASSWORD``, else a generated one (printed here, once; only its hash is
    stored). Returns the user name and the password."""
    from winback import accounts

    console.rule("[bold]8. The dashboard")
    chosen = password or os.environ.get(PASSWORD_VARIABLE)
    password = chosen or secrets.token_urlsafe(12)
    user = accounts.add_user(ws.engine, DEMO_USER, password, at=ws.clock.now())
    console.print(
        f"Start the service: [bold].venv/bin/winback serve --workspace {ws.path} "
        "--no-background[/]",
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"Then open [bold]{SERVE_URL}/[/] and sign in:", highlight=False)
    console.print(f"  user name  [bold]{user.name}[/]", highlight=False)
    if chosen:
        console.print(f"  password   the one given (${PASSWORD_VARIABLE})", highlight=False)
    else:
        console.print(f"  password   [bold]{password}[/]  (shown only now)", highlight=False)
    return user.name, password


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m winback.cli.demo", description=__doc__)
    parser.add_argument("--customers", type=int, default=CUSTOMERS)
    parser.add_argument("--months", type=int, default=MONTHS)
    parser.add_argument("--dir", type=Path, default=DEMO_DIR)
    args = parser.parse_args(argv)
    with fresh_workspace(args.dir) as created:
        shop = generate(created, args.customers, args.months)
        with at_shop_end(created, shop) as ws:
            import_shop(ws, shop.out_dir)
            show_summary(ws)
            analyse(ws)
            simulate_reactivation(ws, shop.out_dir)
            deliver_reactivation(ws)
            dashboard_user(ws)
    console.print(f"\nExplore it: [bold]winback summary --workspace {args.dir}[/]")


if __name__ == "__main__":
    main()
