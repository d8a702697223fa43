"""``winback segments list | show | members | export | refresh | validate``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from winback.cli._app import JsonOption, WorkspaceOption, app, console, print_json, workspace_from
from winback.errors import WinbackError

segments_app = typer.Typer(help="Dynamic segments: definitions and members.", no_args_is_help=True)
app.add_typer(segments_app, name="segments")

NameArg = Annotated[str, typer.Argument(help="Segment name (quote names with spaces).")]


class BadInstant(WinbackError):
    """A --now value that is not an ISO 8601 instant."""


def parse_instant(value: str, tz: Any) -> datetime:
    """ISO 8601; a value without an offset is read in the workspace's time zone."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadInstant(
            f"--now expects an ISO 8601 date and time such as 2026-03-05T09:00, got {value!r}"
        ) from None
    return parsed.replace(tzinfo=tz) if parsed.tzinfo is None else parsed


@segments_app.command("list")
def list_segments(workspace: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """Every segment (defaults and segments/*.yaml) with its size at the last refresh."""
    with workspace_from(workspace) as ws:
        rows = ws.segments.list()
    if as_json:
        print_json(rows)
        return
    table = Table("segment", "members", "refreshed", "source", "description")
    for r in rows:
        table.add_row(
            r["name"],
            "-" if r["members"] is None else f"{r['members']:,}",
            r["refreshed_at"].isoformat(timespec="seconds") if r["refreshed_at"] else "never",
            r["source"],
            r["description"],
        )
    console.print(table)


@segments_app.command("show")
def show(name: NameArg, workspace: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """A segment's definition, dependencies and size."""
    with workspace_from(workspace) as ws:
        definition = ws.segments.get(name)
        data = ws.segments.summary(name)
    if as_json:
        print_json(data)
        return
    import yaml

    console.print(f"[bold]{definition.name}[/]  ({definition.source})")
    if definition.description:
        console.print(definition.description)
    members = "not refreshed yet" if data["members"] is None else f"{data['members']:,}"
    console.print(f"members: {members}")
    body = {k: v for k, v in definition.data.items() if k not in ("name", "description")}
    console.print(yaml.safe_dump(body, sort_keys=False, allow_unicode=True), highlight=False)


@segments_app.command("members")
def members(
    name: NameArg,
    limit: Annotated[int, typer.Option(help="Show at most this many.")] = 50,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Current members (as of the last refresh), oldest entry first."""
    with workspace_from(workspace) as ws:
        rows = ws.segments.members(name, limit=limit)
    if as_json:
        print_json(rows)
        return
    table = Table("customer_id", "email", "name", "entered")
    for r in rows:
        full = " ".join(p for p in (r["first_name"], r["last_name"]) if p)
        table.add_row(r["customer_id"], r["email"] or "", full, r["entered_at"].isoformat())
    console.print(table)


@segments_app.command("export")
def export(
    name: NameArg,
    out: Annotated[Path, typer.Option("--out", "--csv", help="CSV file to write.")],
    workspace: WorkspaceOption = None,
) -> None:
    """Write the members to CSV with consent per channel, purchases, RFM segment, P(alive)
    and CLV (streamed; safe to open in a spreadsheet)."""
    with workspace_from(workspace) as ws:
        count = ws.segments.export(name, out)
    console.print(f"Wrote {count:,} members of {name!r} to {out}.")


@segments_app.command("refresh")
def refresh(
    now: Annotated[
        str | None,
        typer.Option(help="Evaluate at this instant (ISO 8601) instead of the current time."),
    ] = None,
    full: Annotated[bool, typer.Option("--full", help="Re-evaluate every contact.")] = False,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Bring segment membership up to date (incremental where sound)."""
    from rich.progress import Progress

    with workspace_from(workspace) as ws:
        at = parse_instant(now, ws.settings.tz) if now else None
        if as_json:
            result = ws.segments.refresh(at, full=full)
        else:
            count = len(ws.segments.definitions())
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("refreshing", total=count)

                def step(name: str) -> None:
                    progress.update(task, advance=1, description=name)

                result = ws.segments.refresh(at, full=full, progress=step)
    if as_json:
        print_json(result.to_dict())
        return
    table = Table("segment", "mode", "entered", "exited", "members", "seconds")
    for s in result.segments:
        table.add_row(
            s.name, s.mode, f"{s.entered:,}", f"{s.exited:,}", f"{s.members:,}", f"{s.seconds:.3f}"
        )
    console.print(table)
    console.print(f"Refreshed at {result.now.isoformat()} in {result.seconds:.2f} s.")


@segments_app.command("validate")
def validate(workspace: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """Check every segment file (errors name the file and the place in it)."""
    with workspace_from(workspace) as ws:
        defs = ws.segments.validate()
    if as_json:
        print_json([{"name": d.name, "source": d.source, "valid": True} for d in defs])
        return
    console.print(f"{len(defs)} segments are valid.")


# The tags and contacts command groups belong with segments; register them too.
from winback.cli import contacts as _contacts  # noqa: E402, F401
from winback.cli import tags as _tags  # noqa: E402, F401
