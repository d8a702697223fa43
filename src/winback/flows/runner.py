"""Running the engine: one pass up to an instant (``winback run --now``), or a supervised
loop in real time (``winback run``, ``winback serve``) that survives failing passes and
stops cleanly when asked (SIGTERM/SIGINT).

A pass ticks the flows (segments, triggers, steps) and hands the outbox to the delivery
worker, whose channels are the configured providers or the dry-run file channel
(``delivery_sink``); either way consent, suppression, frequency caps and quiet hours apply.

:class:`Passes` runs them on what it is given (the flows, the delivery service, the clock);
the functions :func:`run_once` and :func:`run_forever` take them from a workspace.

Supervision: :meth:`Passes.run_forever` catches every exception of a pass, logs it with its
traceback (logger ``winback.engine``), waits (exponential backoff from ``first_delay``,
capped at the interval or :data:`MAX_BACKOFF`, with jitter) and tries again; it never ends
on a failure. :func:`run_retrying` (``--now``, ``winback deliver``) retries a *transient*
failure (store busy or unreachable, network) for a bounded time, then gives up with
:class:`PassFailed`.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from winback.clock import Clock
from winback.errors import WinbackError
from winback.flows.engine import TickReport
from winback.flows.status import EngineStatus
from winback.ports import Delivering

if TYPE_CHECKING:
    from winback.delivery.worker import BatchReport
    from winback.flows.service import Flows
    from winback.workspace import Workspace

log = logging.getLogger("winback.engine")

#: Longest wait between two attempts after failures, whatever the interval (seconds).
MAX_BACKOFF = 300.0
#: How long ``run_retrying`` retries transient failures by default (seconds).
RETRY_FOR = 300.0

T = TypeVar("T")


class PassFailed(WinbackError):
    """A one-shot pass kept failing on a transient error past the retry time."""


#: Why a message was not sent, from the worker's reasons: (pattern, status, outcome).
_SPECIFIC = (
    (re.compile(r"quiet hours\b"), "deferred", "deferred_quiet_hours"),
    (re.compile(r"frequency cap\b"), "deferred", "deferred_frequency_cap"),
    (re.compile(r"no \S+ consent$"), "skipped", "skipped_no_consent"),
    (re.compile(r"no \S+ address$"), "skipped", "skipped_no_address"),
    (re.compile(r"contact no longer exists$"), "skipped", "skipped_contact_deleted"),
)

#: Outcomes of a pass's delivery and how the text output names them.
OUTCOMES = {
    "sent": "delivered",
    "deferred_quiet_hours": "deferred (quiet hours)",
    "deferred_frequency_cap": "deferred (frequency cap)",
    "deferred": "deferred",
    "skipped_no_consent": "skipped (no consent)",
    "skipped_no_address": "skipped (no address)",
    "skipped_contact_deleted": "skipped (contact deleted)",
    "skipped": "skipped",
    "suppressed": "suppressed",
    "retry": "to retry later",
    "bounced": "bounced",
    "failed": "failed",
}


@dataclass
class DeliveryReport:
    """Messages the pass handled, per outcome (keys of :data:`OUTCOMES`)."""

    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def sent(self) -> int:
        return self.outcomes["sent"]

    @property
    def not_sent(self) -> dict[str, int]:
        return {k: n for k, n in self.outcomes.items() if k != "sent" and n}

    @classmethod
    def of(cls, batch: BatchReport) -> DeliveryReport:
        left = Counter(batch.counts)
        out: Counter[str] = Counter()
        for reason, n in batch.reasons.items():
            for pattern, status, outcome in _SPECIFIC:
                if pattern.match(reason) and left[status] >= n:
                    out[outcome] += n
                    left[status] -= n
                    break
        for status, n in left.items():
            if n:
                out[status] += n
        return cls(out)


@dataclass
class PassReport:
    now: datetime
    tick: TickReport
    delivery: DeliveryReport


def with_sink(ws: Workspace, sink: str | None) -> Workspace:
    """The workspace, or one on the same store whose ``delivery_sink`` is ``sink``
    (``auto``, ``file`` or ``channels``)."""
    if sink is None or sink == ws.settings.delivery_sink:
        return ws
    return ws.replace(settings=ws.settings.model_copy(update={"delivery_sink": sink}))


def preflight(ws: Workspace, *, flow_files: bool = True) -> None:
    """Check the configuration before the first pass, so that a bad setting fails the
    command at once instead of every pass: email does not go to a remote relay with
    loopback links (:func:`winback.setup_checks.check_can_send`), the delivery channels can
    be built and (with
    ``flow_files``) every flow file loads. Raises :class:`~winback.errors.WinbackError`."""
    from winback.delivery.channels.setup import build_channels
    from winback.setup_checks import check_can_send

    check_can_send(ws.settings)
    for channel in build_channels(ws.settings, outbox=ws.path / "outbox").values():
        close = getattr(channel, "close", None)
        if close is not None:
            close()
    if flow_files:
        ws.flows.load_files()


def transient(exc: BaseException) -> bool:
    """Whether trying again later may succeed: the store busy (``StoreBusy`` carries a
    ``retry_after``; a lock, deadlock or serialisation conflict), the store or a provider
    unreachable, a delivery process that died."""
    from winback.delivery.worker.parallel import DeliveryProcessFailed

    if getattr(exc, "retry_after", None) is not None:
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(
        exc, OperationalError | PoolTimeout | DisconnectionError | OSError | DeliveryProcessFailed
    )


def retry_delay(
    failures: int, *, first: float = 1.0, cap: float = MAX_BACKOFF, rng: random.Random | None = None
) -> float:
    """Seconds to wait after ``failures`` failed attempts in a row: ``first`` doubled per
    failure up to ``cap``, then between half and all of it (jitter, so that processes that
    failed together do not retry together)."""
    base = min(cap, first * 2.0 ** min(failures - 1, 30))
    return base * (0.5 + 0.5 * (rng or random).random())


class Passes:
    """Engine passes: tick the flows, then deliver what is due."""

    def __init__(
        self,
        flows: Flows,
        delivery: Delivering,
        clock: Clock,
        *,
        after: Callable[[datetime], object] | None = None,
    ) -> None:
        self.flows = flows
        self.delivery = delivery
        self.clock = clock
        #: Run by the loop after each successful pass (the results snapshots).
        self.after = after

    def run_once(self, now: datetime, *, stop: threading.Event | None = None) -> PassReport:
        """Everything due up to ``now``: segments, triggers, steps, then delivery by the
        worker. With ``stop`` set during the pass, delivery ends after the batch in progress
        (and is skipped when the stop came during the tick)."""
        from winback.delivery.worker import BatchReport

        tick = self.flows.tick(now, stop=stop)
        batch = BatchReport() if stop is not None and stop.is_set() else None
        if batch is None:
            batch = self.delivery.deliver_due(stop=stop)
        return PassReport(now=now, tick=tick, delivery=DeliveryReport.of(batch))

    def run_forever(
        self,
        stop: threading.Event,
        *,
        interval: float = 30.0,
        on_pass: Callable[[PassReport], None] | None = None,
        status: EngineStatus | None = None,
        first_delay: float = 1.0,
    ) -> int:
        """Loop in real time (the clock) until ``stop`` is set; returns the successful
        passes. A failed pass is logged, recorded in ``status`` and retried after a backoff;
        the delivery worker and its connections are then made anew. A pass in progress
        when ``stop`` is set finishes its tick and its delivery batch, then the loop ends."""
        status = status if status is not None else EngineStatus(clock=self.clock, interval=interval)
        cap = max(first_delay, min(interval, MAX_BACKOFF))
        status.started()
        passes = 0
        try:
            while not stop.is_set():
                ran, error = self._passes(stop, interval, on_pass, status)
                passes += ran
                if error is None:
                    break
                _back_off(stop, error, status.failed(error), first_delay, cap)
        finally:
            status.stopped()
        return passes

    def _passes(
        self,
        stop: threading.Event,
        interval: float,
        on_pass: Callable[[PassReport], None] | None,
        status: EngineStatus,
    ) -> tuple[int, Exception | None]:
        """Passes with one delivery worker (SMTP connections kept between passes) until
        ``stop`` or a failure; returns the passes that succeeded and the failure."""
        ran = 0
        try:
            with self.delivery.keep_connections():
                while not stop.is_set():
                    report = self.run_once(self.clock.now(), stop=stop)
                    ran += 1
                    if self.after is not None and not stop.is_set():
                        self.after(self.clock.now())
                    ended = status.succeeded()
                    if ended:
                        log.warning("engine pass succeeded after %d failed pass(es)", ended)
                    if on_pass is not None:
                        on_pass(report)
                    stop.wait(interval)
        except Exception as exc:  # supervision: any failure of a pass is retried, never fatal
            return ran, exc
        return ran, None


def _back_off(
    stop: threading.Event, error: Exception, failures: int, first_delay: float, cap: float
) -> None:
    """Log a failed pass and wait before the next attempt (or until ``stop``)."""
    delay = retry_delay(failures, first=first_delay, cap=cap)
    hint = getattr(error, "retry_after", None)
    if isinstance(hint, int | float) and hint > delay:
        delay = min(float(hint), cap)
    log.error(
        "engine pass failed (%d in a row); retrying in %.1f s: %s: %s",
        failures,
        delay,
        type(error).__name__,
        error,
        exc_info=error,
    )
    stop.wait(delay)


def passes_of(ws: Workspace) -> Passes:
    """The engine passes of a workspace; the loop keeps the flows' results current
    (:mod:`winback.results.snapshot`)."""
    from winback.results import snapshot

    def keep_results(now: datetime) -> None:
        try:
            computed = snapshot.refresh(ws.engine, ws.settings, now)
        except Exception:  # the results are shown older; the passes go on
            log.exception("flow results snapshot failed")
            return
        if computed:
            log.info("flow results kept for %s", ", ".join(computed))

    return Passes(ws.flows, ws.delivery, ws.clock, after=keep_results)


def run_once(
    ws: Workspace,
    now: datetime,
    *,
    stop: threading.Event | None = None,
    sink: str | None = None,
) -> PassReport:
    """:meth:`Passes.run_once` on the workspace, with ``sink`` (see :func:`with_sink`)."""
    return passes_of(with_sink(ws, sink)).run_once(now, stop=stop)


def run_forever(
    ws: Workspace,
    stop: threading.Event,
    *,
    interval: float = 30.0,
    on_pass: Callable[[PassReport], None] | None = None,
    status: EngineStatus | None = None,
    first_delay: float = 1.0,
    sink: str | None = None,
) -> int:
    """:meth:`Passes.run_forever` on the workspace, with ``sink`` (see :func:`with_sink`)."""
    return passes_of(with_sink(ws, sink)).run_forever(
        stop, interval=interval, on_pass=on_pass, status=status, first_delay=first_delay
    )


def log_pass(report: PassReport) -> None:
    """Log a pass of the engine loop (``winback serve``): flow files that did not load as
    warnings, the counts at INFO."""
    for error in report.tick.errors:
        log.warning("flow file not loaded (its stored version keeps running): %s", error)
    log.info(
        "engine pass at %s: %d enrolled, %d contact-steps, %s",
        report.now.isoformat(timespec="seconds"),
        report.tick.total_enrolled,
        report.tick.contact_steps,
        describe(report.delivery),
    )


def describe(delivery: DeliveryReport) -> str:
    """``12 delivered, 3 deferred (quiet hours), 1 skipped (no consent)``."""
    rest = delivery.not_sent
    order = [k for k in OUTCOMES if k in rest] + sorted(k for k in rest if k not in OUTCOMES)
    return ", ".join(
        [f"{delivery.sent} delivered"] + [f"{rest[k]} {OUTCOMES.get(k, k)}" for k in order]
    )


def run_retrying(
    action: Callable[[], T],
    *,
    retry_for: float = RETRY_FOR,
    first_delay: float = 1.0,
    what: str = "the pass",
) -> T:
    """``action()``, tried again after a transient failure (see :func:`transient`) with a
    backoff until ``retry_for`` seconds have passed; then :class:`PassFailed`. Other
    exceptions propagate at once."""
    started = time.monotonic()
    failures = 0
    while True:
        try:
            return action()
        except Exception as exc:
            if not transient(exc):
                raise
            failures += 1
            elapsed = time.monotonic() - started
            delay = retry_delay(failures, first=first_delay, cap=60.0)
            if elapsed + delay > retry_for:
                raise PassFailed(
                    f"{what} failed {failures} time(s) over {elapsed:.0f} s and was given up "
                    f"(--retry-for {retry_for:g}): {type(exc).__name__}: {exc}"
                ) from exc
            log.warning(
                "%s failed (%s: %s); trying again in %.1f s",
                what,
                type(exc).__name__,
                exc,
                delay,
            )
            time.sleep(delay)
