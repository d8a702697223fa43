"""``winback run``: advance flows and deliver, in real time or up to an instant."""

from __future__ import annotations

import signal
import threading
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer

from winback.cli._app import JsonOption, WorkspaceOption, app, console, print_json, workspace_from
from winback.clock import FixedClock
from winback.errors import WinbackError
from winback.flows.runner import PassReport, run_forever, run_once


class BadInstant(WinbackError):
    """``--now`` is not an ISO date-time."""


def parse_instant(text: str, zone: str) -> datetime:
    """ISO 8601 date or date-time; without an offset it is read in the shop's time zone."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BadInstant(
            f"--now {text!r}: expected an ISO date-time like 2026-03-05T09:00"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(zone))
    return value.astimezone(ZoneInfo("UTC"))


class BadSink(WinbackError):
    """``--sink`` is not one of file, channels, auto."""


def _sink(value: str) -> str:
    if value not in ("file", "channels", "auto"):
        raise BadSink(f"--sink {value!r}: expected file, channels or auto")
    return value


def summary(report: PassReport) -> dict[str, Any]:
    return {
        "now": report.now,
        "enrolled": report.tick.enrolled,
        "contact_steps": report.tick.steps,
        "delivered": report.delivery.sent,
        "skipped_no_consent": report.delivery.skipped,
    }


@app.command()
def run(
    workspace: WorkspaceOption = None,
    now: Annotated[
        str | None,
        typer.Option(
            "--now",
            help="Execute everything due up to this instant (ISO, shop time zone) and exit.",
        ),
    ] = None,
    interval: Annotated[float, typer.Option(help="Seconds between passes.")] = 30.0,
    sink: Annotated[
        str,
        typer.Option(
            help="Where messages go: `file` (dry run: one JSON file per message in "
            "<workspace>/outbox/), `channels` (the delivery worker: SMTP/HTTP), or `auto` "
            "(channels when configured, else file).",
        ),
    ] = "auto",
    as_json: JsonOption = False,
) -> None:
    """Advance flows (segments, triggers, steps) and deliver the outbox.

    Without --now it loops in real time until SIGTERM or Ctrl-C. Messages go to the
    delivery channels when configured, else to the file sink in <workspace>/outbox/."""
    if now is not None:
        with workspace_from(workspace) as probe:
            instant = parse_instant(now, probe.settings.timezone)
        with workspace_from(workspace, clock=FixedClock(instant)) as ws:
            report = run_once(ws, instant, sink=_sink(sink))
        if as_json:
            print_json(summary(report))
        else:
            _print(report)
        return
    stop = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with workspace_from(workspace) as ws:
        console.print(f"Running flows in {ws.path} every {interval:g}s; Ctrl-C to stop.")
        passes = run_forever(ws, stop, interval=interval, on_pass=_print, sink=_sink(sink))
    console.print(f"Stopped cleanly after {passes} pass(es).")


def _print(report: PassReport) -> None:
    enrolled = sum(report.tick.enrolled.values())
    console.print(
        f"{report.now:%Y-%m-%d %H:%M} UTC: {enrolled} enrolled, "
        f"{report.tick.contact_steps} contact-steps, {report.delivery.sent} delivered, "
        f"{report.delivery.skipped} skipped (no consent)."
    )
