"""``winback feedback-loop``: complaint (ARF) and bounce (DSN) reports from providers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from winback.cli._app import JsonOption, WorkspaceOption, app, console, print_json, workspace_from
from winback.cli.imports import QuietOption, progress_bar

fbl_app = typer.Typer(
    help="Complaint (ARF feedback-loop) and bounce (DSN) reports sent back by mailbox providers.",
    no_args_is_help=True,
)
app.add_typer(fbl_app, name="feedback-loop")


@fbl_app.command("import")
def fbl_import(
    paths: Annotated[
        list[Path],
        typer.Argument(help=".eml files, mbox files or folders of them (read recursively)."),
    ],
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Record complaints and bounces: events, suppressions, consent (idempotent). Reports
    that cannot be used go to the reject list (`winback feedback-loop rejects`)."""
    with workspace_from(workspace) as ws:
        with progress_bar("reports", not (as_json or quiet), in_bytes=False) as progress:
            result = ws.delivery.import_reports(paths, progress=progress)
    if as_json:
        print_json(result.model_dump())
        return
    table = Table(show_header=False, title="Provider reports")
    for name, value in result.model_dump(exclude={"errors"}).items():
        table.add_row(name.replace("_", " "), str(value))
    console.print(table)
    for error in result.errors[:20]:
        console.print(f"[yellow]rejected:[/] {error}", highlight=False)
    if len(result.errors) > 20:
        console.print(f"... and {len(result.errors) - 20} more (winback feedback-loop rejects)")


@fbl_app.command("rejects")
def fbl_rejects(workspace: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """Reports that could not be parsed or matched, with why (the raw report is kept)."""
    with workspace_from(workspace) as ws:
        rows = ws.delivery.report_rejects()
    if as_json:
        print_json(rows)
        return
    table = Table("id", "source", "reason", "received", "bytes")
    for r in rows:
        table.add_row(str(r["id"]), r["source"], r["reason"], str(r["received_at"]), str(r["size"]))
    console.print(table)
