"""Provider reports: feedback-loop complaints (ARF) and bounces (DSN), read from files or the
HTTP API (:mod:`~winback.delivery.reports.parse`), and what they change: suppressions,
events, consent (:mod:`~winback.delivery.reports.record`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from winback.clock import Clock
from winback.config import Settings
from winback.delivery.links.tokens import TokenSigner
from winback.delivery.reports.parse import (
    BATCH,
    FeedbackIn,
    from_json,
    read_messages,
    report_files,
)
from winback.delivery.reports.record import Policy, ReportResult, process_raw, record, rejects
from winback.store.busy import retry_transient


def policy_of(settings: Settings) -> Policy:
    """The soft-bounce limit and the unsubscribe-token check the settings give."""
    signer = (
        TokenSigner(settings.secret_key, settings.previous_secret_keys)
        if settings.secret_key
        else None
    )

    def verify(token: str) -> tuple[int, int] | None:
        found = signer.verify("u", token) if signer is not None else None
        return (found.message, found.contact) if found is not None else None

    return Policy(
        soft_limit=settings.soft_bounce_limit,
        soft_window=timedelta(days=settings.soft_bounce_window_days),
        verify_token=verify,
    )


class ProviderReports:
    """Reads provider reports and applies them to the store, in short transactions."""

    def __init__(self, engine: Engine, clock: Clock, policy: Policy) -> None:
        self.engine = engine
        self.clock = clock
        self.policy = policy

    def import_files(
        self, paths: Sequence[Path], *, progress: Callable[[int, int], None] | None = None
    ) -> ReportResult:
        """Read ARF complaint and DSN bounce reports from .eml files, mbox files and folders
        (streamed), and apply them. Every file is checked before anything is written."""
        files = report_files(list(paths))
        total = ReportResult()
        for n, (path, kind) in enumerate(files, 1):
            batch: list[tuple[str, bytes]] = []
            for item in read_messages(path, kind):
                batch.append(item)
                if len(batch) >= BATCH:
                    total.add(self.apply_raw(batch))
                    batch = []
            if batch:
                total.add(self.apply_raw(batch))
            if progress is not None:
                progress(n, len(files))
        return total

    def apply_raw(self, batch: Sequence[tuple[str, bytes]]) -> ReportResult:
        """Apply raw report emails, (source, bytes) each; unparseable ones are rejected."""

        def write() -> ReportResult:
            out = ReportResult()
            with self.engine.begin() as conn:
                now = self.clock.now()
                for source, raw in batch:
                    out.add(process_raw(conn, raw, source=source, now=now, policy=self.policy))
            return out

        return retry_transient(write)

    def apply_json(self, items: Sequence[FeedbackIn]) -> ReportResult:
        """Apply reports in the JSON form."""
        reports = [from_json(i) for i in items]

        def write() -> ReportResult:
            with self.engine.begin() as conn:
                return record(conn, reports, now=self.clock.now(), policy=self.policy)

        return retry_transient(write)

    def rejects(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return rejects(conn)
