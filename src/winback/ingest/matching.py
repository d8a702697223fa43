"""One contact per address: rows matched to contacts by email.

:class:`EmailMatched` wraps a file kind (contacts, orders, events) so that its rows find
their contact by the normalised email address (trimmed, lower-cased: how the store keeps
``contacts.email``) as well as by ``customer_id``:

- mode ``"email"`` (a preset that says so, or ``--match email``): every row with an email
  goes to the contact that has that address, whatever its customer id;
- mode ``"id"`` (the default): a row with a customer id goes to that customer; a row without
  one (a guest checkout, an export with no id column) goes to the contact with its email.

A row whose address no contact has yet creates one whose ``customer_id`` is the file's id
or, without one, the address itself, with ``email`` set. A row with neither an id nor an
email is rejected. The wrapped kind then writes the rows exactly as it does without
matching (same deduplication, counts and contact attributes).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite

from winback.errors import InvalidMapping, MissingColumns
from winback.ingest import fields
from winback.ingest.fields import FieldError
from winback.ingest.importer import BatchResult, Context, Kind, Reject
from winback.ingest.readers import Record, show_value
from winback.ingest.readers import record as make_record
from winback.store.schema import contacts

MODES = ("id", "email")
#: Cell texts whose normalised address is remembered (cleared when full: memory stays flat).
ADDRESS_CACHE = 100_000


def normalise_email(value: Any) -> str | None:
    """The form in which addresses are stored and compared (None: empty); raises
    :class:`~winback.ingest.fields.FieldError` for text that is not an address."""
    return fields.email(value)


def wrap(kind: Kind, columns: list[str], mapping: Mapping[str, str], mode: str) -> Kind:
    """``kind`` matched by email when ``mode`` is ``email``, when the file has no
    ``customer_id`` column, or (orders, events) when it has an ``email`` column; else
    ``kind`` itself (the canonical path, untouched)."""
    if mode not in MODES:
        raise InvalidMapping(f"--match {mode}: expected one of: {', '.join(MODES)}")
    folded = {c.strip().lower() for c in columns}

    def has(name: str) -> bool:
        return name in mapping or name in folded

    if mode == "email" or not has("customer_id") or (kind.name != "contacts" and has("email")):
        return EmailMatched(kind, mode)
    return kind


#: A parsed row of the wrapped kind, its address, and whether it finds its contact by that
#: address (else by its customer id). A plain tuple: batches of them are pickled from the
#: parser process to the writer (:func:`winback.ingest.importer._parsed_apart`), where a
#: tuple costs a fifth of an object with attributes.
Matched = tuple[Any, str | None, bool]

#: What the parser process found for a batch keyed by address (:meth:`EmailMatched.resolve_apart`):
#: ``address -> contacts.id`` of the addresses it found, and the others, sorted.
Resolved = tuple[dict[str, int], list[str]]

#: The contacts that have these addresses (a JSON array), newest first: the oldest contact of
#: an address comes last and stays in a dict built from the rows.
SQLITE_OWNERS = (
    "SELECT c.email, c.customer_id, c.id FROM contacts c WHERE c.email IN "
    "(SELECT value FROM json_each(?)) AND c.erased_at IS NULL ORDER BY c.id DESC"
)


class EmailMatched:
    """A file kind whose rows are matched to contacts by email (see the module docstring)."""

    def __init__(self, inner: Kind, mode: str = "id") -> None:
        if mode not in MODES:
            raise ValueError(f"unknown match mode {mode!r} (expected one of: {', '.join(MODES)})")
        self.inner = inner
        self.mode = mode
        self.name = inner.name
        self.canonical = inner.canonical + (() if "email" in inner.canonical else ("email",))
        self.required = tuple(c for c in inner.required if c != "customer_id")
        self.creates_contacts = inner.name != "contacts"  # contacts rows create their own
        if hasattr(inner, "unit"):
            self.unit = self._unit
        self.parse_apart: bool = getattr(inner, "parse_apart", False)
        self.resolve_apart: Callable[[list[Matched]], Resolved] | None = None
        self.store: sqlite3.Connection | None = None  # the parser process's, read-only

    def bind(self, columns: list[str], index: dict[str, int], ctx: Context) -> None:
        self.i_email = index.get("email")
        self.addresses: dict[str, str] = {}  # cell text -> normalised address (exports repeat)
        self.i_customer = index.get("customer_id")
        if self.i_email is None and self.i_customer is None:
            raise MissingColumns(
                f"no customer_id or email column in the header (found: {', '.join(columns)}): "
                f"importing {self.name} needs one of them to find each row's contact "
                "(`--map customer_id=<header>` or `--map email=<header>`)."
            )
        inner_index = dict(index)
        self.width = len(columns)
        if self.i_customer is None:  # the rows' contact key goes in an added last cell
            inner_index["customer_id"] = self.width
        if self.inner.name != "contacts":
            inner_index.pop("email", None)
        self.inner.bind(columns, inner_index, ctx)
        self.store_path = ctx.store_path
        keyed_by_address = self.i_customer is None
        if self.name == "orders" and keyed_by_address and self.parse_apart and self.store_path:
            self.resolve_apart = self._resolve_apart
        else:
            self.resolve_apart = None

    def _resolve_apart(self, batch: list[Matched]) -> Resolved:
        """In the parser process (SQLite, orders keyed by address): the contact ids of the
        batch's addresses that the store has, read through a read-only connection of its
        own (WAL: it neither waits for the writer nor blocks it), by the same rule as
        :func:`_owners`; and the addresses it does not have yet (new ones, or made by a
        batch of this import not yet committed), which the writer looks up. The writer uses
        what is found only while no other connection has written to the store (see
        :class:`~winback.ingest.importer.StoreVersion`)."""
        if self.store is None:
            assert self.store_path is not None
            self.store = sqlite3.connect(
                f"file:{quote(self.store_path)}?mode=ro", uri=True, timeout=10, isolation_level=None
            )
        in_order = dict.fromkeys(m[1] for m in batch)
        in_order.pop(None, None)
        emails: list[str] = sorted(in_order)  # type: ignore[arg-type]
        rows = self.store.execute(SQLITE_OWNERS, (json.dumps(emails),)).fetchall()
        ids = {e: i for e, _c, i in rows}
        found: dict[str, int] = {}
        missing: list[str] = []
        for email in emails:  # keyed by the rows' own strings: pickled once with them
            i = ids.get(email)
            if i is None:
                missing.append(email)
            else:
                found[email] = i
        return found, missing

    def parse(self, record: Record) -> Matched | Reject:
        v = record.values
        email: str | None = None
        if self.i_email is not None:
            raw = v[self.i_email]
            email = self.addresses.get(raw) if type(raw) is str else None
            if email is None:
                try:
                    email = normalise_email(raw)
                except FieldError as e:
                    return Reject(record.line, "email", show_value(raw), e.reason)
                if email is not None and type(raw) is str:
                    if len(self.addresses) >= ADDRESS_CACHE:
                        self.addresses.clear()
                    self.addresses[raw] = email
        given = None
        if self.i_customer is not None:
            try:
                given = fields.text(v[self.i_customer])
            except FieldError as e:
                return Reject(record.line, "customer_id", show_value(v[self.i_customer]), e.reason)
        if given is None and email is None:
            field = "customer_id" if self.i_customer is not None else "email"
            return Reject(
                record.line, field, "", "missing (every row needs a customer_id or an email)"
            )
        values = list(v)
        if self.i_customer is None:
            values.insert(self.width, email)
        elif given is None:
            values[self.i_customer] = email
        parsed = self.inner.parse(make_record(record.line, values))
        if isinstance(parsed, Reject):
            return parsed
        by_email = email is not None and (self.mode == "email" or given is None)
        return (parsed, email, by_email)

    def write(self, conn: Connection, batch: list[Any], ctx: Context) -> BatchResult:
        return self.inner.write(conn, self.resolve(conn, batch, ctx), ctx)

    def _unit(self, conn: Connection, ctx: Context) -> Any:
        inner = self.inner.unit(conn, ctx)  # type: ignore[attr-defined]
        return _MatchedUnit(self, inner, conn, ctx)

    def resolve(self, conn: Connection, batch: list[Matched], ctx: Context) -> list[Any]:
        """The wrapped kind's rows, each keyed by the customer id of its contact. The contact
        ids found on the way go to the orders writer (``ctx.extra["contact_ids"]``, the key
        a row carries -> contacts.id), which then looks up only the customers it does not
        know. A file without a customer id column keys every row by its address already
        (see :meth:`bind`): its orders go to the writer as they are, with the contact ids
        keyed by address (and on PostgreSQL the customer ids, for the orders it stages),
        instead of each row being rebuilt with its customer id. What the parser process
        found for the batch (``ctx.extra["resolved_apart"]``, see :meth:`_resolve_apart`)
        is taken as found while ``ctx.store_version`` says no other connection has written
        since the import began; only the other addresses are then looked up here."""
        by_address = self.i_customer is None  # every row: by_email, keyed by its address
        resolved: Resolved | None = ctx.extra.pop("resolved_apart", None)
        if resolved is not None and not (
            ctx.store_version is not None and ctx.store_version.unchanged(conn)
        ):
            resolved = None  # another connection wrote since: look every address up here
        if resolved is not None:
            # Found by the parser process; only the others are looked up (and created).
            in_order: dict[str | None, None] = dict.fromkeys(resolved[1])
        elif by_address:
            in_order = dict.fromkeys(m[1] for m in batch)
            in_order.pop(None, None)
        else:
            in_order = dict.fromkeys(m[1] for m in batch if m[1] is not None and m[2])
        emails: list[str] = sorted(in_order)  # type: ignore[arg-type]
        found = _owners(conn, emails)
        owner = {email: customer for email, (customer, _id) in found.items()}
        if self.creates_contacts:
            # New customers get their address, whether the row is matched by it or not.
            if by_address:
                new = {e: e for e in in_order if e is not None and e not in owner}
            else:
                new = {
                    _customer_of(row): email
                    for row, email, by_email in batch
                    if email is not None and not (by_email and email in owner)
                }
            for customer in _known(conn, list(new)):
                del new[customer]
            if new:
                _create(conn, new, ctx)
                created = _owners(conn, sorted({e for e in new.values() if e in in_order}))
                found.update(created)
                owner.update({email: customer for email, (customer, _id) in created.items()})
        if self.name == "orders" and by_address:
            ids = resolved[0] if resolved is not None else {}
            ids.update({email: id_ for email, (_c, id_) in found.items()})
            ctx.extra["contact_ids"] = ids
            if ctx.dialect.postgres:  # for the orders it stages instead of copying
                ctx.extra["customer_ids"] = owner
            return [m[0] for m in batch]
        if self.name == "orders" and ctx.dialect.name == "sqlite":
            ctx.extra["contact_ids"] = dict(found.values())
        rows: list[Any] = []
        append = rows.append
        for row, email, by_email in batch:
            cid = owner.get(email) if by_email and email is not None else None
            append(row if cid is None else _with_customer(row, cid))
        return rows


class _MatchedUnit:
    """The wrapped kind's commit unit, fed resolved rows."""

    def __init__(self, kind: EmailMatched, inner: Any, conn: Connection, ctx: Context) -> None:
        self.kind, self.inner, self.conn, self.ctx = kind, inner, conn, ctx

    @property
    def staged(self) -> int:
        return int(self.inner.staged)

    def add(self, batch: list[Any]) -> list[Reject]:
        result: list[Reject] = self.inner.add(self.kind.resolve(self.conn, batch, self.ctx))
        return result

    def finish(self) -> BatchResult:
        result: BatchResult = self.inner.finish()
        return result


def _customer_of(row: Any) -> str:
    if isinstance(row, tuple) and len(row) == 2 and isinstance(row[0], bool):  # events
        row = row[1]
    if hasattr(row, "customer_id"):
        return str(row.customer_id)
    return str(row[2])


def _with_customer(row: Any, customer_id: str) -> Any:
    """``row`` keyed by ``customer_id``: a contacts row, an order or event row (customer id
    third), or an events kind's ``(is_order, row)``."""
    if hasattr(row, "_replace"):
        return row._replace(customer_id=customer_id)
    if len(row) == 2 and isinstance(row[0], bool):
        return (row[0], _with_customer(row[1], customer_id))
    return (*row[:2], customer_id, *row[3:])


def _rows(conn: Connection, sqlite_sql: str, postgres_sql: str, keys: list[str]) -> list[Any]:
    """One query over all of ``keys`` through the driver: a JSON array read by ``json_each``
    on SQLite, an array parameter on PostgreSQL (no statement per few hundred keys)."""
    if not keys:
        return []
    raw = conn.connection.driver_connection
    assert raw is not None
    cur = raw.cursor()
    if conn.dialect.name == "postgresql":
        cur.execute(postgres_sql, (keys,))
    else:
        cur.execute(sqlite_sql, (json.dumps(keys),))
    return list(cur.fetchall())


def _owners(conn: Connection, emails: list[str]) -> dict[str, tuple[str, int]]:
    """``email -> (customer_id, contacts.id)`` of the contacts that have these addresses (the
    oldest one when several share an address: ``winback contacts merge`` joins them)."""
    # Newest first: the oldest contact of an address comes last, and stays in the dict.
    rows = _rows(
        conn,
        SQLITE_OWNERS,
        "SELECT c.email, c.customer_id, c.id FROM contacts c WHERE c.email = ANY(%s) "
        "AND c.erased_at IS NULL ORDER BY c.id DESC",
        emails,
    )
    return {str(e): (str(c), int(i)) for e, c, i in rows}


def _known(conn: Connection, customer_ids: list[str]) -> set[str]:
    """Those of ``customer_ids`` that are contacts already."""
    rows = _rows(
        conn,
        "SELECT customer_id FROM contacts WHERE customer_id IN (SELECT value FROM json_each(?))",
        "SELECT customer_id FROM contacts WHERE customer_id = ANY(%s)",
        customer_ids,
    )
    return {str(r[0]) for r in rows}


def _create(conn: Connection, new: dict[str, str], ctx: Context) -> None:
    """Contacts ``customer id -> email`` for customers not yet known (a customer id that
    exists already is left alone: the row then goes to that customer)."""
    rows = [
        {
            "customer_id": cid,
            "email": email,
            "attributes": {},
            "orders_count": 0,
            "revenue_total": 0,
            "created_at": ctx.now,
            "updated_at": ctx.now,
        }
        for cid, email in new.items()
    ]
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = (
        insert(contacts)
        .on_conflict_do_nothing(index_elements=["customer_id"])
        .returning(contacts.c.id)
    )
    ctx.report.contacts_created += len(conn.execute(stmt, rows).all())
