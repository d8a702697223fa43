"""One contact seen whole: profile, consent, tags, segments, flows in progress, messages;
and its erasure on request (:mod:`winback.erasure`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, select

from winback.clock import Clock
from winback.contact_edit import ConsentChange, change_consent
from winback.erasure import erase_contact
from winback.segments.service import Segments
from winback.store.schema import CHANNELS, contacts, outbox
from winback.tags import resolve_contacts, tags_of_contact

#: A contact's flows in progress, by its internal id.
FlowsOfContact = Callable[[int], list[dict[str, Any]]]

MESSAGE_COLUMNS = (
    "id",
    "channel",
    "template",
    "variant",
    "flow",
    "step",
    "status",
    "not_before",
    "sent_at",
    "message_id",
    "last_error",
)


class Contacts:
    """Contacts named by their shop ``customer_id``, email address or ``#ID`` (the internal
    id)."""

    def __init__(
        self, engine: Engine, segments: Segments, clock: Clock, flows_of_contact: FlowsOfContact
    ) -> None:
        self.engine = engine
        self.segments = segments
        self.clock = clock
        self.flows_of_contact = flows_of_contact

    def resolve(self, ref: str) -> int:
        """The internal id of the contact ``ref`` names; raises
        :class:`~winback.errors.NotFound`."""
        return resolve_contacts(self.engine, [ref])[0]

    def profile(self, ref: str, *, messages: int = 50) -> dict[str, Any]:
        """Everything about the contact named by ``ref``."""
        contact_id = self.resolve(ref)
        with self.engine.connect() as conn:
            row = dict(
                conn.execute(select(contacts).where(contacts.c.id == contact_id)).mappings().one()
            )
            sent = [
                dict(r)
                for r in conn.execute(
                    select(*(outbox.c[c] for c in MESSAGE_COLUMNS))
                    .where(outbox.c.contact_id == contact_id)
                    .order_by(outbox.c.created_at.desc(), outbox.c.id.desc())
                    .limit(messages)
                ).mappings()
            ]
        custom = row.pop("attributes") or {}
        consent = {ch: row.pop(f"{ch}_consent") for ch in CHANNELS}
        tags = tags_of_contact(self.engine, contact_id)
        return {
            "contact_id": contact_id,
            "customer_id": row["customer_id"],
            "attributes": {k: v for k, v in row.items() if k != "id"},
            "custom_attributes": custom,
            "consent": consent,
            "tags": tags["tags"],
            "tag_history": tags["history"],
            "segments": self.segments.of_contact(contact_id),
            "messages": sent,
            "flows": self.flows_of_contact(contact_id),
        }

    def change_consent(
        self, ref: str, channel: str, granted: bool, *, source: str
    ) -> ConsentChange:
        """Set the consent on ``channel`` of the contact named by ``ref`` at the clock's now,
        with its consent-log row (see :func:`winback.contact_edit.change_consent`)."""
        return change_consent(
            self.engine, self.resolve(ref), channel, granted, at=self.clock.now(), source=source
        )

    def erase(self, ref: str, *, reason: str | None = None, source: str = "cli") -> dict[str, Any]:
        """Erase the personal data of the contact named by ``ref`` (see
        :mod:`winback.erasure`); returns what was done."""
        return erase_contact(
            self.engine, self.resolve(ref), at=self.clock.now(), reason=reason, source=source
        )
