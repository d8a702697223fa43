"""Contacts files: ``customer_id,email,phone,first_name,last_name,birthday,timezone,locale,
email_consent,sms_consent,push_consent,created_at``; any other column is a custom attribute.

Contacts are upserted by ``customer_id``: an empty cell leaves the stored value alone, a
changed value overwrites it, custom attributes are merged. A row that changes nothing counts
as a duplicate. Consent columns set the current consent and every change is written to the
consent log with the import file as its source. A ``tags`` column (comma-separated names) adds those tags, with history; an import never
removes one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, bindparam, insert, select, update

from winback.ingest import fields
from winback.ingest.fields import FieldError
from winback.ingest.importer import BatchResult, Context, Reject
from winback.ingest.readers import Record, show_value
from winback.phones import InvalidPhone, e164
from winback.store import activity
from winback.store.schema import CHANNELS, contacts

PARSERS: dict[str, Callable[[Any], Any]] = {
    "email": fields.email,
    "phone": lambda v: fields.text(v, max_length=64),
    "first_name": fields.text,
    "last_name": fields.text,
    "birthday": fields.day,
    "timezone": fields.zone,
    "locale": lambda v: fields.text(v, max_length=35),
}
CONSENTS = tuple(f"{c}_consent" for c in CHANNELS)
STANDARD = (*PARSERS, "created_at")
UPDATABLE = (*STANDARD, *CONSENTS, "attributes")
#: What the contact update itself writes (consent goes through winback.store.activity).
FIELDS = (*STANDARD, "attributes")


class ContactRow(NamedTuple):
    line: int
    customer_id: str
    values: dict[str, Any]  # standard fields and consents that the row states
    attributes: dict[str, Any]
    tags: tuple[str, ...] = ()  # added to the contact (never removed by an import)


class Contacts:
    name = "contacts"
    canonical: tuple[str, ...] = (
        "customer_id",
        "email",
        "phone",
        "first_name",
        "last_name",
        "birthday",
        "timezone",
        "locale",
        "email_consent",
        "sms_consent",
        "push_consent",
        "created_at",
        "tags",
    )
    required: tuple[str, ...] = ("customer_id",)

    def __init__(self, phone_region: str | None = None) -> None:
        self.phone_region = phone_region

    def bind(self, columns: list[str], index: dict[str, int], ctx: Context) -> None:
        self.index = index
        self.tz = ctx.tz
        self.report = ctx.report
        bound = set(index.values())
        self.extras = [(i, name) for i, name in enumerate(columns) if i not in bound and name]
        self.width = len(columns)

    def parse(self, record: Record) -> ContactRow | Reject:
        v, line = record.values, record.line
        values: dict[str, Any] = {}
        for name, i in self.index.items():
            try:
                value = self._field(name, v[i])
            except FieldError as e:
                return Reject(line, name, show_value(v[i]), e.reason)
            except InvalidPhone as e:  # the contact is kept without it, and it is reported
                self.report.note_invalid_phone(line, show_value(v[i]), e.reason)
                continue
            if value is not None:
                values[name] = value
        tags: tuple[str, ...] = values.pop("tags", ())
        customer_id = values.pop("customer_id", None)
        if customer_id is None:
            i = self.index["customer_id"]
            return Reject(line, "customer_id", show_value(v[i]), "missing (required)")
        attrs = self._attributes(record)
        if isinstance(attrs, Reject):
            return attrs
        return ContactRow(line, customer_id, values, attrs, tags)

    def _field(self, name: str, raw: Any) -> Any:
        if name == "customer_id":
            return fields.text(raw)
        if name == "created_at":
            return fields.timestamp(raw, self.tz)
        if name == "tags":
            return tag_list(raw)
        if name in CONSENTS:
            return fields.boolean(raw)
        if name == "phone":
            text = PARSERS[name](raw)
            return None if text is None else e164(text, self.phone_region)
        return PARSERS[name](raw)

    def _attributes(self, record: Record) -> dict[str, Any] | Reject:
        """The custom attributes: the columns no standard field takes, and (JSON Lines) the
        keys beyond those of line 1."""
        v = record.values
        attrs: dict[str, Any] = {}
        for i, name in self.extras:
            raw = v[i]
            if fields.is_empty(raw):
                continue
            if isinstance(raw, str):
                try:
                    raw = fields.text(raw, max_length=10_000)
                except FieldError as e:
                    return Reject(record.line, name, show_value(raw), e.reason)
            attrs[name] = raw
        if len(v) > self.width and isinstance(v[-1], dict):
            attrs.update({k: x for k, x in v[-1].items() if not fields.is_empty(x)})
        return attrs

    def write(self, conn: Connection, batch: list[Any], ctx: Context) -> BatchResult:
        return _upsert(conn, batch, ctx)


#: Consent to record through :mod:`winback.store.activity` (with its log):
#: (channel, granted) -> the customer ids.
Consent = dict[tuple[str, bool], list[str]]


def _upsert(conn: Connection, batch: list[ContactRow], ctx: Context) -> BatchResult:
    result = BatchResult()
    merged = _merged(batch, result)
    existing = _existing(conn, list(merged))
    now = ctx.now
    new_rows: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    consent: Consent = {}
    for cid, row in merged.items():
        old = existing.get(cid)
        if old is None:
            new_rows.append(_new_record(row, now))
            for channel in CHANNELS:
                granted = row.values.get(f"{channel}_consent")
                if granted is not None:
                    consent.setdefault((channel, granted), []).append(cid)
        elif old["erased_at"] is not None:  # a tombstone (winback.erasure): never refilled
            result.rejects.append(_erased(row, old["erased_at"]))
        else:
            change = _change(row, old, now, consent)
            if change is None:
                result.duplicates += 1
            else:
                changes.append(change)
    _write(conn, new_rows, changes)
    ctx.report.contacts_created += len(new_rows)
    ctx.report.contacts_updated += len(changes)
    ctx.report.consent_changes += _record_consent(conn, consent, ctx)
    ctx.report.tags_added += _add_tags(conn, merged, existing, ctx)
    result.imported = len(new_rows) + len(changes)
    return result


def _merged(batch: list[ContactRow], result: BatchResult) -> dict[str, ContactRow]:
    """One row per customer: the same customer twice in a batch, later cells win."""
    merged: dict[str, ContactRow] = {}
    for row in batch:
        before = merged.get(row.customer_id)
        if before is not None:
            result.duplicates += 1
            row = ContactRow(
                row.line,
                row.customer_id,
                {**before.values, **row.values},
                {**before.attributes, **row.attributes},
                tuple(dict.fromkeys(before.tags + row.tags)),
            )
        merged[row.customer_id] = row
    return merged


def _existing(conn: Connection, wanted: list[str]) -> dict[str, dict[str, Any]]:
    existing: dict[str, dict[str, Any]] = {}
    query = select(
        contacts.c.id,
        contacts.c.customer_id,
        contacts.c.erased_at,
        *(contacts.c[c] for c in UPDATABLE),
    )
    for i in range(0, len(wanted), 900):
        for found in conn.execute(query.where(contacts.c.customer_id.in_(wanted[i : i + 900]))):
            existing[found.customer_id] = dict(found._mapping)
    return existing


def _new_record(row: ContactRow, now: datetime) -> dict[str, Any]:
    record = {c: row.values.get(c) for c in STANDARD}
    record.update(
        customer_id=row.customer_id,
        attributes=row.attributes,
        created_at=row.values.get("created_at") or now,
        updated_at=now,
        orders_count=0,
        revenue_total=0,
    )
    return record


def _erased(row: ContactRow, erased_at: datetime) -> Reject:
    return Reject(
        row.line,
        "customer_id",
        row.customer_id,
        f"this customer's personal data was erased on {erased_at.isoformat()} "
        "(winback contacts delete / a flow's delete_contact step); not re-imported",
    )


def _change(
    row: ContactRow, old: dict[str, Any], now: datetime, consent: Consent
) -> dict[str, Any] | None:
    """The update of an existing contact (None: nothing changes), noting consent changes."""
    target = {c: old[c] for c in UPDATABLE}
    target.update(row.values)
    target["attributes"] = {**(old["attributes"] or {}), **row.attributes}
    if target == {c: old[c] for c in UPDATABLE}:
        return None
    for channel in CHANNELS:
        column = f"{channel}_consent"
        if column in row.values and row.values[column] != old[column]:
            consent.setdefault((channel, row.values[column]), []).append(row.customer_id)
    return {"_id": old["id"], "_updated_at": now, **{f"_{c}": target[c] for c in FIELDS}}


def _write(conn: Connection, new_rows: list[dict[str, Any]], changes: list[dict[str, Any]]) -> None:
    if new_rows:
        conn.execute(insert(contacts), new_rows)  # executemany
    if changes:
        statement = (
            update(contacts)
            .where(contacts.c.id == bindparam("_id"))
            .values(
                {c: bindparam(f"_{c}") for c in FIELDS} | {"updated_at": bindparam("_updated_at")}
            )
        )
        conn.execute(statement, changes)


def tag_list(value: Any) -> tuple[str, ...] | None:
    """A tags cell: names separated by commas (``vip, newsletter``), each 1 to 128
    characters; empty: none."""
    text = fields.text(value, max_length=10_000)
    if text is None:
        return None
    names = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    for name in names:
        if len(name) > 128:
            raise FieldError(f"tag {name[:20]!r}... is longer than 128 characters")
    return names or None


def _add_tags(
    conn: Connection,
    merged: dict[str, ContactRow],
    existing: dict[str, dict[str, Any]],
    ctx: Context,
) -> int:
    """Tag the rows' contacts (erased ones excepted), with history; returns how many
    contact-tag pairs were new."""
    wanted: dict[str, list[str]] = {}
    for cid, row in merged.items():
        old = existing.get(cid)
        if old is not None and old["erased_at"] is not None:
            continue
        for tag in row.tags:
            wanted.setdefault(tag, []).append(cid)
    if not wanted:
        return 0
    ids = _ids_of(conn, sorted({cid for who in wanted.values() for cid in who}))
    added = 0
    for tag, who in wanted.items():
        added += len(
            activity.add_tags(conn, [ids[c] for c in who], tag, source=ctx.source, at=ctx.now)
        )
    return added


def _record_consent(conn: Connection, consent: Consent, ctx: Context) -> int:
    """Record the consent changes; returns how many contacts' consent changed."""
    if not consent:
        return 0
    ids = _ids_of(conn, sorted({cid for who in consent.values() for cid in who}))
    changed = 0
    for (channel, granted), who in consent.items():
        changed += len(
            activity.set_consent(
                conn,
                [ids[cid] for cid in who],
                channel,
                granted,
                source=ctx.source,
                at=ctx.now,
                now=ctx.now,
            )
        )
    return changed


def _ids_of(conn: Connection, customer_ids: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for i in range(0, len(customer_ids), 900):
        chunk = customer_ids[i : i + 900]
        query = select(contacts.c.customer_id, contacts.c.id).where(
            contacts.c.customer_id.in_(chunk)
        )
        found.update({cid: int(iid) for cid, iid in conn.execute(query)})
    return found
