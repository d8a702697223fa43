"""What the links in a message do when followed: record opens and clicks, unsubscribe, take
feedback. Used by the HTTP service's routes; every method takes the raw token and returns
``None`` (the route answers 404, nothing more) when the token is forged or tampered with, or
names a message that does not exist.

Opens, clicks and feedback raise :class:`~winback.store.busy.StoreBusy` when the store stays
busy past the bounded wait (the service answers 503: a browser or mail client that retries
gets it recorded, and a lost open or click is only a statistic); an unsubscribe is never
refused (see :meth:`Tracker.unsubscribe`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, select

from winback.delivery import unsubscribes
from winback.delivery.links.tokens import Kind, LinkToken, TokenSigner
from winback.delivery.records import record_events
from winback.delivery.unsubscribes import Unsubscribe
from winback.store.busy import StoreBusy, retry_transient
from winback.store.schema import contacts, outbox
from winback.store.tombstones import erased_among

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from sqlalchemy import Engine

    from winback.clock import Clock
    from winback.config import Settings
    from winback.store.repository import Store

#: 1x1 transparent GIF.
PIXEL_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)

#: User agents of image proxies, link scanners and security gateways.
MACHINE_AGENTS = re.compile(
    r"GoogleImageProxy|YahooMailProxy|ggpht\.com|Barracuda|Mimecast|Proofpoint|"
    r"SpamAssassin|MessageLabs|bot\b|crawler|spider|preview|HeadlessChrome|python-|curl/|"
    r"Go-http-client|^Mozilla/5\.0$",
    re.I,
)


@dataclass(frozen=True, slots=True)
class MessageRef:
    """A verified link's message and contact."""

    token: LinkToken
    outbox_id: int
    contact_id: int
    message_id: str | None
    flow: str | None
    step: str | None
    sent_at: datetime | None
    email: str | None
    first_name: str | None


def _short(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:8]


class Tracker:
    """Records what following a link in a message means. ``folder`` is the workspace folder
    whose unsubscribe inbox keeps unsubscribes while the store is busy, and
    ``apply_pending`` writes what that inbox holds."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        clock: Clock,
        store: Store,
        *,
        folder: Path,
        apply_pending: Callable[[], object],
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.store = store
        self.folder = folder
        self.apply_pending = apply_pending
        self.signer = TokenSigner(settings.secret_key, settings.previous_secret_keys)

    def resolve(self, kind: Kind, token: str) -> MessageRef | None:
        link = self.signer.verify(kind, token)
        if link is None:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(
                select(
                    outbox.c.id,
                    outbox.c.contact_id,
                    outbox.c.message_id,
                    outbox.c.flow,
                    outbox.c.step,
                    outbox.c.sent_at,
                    contacts.c.email,
                    contacts.c.first_name,
                )
                .join(contacts, contacts.c.id == outbox.c.contact_id)
                .where(and_(outbox.c.id == link.message, outbox.c.contact_id == link.contact))
            ).first()
        if row is None:
            return None
        return MessageRef(
            link,
            int(row.id),
            int(row.contact_id),
            row.message_id,
            row.flow,
            row.step,
            row.sent_at,
            row.email,
            row.first_name,
        )

    def _unresolved(self, token: str) -> MessageRef | None:
        """What the signed token alone says of its message (the store could not be read)."""
        link = self.signer.verify("u", token)
        if link is None:
            return None
        return MessageRef(link, link.message, link.contact, None, None, None, None, None, None)

    def _event(
        self, ref: MessageRef, type_: str, key: str, at: datetime, **extra: Any
    ) -> dict[str, Any]:
        machine = bool(extra.pop("machine", False))
        return {
            "event_key": key,
            "contact_id": ref.contact_id,
            "type": type_,
            "occurred_at": at,
            "properties": {"flow": ref.flow, "step": ref.step, **extra},
            "message_id": ref.message_id,
            "machine": machine,
        }

    def is_machine(self, ref: MessageRef, user_agent: str, at: datetime) -> bool:
        if MACHINE_AGENTS.search(user_agent or "Mozilla/5.0"):
            return True
        window = timedelta(seconds=self.settings.machine_open_seconds)
        return ref.sent_at is not None and at - ref.sent_at < window

    def open(self, token: str, user_agent: str = "") -> bool:
        ref = self.resolve("o", token)
        if ref is None:
            return False
        at = self.clock.now()
        machine = self.is_machine(ref, user_agent, at)
        event = self._event(
            ref,
            "email_opened",
            f"open:{ref.outbox_id}:{at.isoformat()}:{_short(user_agent)}",
            at,
            user_agent=user_agent[:300],
            machine=machine and not self.settings.count_machine_opens,
        )
        self._record(event)
        return True

    def click(self, token: str, user_agent: str = "") -> str | None:
        """The signed destination URL, after recording the click."""
        ref = self.resolve("c", token)
        if (
            ref is None
            or not ref.token.url
            or not ref.token.url.startswith(("http://", "https://"))
        ):
            return None
        at = self.clock.now()
        machine = bool(MACHINE_AGENTS.search(user_agent or ""))
        event = self._event(
            ref,
            "email_clicked",
            f"click:{ref.outbox_id}:{ref.token.index}:{at.isoformat()}:{_short(user_agent)}",
            at,
            url=ref.token.url,
            link=ref.token.index,
            machine=machine,
        )
        self._record(event)
        return ref.token.url

    def _record(self, *rows: dict[str, Any]) -> None:
        """Record events in one write transaction (run again after a PostgreSQL deadlock);
        :class:`~winback.store.busy.StoreBusy` when the store stays busy."""

        def write() -> None:
            with self.engine.begin() as conn:
                erased = erased_among(conn, [r["contact_id"] for r in rows])
                record_events(conn, [r for r in rows if r["contact_id"] not in erased])

        retry_transient(write)

    def unsubscribe(self, token: str, *, source: str) -> MessageRef | None:
        """Withdraw email consent, suppress the address, record ``email_unsubscribed``.
        Idempotent: a second call changes nothing. Never lost: when the store stays busy
        past the bounded wait, the unsubscribe is kept in the workspace's inbox and applied
        as soon as the store is free (see :mod:`winback.delivery.unsubscribes`)."""
        try:
            ref = self.resolve("u", token)
        except StoreBusy:  # not even a read (PostgreSQL, a table locked by a migration)
            ref = self._unresolved(token)
        if ref is None:
            return None
        u = Unsubscribe(
            outbox_id=ref.outbox_id,
            contact_id=ref.contact_id,
            email=ref.email,
            message_id=ref.message_id,
            flow=ref.flow,
            step=ref.step,
            source=source,
            at=self.clock.now(),
        )

        if not unsubscribes.record(self.engine, self.store, self.folder, u):
            return ref  # kept in the inbox: the store is busy
        try:  # the store is free now: what an earlier busy spell left in the inbox goes in
            self.apply_pending()
        except StoreBusy:
            pass
        return ref

    def feedback_page(self, token: str, user_agent: str = "") -> MessageRef | None:
        """The message behind a feedback link; viewing it counts as a click on it."""
        ref = self.resolve("f", token)
        if ref is None:
            return None
        at = self.clock.now()
        self._record(
            self._event(
                ref,
                "email_clicked",
                f"click:{ref.outbox_id}:feedback:{at.isoformat()}",
                at,
                link="feedback",
                machine=bool(MACHINE_AGENTS.search(user_agent or "")),
            )
        )
        return ref

    def submit_feedback(self, token: str, score: int, comment: str) -> MessageRef | None:
        ref = self.resolve("f", token)
        if ref is None:
            return None
        at = self.clock.now()
        self._record(
            self._event(
                ref,
                "feedback_submitted",
                f"feedback:{ref.outbox_id}:{at.isoformat()}",
                at,
                score=score,
                comment=comment[:5000],
                nps="promoter" if score >= 9 else "passive" if score >= 7 else "detractor",
            )
        )
        return ref
