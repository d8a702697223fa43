"""``winback init``, ``winback db upgrade``, ``winback config``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from winback.cli._app import JsonOption, WorkspaceOption, app, console, print_json, workspace_from
from winback.config import redacted
from winback.store import migrate
from winback.workspace import init as init_workspace

db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Folder to create the workspace in.")] = Path("."),
    timezone: Annotated[str, typer.Option(help="The shop's time zone (IANA name).")] = "UTC",
) -> None:
    """Create a workspace: winback.toml, the SQLite database, segments/, flows/, templates/."""
    ws = init_workspace(path, timezone=timezone)
    console.print(f"Created workspace [bold]{ws.path}[/] ({ws.engine.dialect.name}).")
    ws.close()


@db_app.command("upgrade")
def db_upgrade(workspace: WorkspaceOption = None) -> None:
    """Apply pending migrations to the store."""
    with workspace_from(workspace) as ws:
        before = migrate.current_revisions(ws.engine)
        ws.upgrade()
        after = migrate.current_revisions(ws.engine)
    if before == after:
        console.print("The store is up to date.")
    else:
        console.print(f"Upgraded the store to {', '.join(sorted(after))}.")


@app.command("config")
def show_config(workspace: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """Show the settings in force (secrets hidden: the secret key, passwords in URLs,
    provider tokens and credentials)."""
    with workspace_from(workspace) as ws:
        data = redacted(ws.settings)
    if as_json:
        print_json(data)
        return
    from rich.table import Table

    table = Table("setting", "value")
    for key, value in data.items():
        table.add_row(key, "" if value is None else str(value))
    console.print(table)
