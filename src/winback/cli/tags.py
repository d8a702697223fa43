"""``winback tags add | remove | list``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from winback.cli._app import JsonOption, WorkspaceOption, app, console, print_json, workspace_from

tags_app = typer.Typer(help="Tags on contacts, with history.", no_args_is_help=True)
app.add_typer(tags_app, name="tags")

TagArg = Annotated[str, typer.Argument(help="The tag, e.g. inactive.")]
ContactOption = Annotated[
    list[str] | None,
    typer.Option("--contact", "-c", help="A contact's customer_id (or #ID); repeatable."),
]
SegmentOption = Annotated[
    str | None, typer.Option("--segment", "-s", help="Every current member of this segment.")
]


@tags_app.command("add")
def add(
    tag: TagArg,
    contact: ContactOption = None,
    segment: SegmentOption = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Tag contacts (flows triggered by this tag will pick them up)."""
    with workspace_from(workspace) as ws:
        change = ws.tags.add(tag, contact_refs=contact or [], segment=segment)
    _report(change.tag, "Tagged", change.requested, len(change.changed), as_json)


@tags_app.command("remove")
def remove(
    tag: TagArg,
    contact: ContactOption = None,
    segment: SegmentOption = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove a tag from contacts."""
    with workspace_from(workspace) as ws:
        change = ws.tags.remove(tag, contact_refs=contact or [], segment=segment)
    _report(change.tag, "Untagged", change.requested, len(change.changed), as_json)


def _report(tag: str, verb: str, requested: int, changed: int, as_json: bool) -> None:
    if as_json:
        print_json({"tag": tag, "requested": requested, "changed": changed})
    else:
        console.print(f"{verb} {changed:,} of {requested:,} contacts with {tag!r}.")


@tags_app.command("list")
def list_tags(
    contact: Annotated[
        str | None, typer.Option("--contact", "-c", help="Show this contact's tags and history.")
    ] = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Tags in use with their counts, or one contact's tags with history."""
    with workspace_from(workspace) as ws:
        if contact is None:
            rows = ws.tags.counts()
            if as_json:
                print_json(rows)
                return
            table = Table("tag", "contacts", "last change")
            for r in rows:
                last = r["last_change"].isoformat() if r["last_change"] else ""
                table.add_row(r["tag"], f"{r['contacts']:,}", last)
            console.print(table)
            return
        data = ws.tags.of_contact(ws.contacts.resolve(contact))
    if as_json:
        print_json(data)
        return
    console.print("tags: " + (", ".join(t["tag"] for t in data["tags"]) or "none"))
    table = Table("at", "tag", "action", "source")
    for h in data["history"]:
        table.add_row(h["at"].isoformat(), h["tag"], h["action"], h["source"])
    console.print(table)
