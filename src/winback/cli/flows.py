"""``winback flows ...`` and ``winback simulate``."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from winback.cli._app import JsonOption, WorkspaceOption, app, console, print_json, workspace_from
from winback.flows.fields import parse_duration
from winback.flows.labels import in_order, labelled
from winback.flows.service import library_templates

flows_app = typer.Typer(
    help="Multi-step flows: list, inspect, validate, enable, pause.", no_args_is_help=True
)
app.add_typer(flows_app, name="flows")

NameArg = Annotated[str, typer.Argument(help="Flow key (file name without .yaml) or name.")]


@flows_app.command("list")
def list_flows(workspace: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """Flows of the workspace with their status and how many contacts are in them."""
    with workspace_from(workspace) as ws:
        infos = ws.flows.list()
    if as_json:
        print_json([asdict(i) for i in infos])
        return
    table = Table("flow", "name", "status", "version", "trigger", "active", "entered")
    for i in infos:
        table.add_row(
            i.key, i.name, i.status, str(i.version), i.trigger, str(i.active), str(i.entered)
        )
    console.print(table)
    if not infos:
        console.print(f"No flows yet. Add one: winback flows add {library_templates()[0]}")


@flows_app.command("show")
def show(name: NameArg, workspace: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """A flow's steps (with their ids) and where its contacts are."""
    with workspace_from(workspace) as ws:
        ws.flows.sync()
        data = ws.flows.show(name)
    if as_json:
        print_json(data)
        return
    console.print(
        f"[bold]{data['name']}[/] ({data['key']}, {data['status']}, version {data['version']})"
    )
    stats = data["stats"]
    labels = stats["step_names"]
    table = Table("step", "id", "kind", "next", "active here", "outcomes", "messages")
    for step in data["steps"]:
        outcomes = stats["outcomes_per_step"].get(step["id"], {})
        msgs = stats["messages_per_step"].get(step["id"], {})
        nxt = labelled(step["next"], labels) if step["next"] else "end"
        if "then" in step:
            then = labelled(step["then"], labels) if step["then"] else "end"
            other = labelled(step["else"], labels) if step["else"] else "end"
            nxt = f"then {then} / else {other}"
        table.add_row(
            escape(step["name"]),
            step["id"],
            step["kind"],
            escape(nxt),
            str(stats["active_per_step"].get(step["id"], 0)),
            ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items())),
            ", ".join(f"{k}: {v}" for k, v in sorted(msgs.items())),
        )
    console.print(table)


@flows_app.command("stats")
def stats(name: NameArg, workspace: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """Contacts per step, exits by reason, messages per step, holdout vs treatment."""
    with workspace_from(workspace) as ws:
        ws.flows.sync()
        data = ws.flows.stats(name)
    if as_json:
        print_json(data)
        return
    console.print(
        f"[bold]{data['flow']}[/]: {data['entered']} entered "
        f"({data['treatment']} treatment, {data['holdout']} holdout)"
    )
    table = Table("step", "active here", "messages")
    labels = data["step_names"]
    steps = in_order(set(data["active_per_step"]) | set(data["messages_per_step"]), labels)
    for step in steps:
        msgs = data["messages_per_step"].get(step, {})
        table.add_row(
            escape(labelled(step, labels)),
            str(data["active_per_step"].get(step, 0)),
            ", ".join(f"{k}: {v}" for k, v in sorted(msgs.items())),
        )
    console.print(table)
    exits = Table("exit reason", "contacts")
    for reason, n in sorted(data["exits"].items()):
        exits.add_row(reason, str(n))
    console.print(exits)


@flows_app.command("validate")
def validate(
    file: Annotated[
        Path | None, typer.Argument(help="One flow file (default: all in flows/).")
    ] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Check flow files (syntax, steps, conditions); errors name file and place."""
    with workspace_from(workspace) as ws:
        files = [file] if file is not None else ws.flows.files()
        for f in files:
            program = ws.flows.validate_file(f)
            console.print(f"{f}: ok ({len(program.nodes)} steps)")
    if not files:
        console.print("No flow files.")


def _duration(value: str | None, option: str) -> timedelta | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


@flows_app.command("enable")
def enable(
    name: NameArg,
    backfill: Annotated[
        str | None,
        typer.Option(
            "--backfill",
            help="Event and tag flows: also enrol the contacts whose qualifying event falls "
            "within this look-back (e.g. 14d), each at the step their timing calls for. "
            "Default: the flow file's entry.backfill.",
        ),
    ] = None,
    late_by: Annotated[
        str | None,
        typer.Option(
            "--late-by",
            help="With a back-fill: how late a message may still go out (default: the flow "
            "file's entry.late_by, else 1d).",
        ),
    ] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Start or resume a flow."""
    window = _duration(backfill, "--backfill")
    late = _duration(late_by, "--late-by")
    with workspace_from(workspace) as ws:
        was = ws.flows.info(name).status
        filled = ws.flows.enable(name, backfill=window, late_by=late)
    if was == "enabled":
        note = " Pause it first to back-fill." if window else ""
        console.print(f"{name} is enabled already: nothing changed.{note}")
        return
    console.print(f"Enabled {name}." + (f" Back-filled {filled} contacts." if window else ""))


@flows_app.command("pause")
def pause(name: NameArg, workspace: WorkspaceOption = None) -> None:
    """Pause a flow: no steps advance and no one enters until it is enabled again."""
    with workspace_from(workspace) as ws:
        ws.flows.pause(name)
    console.print(f"Paused {name}.")


@flows_app.command("add")
def add(
    template: Annotated[str, typer.Argument(help=f"One of: {', '.join(library_templates())}.")],
    workspace: WorkspaceOption = None,
    paused: Annotated[bool, typer.Option("--paused", help="Add without enabling.")] = False,
) -> None:
    """Copy a shipped flow template (and its message templates) into the workspace and enable it."""
    with workspace_from(workspace) as ws:
        keys = ws.flows.add(template, enable=not paused)
    state = "paused" if paused else "enabled"
    console.print(f"Added {', '.join(f'flows/{k}.yaml' for k in keys)} ({state}).")


@flows_app.command("templates")
def templates(as_json: JsonOption = False) -> None:
    """The shipped flow templates."""
    names = library_templates()
    if as_json:
        print_json(names)
    else:
        for n in names:
            console.print(n)


@app.command()
def simulate(
    flow: NameArg,
    start: Annotated[str, typer.Option(help="First simulated day (ISO date or date-time).")],
    days: Annotated[int, typer.Option(help="Number of simulated days.", min=1)] = 30,
    ground_truth: Annotated[
        Path | None,
        typer.Option(
            help="Ground-truth response model (default: ground_truth.csv in the workspace)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed of simulated purchases.")] = 1,
    holdout: Annotated[
        float,
        typer.Option(help="Hold out this share of entrants (e.g. 0.1) to measure the lift."),
    ] = 0.0,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run a flow in simulated time on a copy of the workspace; report what would happen."""
    from rich.progress import Progress

    from winback.cli.run import parse_instant
    from winback.flows.simulate import simulate as run_simulation

    with workspace_from(workspace) as ws:
        begin = parse_instant(start, ws.settings.timezone)
        with Progress(console=console, transient=True, disable=as_json) as progress:
            task = progress.add_task("simulating", total=days)
            result = run_simulation(
                ws,
                flow,
                start=begin,
                days=days,
                ground_truth=ground_truth,
                seed=seed,
                holdout=holdout,
                on_day=lambda _d: progress.advance(task),
            )
    if as_json:
        print_json(result.to_dict())
        return
    print_simulation(result, flow, days, begin)


def print_simulation(result: Any, flow: str, days: int, begin: datetime) -> None:
    """A simulation's counts as Rich tables (also used by the demo)."""
    data = result.to_dict()
    console.print(
        f"[bold]{flow}[/], {days} simulated days from {begin:%Y-%m-%d}: "
        f"{data['entered']} entered, {data['messages']} messages "
        f"({_outcomes(data)})"
    )
    table = Table("step", "messages")
    labels = data["step_names"]
    for step in in_order(data["messages_per_step"], labels):
        table.add_row(escape(labelled(step, labels)), str(data["messages_per_step"][step]))
    console.print(table)
    groups = Table("group", "contacts", "reactivated", "revenue")
    for name in ("treatment", "holdout"):
        g = data[name]
        groups.add_row(name, str(g["contacts"]), str(g["reactivated"]), f"{g['revenue']:.2f}")
    console.print(groups)
    lift = (data.get("results") or {}).get("lift", {}).get("holdout")
    if lift is not None:
        conv = lift["conversion"]
        low = "?" if conv["low"] is None else f"{conv['low'] * 100:+.1f}"
        high = "?" if conv["high"] is None else f"{conv['high'] * 100:+.1f}"
        console.print(
            f"incremental conversion {conv['difference'] * 100:+.1f} points "
            f"(95 % interval {low} to {high}): {conv['verdict']}"
        )
    if data.get("backtest"):
        print_backtest(data["backtest"])


def _outcomes(data: dict[str, Any]) -> str:
    """Where the simulation's purchases come from."""
    if data.get("backtest") and data["backtest"]["replay"]:
        return "outcomes: recorded orders"
    if data["response_model"]:
        return f"ground truth: {data['response_model']}"
    return "no response model"


def print_backtest(bt: dict[str, Any]) -> None:
    """The simulation's comparison with the shop's history and the model's baseline."""
    base = bt["baseline"]
    if bt["replay"]:
        console.print(
            f"replay of recorded history (data until {bt['data_end'][:10]}): "
            f"{bt['came_back']} of {base['entrants']} entrants came back anyway"
        )
    if base["unavailable"]:
        console.print(f"no-contact baseline: unavailable ({base['unavailable']})")
    elif base["entrants"]:
        console.print(
            f"no-contact baseline ({base['model']} fitted up to the start): "
            f"{base['expected_buyers']:.1f} buyers, {base['expected_orders']:.1f} orders expected"
        )
    if bt["estimated_lift"] is not None:
        line = f"estimated lift: {bt['estimated_lift'] * 100:+.1f} points"
        if bt["true_lift"] is not None:
            line += f"   true lift (ground truth): {bt['true_lift'] * 100:+.1f} points"
        console.print(line)
