"""Changing one contact outside an import file: create or update it (its fields checked and
written exactly as a contacts import line is, :mod:`winback.ingest.contacts`) and change its
consent on one channel (with its consent-log row, :func:`winback.store.activity.set_consent`).

An erased contact (:mod:`winback.erasure`) is a tombstone: neither is applied to it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Engine, select

from winback.config import Settings
from winback.errors import WinbackError
from winback.ingest.bulk import Dialect
from winback.ingest.contacts import ContactRow
from winback.ingest.contacts import Contacts as ContactsKind
from winback.ingest.importer import Context, Reject
from winback.ingest.readers import Record
from winback.ingest.report import ImportReport
from winback.store import activity
from winback.store.schema import CHANNELS, contacts

#: The fields of a contact that can be set, as in a contacts file (besides ``customer_id``,
#: custom attributes and tags).
FIELDS = tuple(c for c in ContactsKind.canonical if c not in ("customer_id", "tags"))


class ContactRefused(WinbackError):
    """A field of a contact to write is not valid; names the field, the value and why."""

    def __init__(self, field: str, value: str, reason: str) -> None:
        super().__init__(f"{field} {value!r}: {reason}")
        self.field = field
        self.value = value
        self.reason = reason


class ContactErased(WinbackError):
    """The contact's personal data was erased: it is not filled or changed again."""


@dataclass(frozen=True)
class ContactWrite:
    """What writing one contact did."""

    contact_id: int
    customer_id: str
    outcome: Literal["created", "updated", "unchanged"]
    consent_changes: int
    tags_added: int


def upsert_contact(
    engine: Engine,
    settings: Settings,
    customer_id: str,
    values: Mapping[str, Any],
    *,
    attributes: Mapping[str, Any] | None = None,
    tags: Sequence[str] = (),
    now: datetime,
    source: str,
) -> ContactWrite:
    """Create the contact ``customer_id`` or update it, in one transaction: ``values`` are
    fields of :data:`FIELDS` (None or empty: left alone), ``attributes`` custom attributes
    (merged into the stored ones), ``tags`` added. Each is checked as a contacts import
    checks its cell (:class:`ContactRefused` otherwise); consent changes are logged and
    tags kept with history, with ``source``."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ContactRefused(unknown[0], "", f"not a contact field (expected {', '.join(FIELDS)})")
    custom = dict(attributes or {})
    clash = sorted(set(custom) & {*FIELDS, "customer_id", "tags"})
    if clash:
        raise ContactRefused(
            f"attributes.{clash[0]}", "", "a standard field: set it as such, not as an attribute"
        )
    columns = ["customer_id", *values, "tags", *custom]
    cells: list[Any] = [customer_id, *values.values(), ",".join(tags), *custom.values()]
    kind = ContactsKind(settings.phone_region)
    report = ImportReport(kind="contacts", source=source)
    with engine.begin() as conn:
        ctx = Context(
            dialect=Dialect(conn.dialect.name),
            tz=settings.tz,
            currency=settings.currency,
            import_id=0,
            now=now,
            source=source,
            report=report,
        )
        index = {name: i for i, name in enumerate(columns[: len(columns) - len(custom)])}
        kind.bind(columns, index, ctx)
        row = kind.parse(Record(1, cells))
        if isinstance(row, Reject):
            raise ContactRefused(row.field, row.value, row.reason)
        if report.invalid_phones:
            bad = report.invalid_phones[0]
            raise ContactRefused("phone", str(bad.get("value", "")), str(bad.get("reason", "")))
        assert isinstance(row, ContactRow)
        result = kind.write(conn, [row], ctx)
        if result.rejects:
            raise ContactErased(result.rejects[0].reason)
        contact_id = conn.execute(
            select(contacts.c.id).where(contacts.c.customer_id == row.customer_id)
        ).scalar_one()
    changed = report.contacts_updated or report.consent_changes or report.tags_added
    outcome: Literal["created", "updated", "unchanged"] = (
        "created" if report.contacts_created else "updated" if changed else "unchanged"
    )
    return ContactWrite(
        int(contact_id), row.customer_id, outcome, report.consent_changes, report.tags_added
    )


@dataclass(frozen=True)
class ConsentChange:
    """A consent change asked for, and whether it changed anything."""

    contact_id: int
    channel: str
    granted: bool
    source: str
    at: datetime
    changed: bool


def change_consent(
    engine: Engine, contact_id: int, channel: str, granted: bool, *, at: datetime, source: str
) -> ConsentChange:
    """Set the contact's consent on ``channel`` (one of :data:`CHANNELS`); a change is
    written with its consent-log row at ``at``, a consent already so changes nothing."""
    if channel not in CHANNELS:
        raise ContactRefused("channel", channel, f"expected one of {', '.join(CHANNELS)}")
    with engine.begin() as conn:
        erased_at = conn.execute(
            select(contacts.c.erased_at).where(contacts.c.id == contact_id)
        ).scalar()
        if erased_at is not None:
            raise ContactErased(
                f"this contact's personal data was erased on {erased_at.isoformat()}; "
                "its consent stays revoked"
            )
        changed = activity.set_consent(
            conn, [contact_id], channel, granted, source=source, at=at, now=at
        )
    return ConsentChange(contact_id, channel, granted, source, at, bool(changed))
