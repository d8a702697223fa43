"""Applying provider reports (:mod:`winback.delivery.reports.parse`) to the store.

Each report is matched to our message: the original's Message-ID (``outbox.message_id``),
else one of our signed unsubscribe tokens found in the original's headers or body, else the
recipient address (``contacts.email``). Then:

* complaint: an ``email_complained`` event, the address suppressed (``complained``) and the
  contact's email consent revoked (consent log source ``complaint``);
* hard bounce (status 5.x.x on a failed delivery): an ``email_bounced`` event and the address
  suppressed (``bounced``);
* soft bounce (status 4.x.x on a failed delivery): an ``email_bounced`` event; the address is
  suppressed once ``soft_bounce_limit`` soft bounces fall within ``soft_bounce_window_days``;
* anything else (delivered / relayed / delayed notices, ``not-spam`` reports) is ignored.

A report's event is stored under the report's key, so re-importing it changes nothing.
Reports that cannot be parsed or matched go to the ``report_rejects`` table with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import Connection, and_, func, select

from winback.delivery.records import insert_ignore, record_events, suppress
from winback.delivery.reports.parse import (
    Report,
    ReportRejected,
    digest,
    normalised,
    parse_report,
)
from winback.store.repository import Store
from winback.store.schema import contacts, events, outbox, report_rejects


class ReportResult(BaseModel):
    """What an import or a request did."""

    reports: int = Field(0, description="Reports read (a DSN counts once per recipient).")
    complaints: int = Field(0, description="New complaints recorded.")
    hard_bounces: int = Field(0, description="New hard bounces recorded.")
    soft_bounces: int = Field(0, description="New soft bounces recorded.")
    ignored: int = Field(0, description="Notices that are not complaints or failures.")
    duplicates: int = Field(0, description="Reports recorded before (nothing changed).")
    unmatched: int = Field(
        0, description="Reports for no known contact: address suppressed, no event."
    )
    suppressed: int = Field(0, description="Addresses newly put on the suppression list.")
    consent_revoked: int = Field(0, description="Contacts whose email consent was revoked.")
    rejected: int = Field(0, description="Reports put on the reject list.")
    errors: list[str] = Field(default_factory=list, description="Why reports were rejected.")

    def add(self, other: ReportResult) -> None:
        for name, value in other:
            if name == "errors":
                self.errors.extend(other.errors)
            else:
                setattr(self, name, getattr(self, name) + value)


@dataclass(slots=True)
class Policy:
    soft_limit: int
    soft_window: timedelta
    verify_token: Callable[[str], tuple[int, int] | None]


#: A contact a report is about: (contact id, email, erased).
Target = tuple[int, str | None, bool]


def record(
    conn: Connection, items: Iterable[Report], *, now: datetime, policy: Policy
) -> ReportResult:
    """Apply reports in the caller's transaction."""
    store = Store(conn.engine)
    result = ReportResult()
    for report in items:
        result.reports += 1
        if report.kind == "notice":
            result.ignored += 1
        elif report.problem:
            reject(conn, report, report.problem, now=now, result=result)
        else:
            _apply(conn, store, report, now=now, policy=policy, result=result)
    return result


def _apply(
    conn: Connection,
    store: Store,
    report: Report,
    *,
    now: datetime,
    policy: Policy,
    result: ReportResult,
) -> None:
    targets = _match(conn, report, policy)
    if not targets:
        _unmatched(conn, report, now=now, result=result)
        return
    new_any = False
    for target in targets:
        new_any |= _apply_to(conn, store, report, target, now=now, policy=policy, result=result)
    if not new_any:
        result.duplicates += 1


def _unmatched(conn: Connection, report: Report, *, now: datetime, result: ReportResult) -> None:
    """A report for no known contact: its address suppressed (complaints, hard bounces),
    or rejected when it names none."""
    address = report.recipient
    if address is None:
        reject(
            conn,
            report,
            "no recipient address, and the original message is not one of ours "
            "(no known Message-ID or winback token)",
            now=now,
            result=result,
        )
        return
    result.unmatched += 1
    if report.kind == "complaint" or report.severity == "hard":
        result.suppressed += suppress(
            conn,
            channel="email",
            address=address,
            contact_id=None,
            reason="complained" if report.kind == "complaint" else "bounced",
            at=report.occurred_at or now,
            detail=_detail(report),
        )


def _event(report: Report, contact_id: int, erased: bool, at: datetime) -> dict[str, Any]:
    kind_key = "complaint" if report.kind == "complaint" else report.severity
    properties = {
        "source": report.format,
        "severity": report.severity,
        "status": report.status,
        "detail": (report.detail or "")[:500] or None,
        "recipient": report.recipient,
    }
    return {
        "event_key": f"fbl:{kind_key}:{report.key[:40]}:{contact_id}",
        "contact_id": contact_id,
        "type": "email_complained" if report.kind == "complaint" else "email_bounced",
        "occurred_at": at,
        "properties": {
            k: v
            for k, v in properties.items()
            # nothing that may hold an address for an erased contact
            if v is not None and not (erased and k in ("detail", "recipient"))
        },
        "message_id": report.original_message_id,
    }


def _apply_to(
    conn: Connection,
    store: Store,
    report: Report,
    target: Target,
    *,
    now: datetime,
    policy: Policy,
    result: ReportResult,
) -> bool:
    """Record the report for one contact; False when it was recorded before."""
    contact_id, email, erased = target
    at = report.occurred_at or now
    if not record_events(conn, [_event(report, contact_id, erased, at)]):
        return False
    # An erased contact keeps no address, not even on the suppression list.
    target_address = None if erased else email or report.recipient
    if report.kind == "complaint":
        result.complaints += 1
        if store.set_consent(
            contact_id, "email", False, at=at, source=f"complaint:{report.format}", conn=conn
        ):
            result.consent_revoked += 1
        reason: str | None = "complained"
    elif report.severity == "hard":
        result.hard_bounces += 1
        reason = "bounced"
    else:
        result.soft_bounces += 1
        over = _soft_count(conn, contact_id, at, policy) >= policy.soft_limit
        reason = "bounced" if over else None
    if reason and target_address:
        detail = _detail(report)
        if report.kind == "bounce" and report.severity == "soft":
            detail = (
                f"{policy.soft_limit} soft bounces within "
                f"{policy.soft_window.days} days; last: {detail}"
            )
        result.suppressed += suppress(
            conn,
            channel="email",
            address=target_address,
            contact_id=contact_id,
            reason=reason,
            at=at,
            detail=detail,
        )
    return True


def _detail(report: Report) -> str:
    parts = [f"{report.format} report", report.status or "", report.detail or ""]
    return "; ".join(p for p in parts if p)[:1000]


def _soft_count(conn: Connection, contact_id: int, at: datetime, policy: Policy) -> int:
    # Soft bounces of one contact are counted one transaction at a time (PostgreSQL: the
    # contact's row is locked first, and the count, a new statement, then sees the bounces
    # committed meanwhile), so two at once cannot both stay under the limit.
    conn.execute(select(contacts.c.id).where(contacts.c.id == contact_id).with_for_update()).all()
    return int(
        conn.execute(
            select(func.count()).where(
                and_(
                    events.c.contact_id == contact_id,
                    events.c.type == "email_bounced",
                    events.c.event_key.like("fbl:soft:%"),
                    events.c.occurred_at > at - policy.soft_window,
                    events.c.occurred_at <= at,
                )
            )
        ).scalar_one()
    )


def _match(conn: Connection, report: Report, policy: Policy) -> list[Target]:
    """(contact id, email, erased) of the contacts the report is about."""
    if report.original_message_id:
        found = conn.execute(
            select(contacts.c.id, contacts.c.email, contacts.c.erased_at.is_not(None))
            .join(outbox, outbox.c.contact_id == contacts.c.id)
            .where(outbox.c.message_id == report.original_message_id)
        ).all()
        if found:
            return [(int(i), e, bool(x)) for i, e, x in found]
    for token in report.tokens:
        verified = policy.verify_token(token)
        if verified is None:
            continue
        found = conn.execute(
            select(contacts.c.id, contacts.c.email, contacts.c.erased_at.is_not(None)).where(
                contacts.c.id == verified[1]
            )
        ).all()
        if found:
            return [(int(i), e, bool(x)) for i, e, x in found]
    if report.recipient:
        found = conn.execute(
            select(contacts.c.id, contacts.c.email, contacts.c.erased_at.is_not(None))
            .where(func.lower(contacts.c.email) == report.recipient)
            .order_by(contacts.c.id)
        ).all()
        return [(int(i), e, bool(x)) for i, e, x in found]
    return []


def reject(
    conn: Connection,
    report: Report | None,
    reason: str,
    *,
    now: datetime,
    result: ReportResult,
    raw: bytes | None = None,
    source: str | None = None,
) -> None:
    """Keep a report that cannot be used, with why (once per distinct report)."""
    data = raw if raw is not None else (report.raw if report is not None else None)
    if data is None and report is not None:
        data = repr(asdict(report)).encode()
    data = data or b""
    where = source or (report.source if report is not None else "?")
    insert_ignore(
        conn,
        report_rejects,
        [
            {
                "digest": digest(normalised(data) + b"|" + reason.encode()),
                "source": where,
                "reason": reason,
                "raw": data,
                "received_at": now,
            }
        ],
        "digest",
    )
    result.rejected += 1
    result.errors.append(f"{where}: {reason}")


def process_raw(
    conn: Connection, raw: bytes, *, source: str, now: datetime, policy: Policy
) -> ReportResult:
    """Parse and apply one report email (rejects kept) in the caller's transaction."""
    try:
        parsed = parse_report(raw, source=source)
    except ReportRejected as exc:
        result = ReportResult(reports=1)
        reject(conn, None, str(exc), now=now, result=result, raw=raw, source=source)
        return result
    for r in parsed:
        r.raw = raw
    return record(conn, parsed, now=now, policy=policy)


def rejects(conn: Connection) -> list[dict[str, Any]]:
    return [
        dict(r)
        for r in conn.execute(
            select(
                report_rejects.c.id,
                report_rejects.c.source,
                report_rejects.c.reason,
                report_rejects.c.received_at,
                func.length(report_rejects.c.raw).label("size"),
            ).order_by(report_rejects.c.id)
        ).mappings()
    ]
