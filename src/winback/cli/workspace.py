"""``winback init``, ``winback doctor``, ``winback db upgrade``, ``winback config``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from winback.cli._app import JsonOption, WorkspaceOption, app, console, print_json, workspace_from
from winback.config import redacted
from winback.store import migrate
from winback.workspace import init as init_workspace

db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")


#: What ``winback init`` asks for: option name -> (question, default).
SHOP_DETAILS = {
    "shop_name": ("Shop name", "Our shop"),
    "shop_url": ("Shop URL", "https://example.com"),
    "mail_from": ("From address of emails", "winback@localhost"),
    "base_url": ("Public URL of `winback serve` (links in emails)", "http://127.0.0.1:8000"),
    "currency": ("Currency", "USD"),
    "timezone": ("Time zone (IANA name)", "UTC"),
}


def _detail(help_text: str) -> Any:
    return typer.Option(help=help_text, show_default=False)


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Folder to create the workspace in.")] = Path("."),
    shop_name: Annotated[str | None, _detail("The shop's name, as emails show it.")] = None,
    shop_url: Annotated[str | None, _detail("The shop's home page.")] = None,
    mail_from: Annotated[str | None, _detail("From address of emails.")] = None,
    base_url: Annotated[
        str | None, _detail("Public URL of `winback serve` (tracking and unsubscribe links).")
    ] = None,
    currency: Annotated[str | None, _detail("Currency (three letters, e.g. EUR).")] = None,
    timezone: Annotated[str | None, _detail("The shop's time zone (IANA name).")] = None,
) -> None:
    """Create a workspace: winback.toml, the SQLite database, segments/, flows/, templates/.

    The shop's details not given as options are asked for when the terminal is
    interactive, else left at their defaults (see `winback doctor`)."""
    given = {
        "shop_name": shop_name,
        "shop_url": shop_url,
        "mail_from": mail_from,
        "base_url": base_url,
        "currency": currency,
        "timezone": timezone,
    }
    asking = sys.stdin.isatty()
    values: dict[str, str] = {}
    for name, value in given.items():
        question, default = SHOP_DETAILS[name]
        if value is None:
            value = typer.prompt(question, default=default) if asking else default
        values[name] = value
    ws = init_workspace(
        path,
        shop_name=values["shop_name"],
        shop_url=values["shop_url"],
        mail_from=values["mail_from"],
        base_url=values["base_url"],
        currency=values["currency"],
        timezone=values["timezone"],
    )
    console.print(f"Created workspace [bold]{ws.path}[/] ({ws.engine.dialect.name}).")
    ws.close()
    unset = [n for n, v in values.items() if v == SHOP_DETAILS[n][1] and n != "timezone"]
    if unset:
        console.print(
            f"Still at their defaults: {', '.join(unset)}. Set them in winback.toml before "
            "sending; `winback doctor` checks what a send needs.",
            highlight=False,
        )


@app.command()
def doctor(workspace: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """Check what sending real email needs: public base_url (not loopback), a From
    address, the shop's name, the secret key, the SMTP relay reachable. Exit code 1 when
    something needs fixing."""
    from winback.setup_checks import doctor as run_checks

    with workspace_from(workspace) as ws:
        found = run_checks(ws.settings)
    if as_json:
        print_json({"ok": all(f.ok for f in found), "checks": [vars(f) for f in found]})
    else:
        for f in found:
            mark = "[green]ok[/]  " if f.ok else "[red]fix[/] "
            console.print(f"{mark} {f.check}: {f.detail}", highlight=False)
            if not f.ok:
                console.print(f"      -> {f.fix}", highlight=False, markup=False)
    if not all(f.ok for f in found):
        raise typer.Exit(1)


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
