"""The Typer application and what every command shares (workspace lookup, output)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from winback.clock import Clock
from winback.workspace import Workspace
from winback.workspace import open as open_workspace

app = typer.Typer(
    name="winback",
    help="Find dormant customers and win them back with measured, multi-step campaigns.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

WorkspaceOption = Annotated[
    Path | None,
    typer.Option(
        "--workspace",
        "-w",
        help="Workspace folder (default: $WINBACK_HOME, then the current directory).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]


def workspace_from(
    path: Path | None, *, clock: Clock | None = None, sink: str | None = None
) -> Workspace:
    """The workspace at ``path`` (or found as :func:`winback.workspace.find` says), with
    ``clock``; ``sink`` overrides the setting ``delivery_sink``."""
    ws = open_workspace(path, clock=clock)
    if sink is None:
        return ws
    from winback.flows.runner import with_sink

    return with_sink(ws, sink)


def print_json(data: Any) -> None:
    """JSON on stdout, with dates as ISO 8601 and decimals as numbers."""
    typer.echo(json.dumps(data, indent=2, default=_json_default, ensure_ascii=False))


def _json_default(value: Any) -> Any:
    from datetime import date, datetime
    from decimal import Decimal

    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, set | tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
