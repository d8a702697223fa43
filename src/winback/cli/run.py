"""``winback run``: advance flows and deliver, in real time or up to an instant."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer

from winback.cli._app import (
    JsonOption,
    WorkspaceOption,
    app,
    console,
    err_console,
    print_json,
    workspace_from,
)
from winback.clock import FixedClock
from winback.errors import WinbackError
from winback.flows.runner import (
    RETRY_FOR,
    PassFailed,
    PassReport,
    describe,
    preflight,
    run_forever,
    run_once,
    run_retrying,
)
from winback.masking import mask_handlers


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


def check_sink(value: str | None) -> str | None:
    if value is not None and value not in ("file", "channels", "auto"):
        raise BadSink(f"--sink {value!r}: expected file, channels or auto")
    return value


def configure_logging() -> None:
    """Log records of winback (``winback.engine``: failed passes with their traceback) to
    stderr with a timestamp, unless the embedding program configured logging itself. Either
    way the root handlers mask secrets (:class:`winback.masking.MaskingFilter`): passwords
    in URLs and every secret setting, in messages and tracebacks."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        logging.getLogger("winback").setLevel(logging.INFO)
    mask_handlers(root.handlers)


def summary(report: PassReport) -> dict[str, Any]:
    return {
        "now": report.now,
        "enrolled": report.tick.enrolled,
        "contact_steps": report.tick.steps,
        "delivered": report.delivery.sent,
        "not_sent": report.delivery.not_sent,
        "flow_file_errors": report.tick.errors,
    }


SinkOption = Annotated[
    str | None,
    typer.Option(
        help="Where messages go (overrides the delivery_sink setting): `file` (dry run: the "
        "file channel, one JSON file per message in <workspace>/outbox/), `channels` (the "
        "configured SMTP/HTTP providers), or `auto` (channels when configured, else file). "
        "Consent, suppression, caps and quiet hours apply to all of them.",
        show_default=False,
    ),
]
RetryForOption = Annotated[
    float,
    typer.Option(
        "--retry-for",
        help="A one-shot pass that fails on a transient error (store busy or unreachable) is "
        "tried again with a backoff for this many seconds, then given up (exit code 1).",
    ),
]


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
    sink: SinkOption = None,
    retry_for: RetryForOption = RETRY_FOR,
    as_json: JsonOption = False,
) -> None:
    """Advance flows (segments, triggers, steps) and deliver the outbox.

    Without --now it loops in real time until SIGTERM or Ctrl-C (the pass in progress
    finishes its slice, then exit 0); a failing pass is logged and retried with a backoff,
    never fatal. Each pass reports the messages delivered and every other one under its
    reason: deferred (quiet hours, frequency cap), skipped (no consent, no address),
    suppressed, to retry later, bounced, failed. Exit code 2 on a configuration error (bad
    setting or flow file, no workspace), 1 when a --now pass gave up after --retry-for."""
    configure_logging()
    chosen = check_sink(sink)
    if now is not None:
        with workspace_from(workspace) as probe:
            instant = parse_instant(now, probe.settings.timezone)
        with workspace_from(workspace, clock=FixedClock(instant), sink=chosen) as ws:
            preflight(ws)
            try:
                report = run_retrying(
                    lambda: run_once(ws, instant),
                    retry_for=retry_for,
                    what=f"the pass up to {instant:%Y-%m-%d %H:%M} UTC",
                )
            except PassFailed as exc:
                err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
                raise typer.Exit(1) from None
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
    with workspace_from(workspace, sink=chosen) as ws:
        preflight(ws)
        console.print(f"Running flows in {ws.path} every {interval:g}s; Ctrl-C to stop.")
        passes = run_forever(ws, stop, interval=interval, on_pass=_print)
    console.print(f"Stopped cleanly after {passes} pass(es).")


def _print(report: PassReport) -> None:
    for error in report.tick.errors:
        err_console.print(f"[bold red]flow file not loaded:[/] {error}", highlight=False)
    enrolled = sum(report.tick.enrolled.values())
    console.print(
        f"{report.now:%Y-%m-%d %H:%M} UTC: {enrolled} enrolled, "
        f"{report.tick.contact_steps} contact-steps, {describe(report.delivery)}.",
        highlight=False,
    )
