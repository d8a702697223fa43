"""The delivery worker: claims due outbox rows, applies the send-time policies, renders,
sends through the channels and records each outcome.

Exactly-once to the wire (see docs/delivery.md for the full argument):

1. *Claim* in a short transaction: ``pending`` rows that are due become ``sending`` with
   ``claimed_at`` (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several workers never claim
   the same row; SQLite serialises writers).
2. *Send* outside any transaction, one message per connection at a time. Each message the
   provider accepts is *recorded as accepted* (``sent_at``, a tiny transaction) before that
   connection can have another message accepted (:mod:`winback.delivery.worker.record`).
3. *Record* the batch's outcomes (``sent`` with ``message_id`` and the ``email_sent`` event,
   a retry time, a bounce...) in short transactions at its end.

A worker killed between 1 and 3 leaves rows in ``sending``. They are never picked up as if
nothing happened: after ``delivery_lease_seconds`` they are *reconciled*: those recorded as
accepted become ``sent``; the others (not sent, except at most one per connection that was
on the wire) as the ``delivery_stale_policy`` says: ``resend`` (default; at-least-once, the
copy carries the same deterministic Message-ID and the same Idempotency-Key, so a relay or
mailbox that dedups drops it) or ``fail`` (at-most-once: marked failed with "outcome
unknown"). A worker that fails without dying (an error after the claim) or is stopped puts
the rows it did not send back to ``pending`` at once.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from winback.clock import Clock
from winback.config import Settings
from winback.delivery.channels import Channel
from winback.delivery.links.tokens import TokenSigner
from winback.delivery.messages.mime import domain_of
from winback.delivery.messages.templates import TemplateRepository
from winback.delivery.worker import claim as claiming
from winback.delivery.worker import heap
from winback.delivery.worker.decide import Decider, Decision, channel_key
from winback.delivery.worker.record import OutcomeRecorder
from winback.delivery.worker.render import Renderer
from winback.delivery.worker.send import Batch, BatchSender
from winback.ports import StopSignal

__all__ = ["BatchReport", "Decision", "DeliveryWorker"]


@dataclass
class BatchReport:
    claimed: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    #: Why messages were not sent, by the worker's reason ("quiet hours in Europe/Rome",
    #: "no email consent"...); results of sending are counted in ``counts`` only.
    reasons: Counter[str] = field(default_factory=Counter)
    processes: int = 1  # worker processes that delivered (see delivery_processes)

    def __iadd__(self, other: BatchReport) -> BatchReport:
        self.claimed += other.claimed
        self.counts.update(other.counts)
        self.reasons.update(other.reasons)
        return self

    def add_batch(self, batch: Batch, unsent: Sequence[int]) -> None:
        for d in batch.held:
            self.counts[d.status] += 1
            self.reasons[d.reason] += 1
        for _, result in batch.sent.values():
            self.counts[result.outcome] += 1
        if unsent:
            self.counts["released"] += len(unsent)


class DeliveryWorker:
    """Delivers due outbox rows through ``channels``: claim, decide, render, send, record.
    ``before_claim`` runs at the start of every batch (the unsubscribes kept while the store
    was busy reach it before anything is sent)."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        clock: Clock,
        channels: Mapping[str, Channel],
        templates: TemplateRepository,
        *,
        before_claim: Callable[[], object] | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.channels: dict[str, Channel] = dict(channels)
        self.templates = templates
        self.before_claim = before_claim
        self.domain = domain_of(settings.mail_from)
        self.decider = Decider(engine, settings, self.channels, templates)
        self.renderer = Renderer(settings, templates, TokenSigner(settings.secret_key))
        self.recorder = OutcomeRecorder(engine, settings, clock)

    # -- the loop ------------------------------------------------------------------------------
    def run(self, stop: threading.Event, *, idle_seconds: float = 1.0) -> None:
        """Deliver until ``stop`` is set, sleeping ``idle_seconds`` when nothing is due."""
        while not stop.is_set():
            report = self.run_once(stop)
            if report.claimed == 0:
                stop.wait(idle_seconds)

    def drain(
        self, *, max_batches: int | None = None, stop: StopSignal | None = None
    ) -> BatchReport:
        """Deliver everything due now (in batches) or until ``stop`` is set; returns the
        totals."""
        total = BatchReport()
        n = 0
        while max_batches is None or n < max_batches:
            if stop is not None and stop.is_set():
                break
            report = self.run_once(stop)
            total += report
            n += 1
            if report.claimed == 0:
                break
        return total

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()

    def run_once(self, stop: StopSignal | None = None) -> BatchReport:
        """Claim one batch and deliver it. Each message the provider accepts is recorded as
        such before its connection sends another; the batch's outcomes are written at its
        end. When anything fails after the claim, the outcomes known are written, the rows
        not sent go back to ``pending`` at once (the error in ``last_error``) and the error
        is raised; when ``stop`` is set, the messages not yet on the wire go back to
        ``pending`` and the batch ends early (counted as ``released``)."""
        if self.before_claim is not None:
            self.before_claim()
        now = self.clock.now()
        self.reconcile(now)
        rows = self.claim(now)
        report = BatchReport(claimed=len(rows))
        if not rows:
            return report
        if len(rows) >= heap.BACKLOG_ROWS:
            heap.settle()
        batch = Batch(rows)
        try:
            self._deliver(batch, now, stop)
            unsent = batch.unsent()
            self.recorder.finish(
                batch.settled(),
                self.clock.now(),
                release=unsent,
                reason="released unsent: the worker was stopped",
            )
        except BaseException as exc:
            self._release(batch, exc)
            raise
        finally:
            self.recorder.close()
        report.add_batch(batch, unsent)
        return report

    def _deliver(self, batch: Batch, now: datetime, stop: StopSignal | None) -> None:
        decisions = self.decide(batch.rows, now)
        # Render the whole batch first, then hand it to the channels. Rendering while the
        # SMTP threads send makes every SMTP reply wait for the GIL held by this thread
        # and costs both sides a GIL hand-off per reply; in two phases the sending
        # threads run on their own, as plain smtplib does (measured: about 0.25 ms less
        # CPU per message in the sender and less in the SMTP server). Processes
        # (delivery_processes) overlap one another's rendering and sending.
        ready = [
            d
            for d in decisions
            if d.status == "sending" and d.outgoing is not None and self.render(d, now)
        ]
        batch.held = [d for d in decisions if d.status != "sending"]
        groups: dict[str, list[Decision]] = {}
        for d in ready:
            groups.setdefault(channel_key(d.row, self.settings), []).append(d)
        BatchSender(self.channels, self.recorder, batch, stop).send(groups)

    def _release(self, batch: Batch, error: BaseException) -> None:
        """After a failure: write the outcomes known and put the rows not sent back to
        ``pending`` at once. If even that fails (the store is unreachable), the rows stay
        ``sending`` until the lease reconciles them (the accepted ones as sent), which the
        error notes."""
        reason = f"released unsent after an error: {type(error).__name__}: {error}"
        try:
            self.recorder.finish(
                batch.settled(), self.clock.now(), release=batch.unsent(), reason=reason[:2000]
            )
        except Exception as failure:
            error.add_note(
                f"the claimed messages could not be released ({type(failure).__name__}: "
                f"{failure}); they stay 'sending' until delivery_lease_seconds "
                f"({self.settings.delivery_lease_seconds} s) has passed"
            )

    # -- the steps, one by one -----------------------------------------------------------------
    def claimable(self) -> list[str]:
        """The outbox channels this worker claims."""
        return claiming.claimable(self.channels)

    def claim(self, now: datetime) -> list[dict[str, Any]]:
        """Take up to ``delivery_batch_size`` due rows (see :func:`claim.claim`)."""
        return claiming.claim(self.engine, self.claimable(), self.settings.delivery_batch_size, now)

    def reconcile(self, now: datetime) -> int:
        """Finish or hand back the rows a dead worker left past the lease."""
        return claiming.reconcile(self.engine, self.settings, self.recorder, self.domain, now)

    def decide(self, rows: Sequence[dict[str, Any]], now: datetime) -> list[Decision]:
        return self.decider.decide(rows, now)

    def render(self, d: Decision, now: datetime) -> bool:
        return self.renderer.render(d, now)

    def prepare(self, rows: Sequence[dict[str, Any]], now: datetime) -> list[Decision]:
        """Decide and render (without sending): what would go out."""
        decisions = self.decide(rows, now)
        for d in decisions:
            if d.outgoing is not None:
                self.render(d, now)
        return decisions
