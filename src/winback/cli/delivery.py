"""``winback templates``, ``winback deliver``, ``winback serve``, ``winback api-keys``,
``winback coupons``, ``winback suppressions``."""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from winback.cli._app import (
    JsonOption,
    WorkspaceOption,
    app,
    console,
    err_console,
    print_json,
    workspace_from,
)
from winback.cli.run import RetryForOption, SinkOption, check_sink, configure_logging
from winback.flows.runner import RETRY_FOR, PassFailed, preflight, run_retrying
from winback.store import apikeys

templates_app = typer.Typer(
    help="Message templates: list, preview, validate.", no_args_is_help=True
)
keys_app = typer.Typer(
    help="API keys of the HTTP service (event API, management API).", no_args_is_help=True
)
coupons_app = typer.Typer(help="Coupon codes: import pools, see redemptions.", no_args_is_help=True)
suppress_app = typer.Typer(help="The suppression list.", no_args_is_help=True)
app.add_typer(templates_app, name="templates")
app.add_typer(keys_app, name="api-keys")
app.add_typer(coupons_app, name="coupons")
app.add_typer(suppress_app, name="suppressions")


@templates_app.command("list")
def templates_list(workspace: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """Templates available (the workspace's templates/ first, then the shipped library)."""
    with workspace_from(workspace) as ws:
        repo = ws.delivery.templates
        rows = [
            {"name": n, "channel": repo.get(n).channel, "path": str(repo.get(n).path)}
            for n in repo.names()
        ]
    if as_json:
        print_json(rows)
        return
    table = Table("template", "channel", "file")
    for r in rows:
        table.add_row(r["name"], r["channel"], r["path"])
    console.print(table)


@templates_app.command("render")
def templates_render(
    name: Annotated[str, typer.Argument(help="Template name (file name without .yaml).")],
    contact: Annotated[str, typer.Option("--contact", help="The contact's customer_id.")],
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write the HTML part to this file.")
    ] = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Preview a template rendered for one contact."""
    with workspace_from(workspace) as ws:
        rendered = ws.delivery.preview(name, contact)
    if html is not None:
        html.write_text(rendered.html, encoding="utf-8")
    if as_json:
        print_json(dataclasses.asdict(rendered))
        return
    if rendered.channel == "email":
        console.print(f"[bold]Subject:[/] {rendered.subject}", highlight=False)
        console.print(f"[bold]Preheader:[/] {rendered.preheader}", highlight=False)
        console.rule()
        console.print(rendered.text, highlight=False, markup=False)
        if html is not None:
            console.print(f"HTML part written to [bold]{html}[/].")
    else:
        if rendered.title:
            console.print(f"[bold]Title:[/] {rendered.title}", highlight=False)
        console.print(rendered.body, highlight=False, markup=False)


@templates_app.command("validate")
def templates_validate(
    names: Annotated[list[str] | None, typer.Argument(help="Templates (default: all).")] = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Report, with file and line, syntax errors, unknown variables and fields, includes
    outside the templates folder and library, and whatever rendering would refuse (private
    attributes, sizes past the render limits); then render each template for a sample
    contact under the same limits. Exit 1 if anything is found."""
    with workspace_from(workspace) as ws:
        problems = ws.delivery.validate(names)
    if as_json:
        print_json([{"path": p.path, "line": p.line, "message": p.message} for p in problems])
    else:
        for p in problems:
            typer.echo(str(p))  # one unwrapped line each, for editors and grep
        if not problems:
            console.print("All templates are valid.")
    if problems:
        raise typer.Exit(1)


@app.command("deliver")
def deliver(
    workspace: WorkspaceOption = None,
    sink: SinkOption = None,
    retry_for: RetryForOption = RETRY_FOR,
    as_json: JsonOption = False,
) -> None:
    """Deliver every outbox message that is due now, then exit.

    Exit code 2 on a configuration error, 1 when a transient failure (store busy or
    unreachable) lasted longer than --retry-for."""
    from winback.flows.runner import DeliveryReport, describe

    configure_logging()
    with workspace_from(workspace, sink=check_sink(sink)) as ws:
        preflight(ws, flow_files=False)
        try:
            report = run_retrying(ws.delivery.deliver_due, retry_for=retry_for, what="delivery")
        except PassFailed as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(1) from None
        counts = ws.delivery.outbox_counts()
    outcomes = DeliveryReport.of(report)
    data = {
        "claimed": report.claimed,
        "outcomes": dict(report.counts),
        "not_sent": outcomes.not_sent,
        "outbox": counts,
    }
    if as_json:
        print_json(data)
        return
    console.print(
        f"Processed {report.claimed} messages: "
        + (describe(outcomes) if report.claimed else "nothing due"),
        highlight=False,
    )


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    background: Annotated[
        bool,
        typer.Option(help="Also run the flow engine and the delivery worker in this process."),
    ] = True,
    interval: Annotated[
        float, typer.Option(help="Seconds between two passes of the engine loop.")
    ] = 30.0,
    engine_process: Annotated[
        bool,
        typer.Option(
            help="Run the engine loop in a child process (supervised, at a lower priority) "
            "rather than in a thread of the server."
        ),
    ] = True,
    applier_process: Annotated[
        bool,
        typer.Option(
            help="Write the events the API accepts into the store from a child process of "
            "its own (supervised), with or without the engine, rather than from a thread "
            "of the server."
        ),
    ] = True,
    workspace: WorkspaceOption = None,
) -> None:
    """Run the HTTP service: tracking, unsubscribe, feedback, event API.

    With the engine (the default), a failing pass is logged and retried and GET /healthz
    reports it; SIGTERM or Ctrl-C finish the slice in progress and exit 0. Exit code 2 on
    a configuration error (bad setting, delivery channels that cannot be set up)."""
    import uvicorn

    from winback.web.app import create_app

    configure_logging()
    ws = workspace_from(workspace)
    try:
        if background:
            preflight(ws, flow_files=False)  # a bad flow file is logged by each pass
        # uvicorn shuts down gracefully on SIGTERM/SIGINT (the lifespan stops the engine
        # and waits for it), then raises the signal again with the handler it found: this
        # one, so that a clean stop exits 0 rather than by the signal.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _stopped)
        app = create_app(
            ws,
            background=background,
            interval=interval,
            engine_process=engine_process,
            applier_process=applier_process,
        )
        uvicorn.run(app, host=host, port=port)
    finally:
        ws.close()


def _stopped(signum: int, _frame: Any) -> None:
    """Handler uvicorn restores and calls after its graceful shutdown: nothing left to do."""


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="A name for the key (who uses it).")],
    scope: Annotated[
        str,
        typer.Option(
            "--scope",
            help="What the key may do: events (the event API and provider reports), read "
            "(read through the management API and the dashboard) or manage (read and change; "
            "not events).",
        ),
    ] = apikeys.Scope.EVENTS.value,
    workspace: WorkspaceOption = None,
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    chosen = apikeys.parse_scope(scope)
    with workspace_from(workspace) as ws:
        key = apikeys.create(ws.engine, name, at=ws.clock.now(), scope=chosen)
    typer.echo(key)


@keys_app.command("list")
def keys_list(workspace: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """API keys (names and prefixes; the keys themselves are not stored)."""
    with workspace_from(workspace) as ws:
        rows = apikeys.list_keys(ws.engine)
    if as_json:
        print_json(rows)
        return
    table = Table("name", "prefix", "scope", "created", "last used", "revoked")
    for r in rows:
        table.add_row(
            *(
                str(r[k] or "")
                for k in ("name", "prefix", "scope", "created_at", "last_used_at", "revoked_at")
            )
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(name: str, workspace: WorkspaceOption = None) -> None:
    """Revoke an API key."""
    with workspace_from(workspace) as ws:
        done = apikeys.revoke(ws.engine, name, at=ws.clock.now())
    console.print(f"Revoked {name}." if done else f"No active key named {name}.")


@coupons_app.command("import")
def coupons_import(
    file: Annotated[Path, typer.Argument(help="One code per line, or a CSV with a code column.")],
    pool: Annotated[str, typer.Option(help="Pool name flows refer to.")] = "default",
    workspace: WorkspaceOption = None,
) -> None:
    """Import a pool of coupon codes."""
    with workspace_from(workspace) as ws:
        added, known = ws.delivery.import_coupons(file, pool=pool)
    console.print(f"Added {added} codes to pool {pool!r} ({known} already known).")


@coupons_app.command("status")
def coupons_status(workspace: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """Codes, assigned and redeemed (matching orders' coupon codes first)."""
    with workspace_from(workspace) as ws:
        ws.delivery.redeem_coupons()
        counts = ws.delivery.coupon_counts()
    if as_json:
        print_json(counts)
        return
    console.print(", ".join(f"{v} {k}" for k, v in counts.items()))


@suppress_app.command("list")
def suppressions_list(workspace: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """Suppressed addresses."""
    with workspace_from(workspace) as ws:
        rows = ws.delivery.suppressions()
    if as_json:
        print_json(rows)
        return
    table = Table("channel", "address", "reason", "since")
    for r in rows:
        table.add_row(r["channel"], r["address"], r["reason"], str(r["created_at"]))
    console.print(table)


@suppress_app.command("add")
def suppressions_add(
    address: str,
    channel: Annotated[str, typer.Option(help="email, sms or push")] = "email",
    workspace: WorkspaceOption = None,
) -> None:
    """Suppress an address by hand."""
    with workspace_from(workspace) as ws:
        new = ws.delivery.suppress(channel, address)
    console.print("Suppressed." if new else "Already suppressed.")
