"""Running the engine: one pass up to an instant (``winback run --now``), or a loop in real
time that stops cleanly when asked (``winback run``, SIGTERM/SIGINT)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from winback.flows.engine import TickReport
from winback.flows.outbox import DeliveryReport, deliver_due
from winback.flows.sinks import FileSink
from winback.ports import Channel

if TYPE_CHECKING:
    from winback.workspace import Workspace


@dataclass
class PassReport:
    now: datetime
    tick: TickReport
    delivery: DeliveryReport


def default_channel(ws: Workspace) -> Channel:
    """The file sink (dry-run channel) in ``<workspace>/outbox/``."""
    return FileSink(ws.path / "outbox")


def channels_configured(ws: Workspace) -> bool:
    """Whether real delivery channels (SMTP, SMS/push/webhook providers) are set up."""
    settings = ws.settings
    return bool(
        getattr(settings, "smtp_url", None)
        or getattr(settings, "sms_provider", None)
        or getattr(settings, "push_provider", None)
    )


def run_once(
    ws: Workspace, now: datetime, channel: Channel | None = None, *, sink: str = "auto"
) -> PassReport:
    """Everything due up to ``now``: segments, triggers, steps, then delivery.

    ``sink``: ``file`` writes messages to the dry-run file sink (or ``channel`` when given);
    ``channels`` hands the outbox to the delivery worker (SMTP/HTTP channels, consent,
    suppression, caps, quiet hours); ``auto`` uses the worker when a channel is configured
    and the file sink otherwise."""
    tick = ws.flows.tick(now)
    use_worker = channel is None and (
        sink == "channels" or (sink == "auto" and channels_configured(ws))
    )
    if use_worker:
        batch = ws.delivery.deliver_due()
        delivery = DeliveryReport(
            sent=int(batch.counts.get("sent", 0)),
            skipped=int(sum(n for k, n in batch.counts.items() if k != "sent")),
        )
    else:
        delivery = deliver_due(ws.engine, channel or default_channel(ws), now)
    return PassReport(now=now, tick=tick, delivery=delivery)


def run_forever(
    ws: Workspace,
    stop: threading.Event,
    *,
    interval: float = 30.0,
    channel: Channel | None = None,
    on_pass: Callable[[PassReport], None] | None = None,
    sink: str = "auto",
) -> int:
    """Loop in real time (the workspace clock) until ``stop`` is set; returns the passes run.
    A pass in progress always finishes its transaction; the loop stops between passes."""
    passes = 0
    with ws.delivery.keep_connections():  # SMTP connections survive between passes
        while not stop.is_set():
            report = run_once(
                ws, ws.clock.now(), channel if sink != "channels" else None, sink=sink
            )
            passes += 1
            if on_pass is not None:
                on_pass(report)
            stop.wait(interval)
    return passes
