"""Delivery: message templates, channels (SMTP email; SMS, push and webhooks over HTTP),
send-time policies, tracking, unsubscribe, feedback, coupons and the outbox worker.

:class:`Delivery` is the facade the CLI and the HTTP service use (``workspace.delivery``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, select

from winback.delivery.channels import Channel, OutboundMessage, SendResult
from winback.delivery.messages.limits import RenderLimits
from winback.delivery.messages.templates import (
    VARIABLES,
    Problem,
    Rendered,
    TemplateRepository,
    validate_template,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from sqlalchemy import Engine

    from winback.clock import Clock
    from winback.config import Settings
    from winback.delivery.event_intake import EventIntake
    from winback.delivery.inbound import EventIn, IngestResult
    from winback.delivery.links.tracking import Tracker
    from winback.delivery.reports import ProviderReports
    from winback.delivery.reports.parse import FeedbackIn
    from winback.delivery.reports.record import ReportResult
    from winback.delivery.worker import BatchReport, DeliveryWorker
    from winback.store.repository import Store

__all__ = [
    "VARIABLES",
    "Channel",
    "Delivery",
    "OutboundMessage",
    "Problem",
    "Rendered",
    "SendResult",
    "TemplateRepository",
    "validate_template",
]


class Delivery:
    """Everything delivery offers on one workspace."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        clock: Clock,
        store: Store,
        folder: Path,
    ) -> None:
        """``folder``: the workspace's, with ``templates/``, the file channel's ``outbox/``
        and the unsubscribe inbox."""
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.store = store
        self.folder = folder
        self.templates = TemplateRepository(
            folder / "templates", limits=RenderLimits.from_settings(settings)
        )
        self._kept: DeliveryWorker | None = None
        self._keeping = False

    def apply_pending_unsubscribes(self) -> int:
        """Write the one-click unsubscribes kept in the inbox while the store was busy
        (before each delivery batch, and after an unsubscribe once the store is free)."""
        from winback.delivery.unsubscribes import apply_pending_unsubscribes

        return apply_pending_unsubscribes(self.engine, self.store, self.folder)

    # -- templates ---------------------------------------------------------------------------
    def validate(self, names: list[str] | None = None) -> list[Problem]:
        problems: list[Problem] = []
        for name in names or self.templates.names():
            problems.extend(self.templates.validate(name))
        return problems

    def preview(self, name: str, customer_id: str) -> Rendered:
        """Render template ``name`` for one contact, as it would go out (links unsigned)."""
        return self.preview_for(name, self.store.contact_id(customer_id))

    def preview_sample(self, name: str) -> Rendered:
        """Render template ``name`` for the sample contact ``templates validate`` uses (every
        field filled in), under the same sandbox and limits."""
        from winback.delivery.messages.checks import sample_context

        return self.templates.render(name, sample_context(self.clock.now()))

    def preview_for(self, name: str, contact_id: int) -> Rendered:
        """Render template ``name`` for the contact with internal id ``contact_id``, through
        the sandbox and render limits of delivery (its links as they would go out, before
        the click tracking rewrites them)."""
        from winback.delivery.links.tokens import TokenSigner
        from winback.delivery.messages.context import load_contacts, render_context

        with self.engine.connect() as conn:
            data = load_contacts(conn, [contact_id])[contact_id]
        signer = TokenSigner(self.settings.secret_key)
        base = self.settings.base_url.rstrip("/")
        context = render_context(
            data,
            settings=self.settings,
            message={"id": 0, "template": name, "flow": "preview", "step": "preview"},
            now=self.clock.now(),
            coupon="PREVIEW-COUPON" if self.templates.get(name).uses("coupon") else None,
            unsubscribe_url=f"{base}/u/{signer.sign('u', 0, contact_id)}",
            feedback_url=f"{base}/f/{signer.sign('f', 0, contact_id)}",
        )
        return self.templates.render(name, context)

    # -- the worker --------------------------------------------------------------------------
    def worker(self, *, channels: Mapping[str, Channel] | None = None) -> DeliveryWorker:
        """A delivery worker through ``channels`` (default: built from the settings)."""
        from winback.delivery.channels.setup import build_channels
        from winback.delivery.worker import DeliveryWorker

        if channels is None:
            channels = build_channels(self.settings, outbox=self.folder / "outbox")
        return DeliveryWorker(
            self.engine,
            self.settings,
            self.clock,
            channels,
            TemplateRepository(
                self.folder / "templates", limits=RenderLimits.from_settings(self.settings)
            ),
            before_claim=self.apply_pending_unsubscribes,
        )

    @contextmanager
    def keep_connections(self) -> Iterator[None]:
        """Within the block, :meth:`deliver_due` reuses one worker, so its SMTP connections
        stay open across passes (idle ones are NOOP-checked and reopened when dropped, see
        ``smtp_idle_seconds``); they are closed when the block ends. Used by the long-running
        loops of ``winback run`` and ``winback serve``."""
        if self._keeping:  # nested: the outer block owns the worker
            yield
            return
        self._keeping = True  # the worker is made by the first deliver_due
        try:
            yield
        finally:
            kept, self._kept, self._keeping = self._kept, None, False
            if kept is not None:
                kept.close()

    def deliver_due(
        self,
        *,
        channels: Mapping[str, Channel] | None = None,
        stop: threading.Event | None = None,
    ) -> BatchReport:
        """Deliver every message due now (with ``delivery_processes`` worker processes when
        a backlog is due), then close the channels unless inside :meth:`keep_connections`;
        also marks coupons redeemed by orders that arrived since (imports included). When
        ``stop`` is set, this process's worker ends its batch early: the messages not yet on
        the wire go back to ``pending``."""
        from winback.delivery.worker.parallel import drain_parallel

        kept: DeliveryWorker | None = None
        if channels is None and self._keeping:
            if self._kept is None:
                self._kept = self.worker()
            kept = self._kept
        worker = kept if kept is not None else self.worker(channels=channels)
        try:
            if channels is None and self.settings.delivery_processes > 1:
                return drain_parallel(
                    worker, self.folder, self.settings.delivery_processes, stop=stop
                )
            return worker.drain(stop=stop)
        finally:
            if channels is None and kept is None:
                worker.close()
            self.redeem_coupons()

    def outbox_counts(self) -> dict[str, int]:
        from winback.store.schema import outbox

        with self.engine.connect() as conn:
            rows = conn.execute(
                select(outbox.c.status, func.count()).group_by(outbox.c.status)
            ).all()
        return {str(s): int(n) for s, n in rows}

    # -- inbound -----------------------------------------------------------------------------
    @property
    def tracker(self) -> Tracker:
        from winback.delivery.links.tracking import Tracker

        return Tracker(
            self.engine,
            self.settings,
            self.clock,
            self.store,
            folder=self.folder,
            apply_pending=self.apply_pending_unsubscribes,
        )

    def ingest(
        self,
        items: list[EventIn],
        *,
        conn: Connection | None = None,
        now: datetime | None = None,
    ) -> IngestResult:
        """Record events from the API in one transaction (the caller's ``conn`` when given);
        ``now`` (default: the clock) stands for events without ``occurred_at``."""
        from winback.delivery.inbound import ingest
        from winback.store.busy import retry_transient

        currency = self.settings.currency
        if conn is not None:
            return ingest(conn, items, now=now or self.clock.now(), currency=currency)

        def write() -> IngestResult:
            with self.engine.begin() as conn:
                return ingest(conn, items, now=now or self.clock.now(), currency=currency)

        return retry_transient(write)

    @cached_property
    def event_intake(self) -> EventIntake:
        """Where the HTTP event API hands its events: validated, appended to the event
        journal, then applied to the store (see :mod:`winback.delivery.event_intake`)."""
        from winback.delivery.event_intake import EventIntake

        return EventIntake(self)

    def close(self) -> None:
        """Apply what the event journal holds and stop the intake's threads (they start
        again when next needed)."""
        if "event_intake" in self.__dict__:
            self.event_intake.close()

    # -- provider reports (feedback loops, DSNs) --------------------------------------------
    def _reports(self) -> ProviderReports:
        from winback.delivery.reports import ProviderReports, policy_of

        return ProviderReports(self.engine, self.clock, policy_of(self.settings))

    def import_reports(
        self, paths: Sequence[Path], *, progress: Callable[[int, int], None] | None = None
    ) -> ReportResult:
        """Read ARF complaint and DSN bounce reports from .eml files, mbox files and folders
        (streamed), and apply them (see :mod:`winback.delivery.reports`). Every file is
        checked before anything is written."""
        return self._reports().import_files(paths, progress=progress)

    def record_report(self, raw: bytes, *, source: str = "http") -> ReportResult:
        """Apply one raw report email (ARF or DSN); unparseable ones go to the reject list."""
        return self._reports().apply_raw([(source, raw)])

    def record_feedback(self, items: Sequence[FeedbackIn]) -> ReportResult:
        """Apply reports in the JSON form."""
        return self._reports().apply_json(items)

    def report_rejects(self) -> list[dict[str, Any]]:
        return self._reports().rejects()

    # -- coupons and suppressions ------------------------------------------------------------
    def import_coupons(self, path: Path, *, pool: str) -> tuple[int, int]:
        from winback.delivery.coupons import import_pool

        with self.engine.begin() as conn:
            return import_pool(conn, path, pool=pool, at=self.clock.now())

    def redeem_coupons(self) -> int:
        from winback.delivery.coupons import redeem

        with self.engine.begin() as conn:
            return redeem(conn)

    def coupon_counts(self) -> dict[str, int]:
        from winback.store.schema import coupons

        with self.engine.connect() as conn:
            row = conn.execute(
                select(
                    func.count(),
                    func.count(coupons.c.assigned_at),
                    func.count(coupons.c.redeemed_at),
                )
            ).one()
        return {"codes": int(row[0]), "assigned": int(row[1]), "redeemed": int(row[2])}

    def suppress(self, channel: str, address: str, *, reason: str = "manual") -> bool:
        from winback.delivery.records import suppress

        with self.engine.begin() as conn:
            return suppress(
                conn,
                channel=channel,
                address=address,
                contact_id=None,
                reason=reason,
                at=self.clock.now(),
            )

    def suppressions(self) -> list[dict[str, Any]]:
        from winback.store.schema import suppressions

        with self.engine.connect() as conn:
            return [
                dict(r)
                for r in conn.execute(
                    select(suppressions).order_by(suppressions.c.created_at)
                ).mappings()
            ]
