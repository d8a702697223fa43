"""``winback contacts show``, ``winback contacts merge``, ``winback contacts delete``."""

from __future__ import annotations

from typing import Annotated

import typer

from winback.cli._app import JsonOption, WorkspaceOption, app, console, print_json, workspace_from

contacts_app = typer.Typer(help="Look at contacts.", no_args_is_help=True)
app.add_typer(contacts_app, name="contacts")


@contacts_app.command("show")
def show(
    contact: Annotated[
        str, typer.Argument(help="The contact's customer_id, email address or #ID.")
    ],
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Attributes, consent, tags, segments, flows in progress and messages of one contact."""
    with workspace_from(workspace) as ws:
        profile = ws.contacts.profile(contact)
    if as_json:
        print_json(profile)
        return
    from rich.table import Table

    console.print(f"[bold]{profile['customer_id']}[/] (#{profile['contact_id']})")
    table = Table("attribute", "value")
    for key, value in {**profile["attributes"], **profile["custom_attributes"]}.items():
        if value is not None:
            table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)
    consent = ", ".join(f"{k}={v}" for k, v in profile["consent"].items())
    console.print(f"consent: {consent}")
    console.print("tags: " + (", ".join(t["tag"] for t in profile["tags"]) or "none"))
    for s in profile["segments"]:
        console.print(f"segment: {s['segment']} (since {s['entered_at'].isoformat()})")
    for f in profile.get("flows", []):
        wakes = f["wakes_at"].isoformat() if f["wakes_at"] else "on an event"
        extra = (
            " (holdout)" if f["holdout"] else (f" (branch {f['branch']})" if f["branch"] else "")
        )
        console.print(
            f"flow: {f['flow']} at step {f.get('step_name') or f['step']} ({f['step']}, "
            f"{f['step_kind']}) since "
            f"{f['at_step_since'].isoformat()}, wakes {wakes}{extra}"
        )
        if f.get("path"):
            console.print(f"  path: {f['path']}", markup=False)
    for m in profile["messages"]:
        console.print(
            f"message: {m['channel']} {m['template'] or ''} {m['status']} "
            f"{(m['sent_at'] or m['not_before']).isoformat()}"
        )


@contacts_app.command("merge")
def merge(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list the addresses shared by several contacts.")
    ] = False,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Merge contacts that share an email address (compared case-insensitively) into the
    oldest one, keeping orders, events, consent log, tags and their history, messages."""
    from winback.contact_merge import duplicate_addresses, merge_all

    with workspace_from(workspace) as ws:
        if dry_run:
            with ws.engine.connect() as conn:
                shared = duplicate_addresses(conn)
            if as_json:
                print_json({"shared_addresses": shared})
            else:
                console.print(f"{len(shared)} addresses shared by several contacts")
                for address in shared:
                    console.print(f"  {address}", markup=False)
            return
        done = merge_all(ws.engine, now=ws.clock.now())
    if as_json:
        print_json({"merged": [m.to_dict() for m in done]})
        return
    console.print(f"{len(done)} addresses had several contacts; merged:")
    for m in done:
        moved = ", ".join(f"{n} {t}" for t, n in m.moved.items() if n)
        console.print(
            f"  {m.email}: {', '.join(m.merged)} into {m.survivor}"
            + (f" ({moved})" if moved else ""),
            markup=False,
        )


@contacts_app.command("delete")
def delete(
    contact: Annotated[str, typer.Argument(help="The contact's customer_id (or #ID).")],
    reason: Annotated[
        str | None, typer.Option(help="Why (kept in the erasure audit trail).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Erase a contact's personal data on request (GDPR-style; see docs/flows.md): contact
    data nulled, consent revoked, tags and flows ended; orders kept without personal data;
    a tombstone stops re-imports from bringing the person back. Cannot be undone."""
    if not yes:
        typer.confirm(
            f"Erase the personal data of contact {contact}? This cannot be undone", abort=True
        )
    with workspace_from(workspace) as ws:
        done = ws.contacts.erase(contact, reason=reason, source="cli")
    if as_json:
        print_json(done)
        return
    if done["erased"]:
        console.print(f"Erased contact {done['customer_id']} (#{done['contact_id']}).")
    else:
        console.print(
            f"Contact {done['customer_id']} was erased already "
            f"({done['erased_at'].isoformat()}); nothing to do."
        )
