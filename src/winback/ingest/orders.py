"""Orders files: ``order_id,customer_id,ordered_at,amount,currency,items,coupon,status,
refunded``.

Orders are deduplicated by ``order_id``: against the store (a re-import adds nothing) and
within the file (a second row with the same id is rejected, naming the first line). When the
file has a ``status`` or ``refunded`` column, a stored order whose status or refunded amount
differs from the file's is updated, and its contact's purchase attributes are recounted
(:func:`winback.store.activity.recount_orders`); only counted purchases
(:mod:`winback.store.purchases`) feed them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import psycopg
from sqlalchemy import Connection, select

from winback.ingest import bulk, fields
from winback.ingest.fields import MAX_AMOUNT, FieldError
from winback.ingest.importer import (
    BatchResult,
    Context,
    Refused,
    Reject,
    parse_field,
    required_field,
)
from winback.ingest.readers import Record, show_value
from winback.store import activity
from winback.store.purchases import ORDER_STATUSES, PAID
from winback.store.schema import orders

#: A staged order: (line, order_id, customer_id, ordered_at, amount, currency, items, coupon,
#: status, refunded).
OrderRow = tuple[int, str, str, str, str, str, str | None, str | None, str, str]


class TimestampCache:
    """Parses and formats timestamps, remembering recent texts (exports repeat them).

    Canonical UTC texts (``YYYY-MM-DDTHH:MM:SSZ`` or ``...+00:00``, ``T`` or a space between
    date and time) are validated by :meth:`datetime.fromisoformat` and then reformatted by
    slicing, without building an aware datetime; anything else takes the general path."""

    def __init__(self, ctx: Context, limit: int = 100_000) -> None:
        self.tz = ctx.tz
        self.fmt: Callable[[datetime], str] = ctx.dialect.instant
        self.limit = limit
        self.cache: dict[Any, str] = {}
        self.tail = self.fmt(datetime(2000, 1, 1, tzinfo=UTC))[19:]  # ".000000" and offset

    def __call__(self, raw: Any) -> str | None:
        if type(raw) is str and (
            (len(raw) == 20 and raw[19] == "Z") or (len(raw) == 25 and raw[19:] == "+00:00")
        ):
            got = self._canonical(raw)
            if got is not None:
                return got
        got = self.cache.get(raw) if isinstance(raw, str) else None
        if got is None:
            got = self._fast(raw) if isinstance(raw, str) and len(raw) >= 10 else None
            if got is None:
                parsed = fields.timestamp(raw, self.tz)
                if parsed is None:
                    return None
                got = self.fmt(parsed)
            if isinstance(raw, str):
                if len(self.cache) >= self.limit:
                    self.cache.clear()
                self.cache[raw] = got
        return got

    def _canonical(self, raw: str) -> str | None:
        """``raw`` is 20 or 25 characters ending in Z or +00:00; None: not canonical."""
        if not (
            raw[4] == "-"
            and raw[7] == "-"
            and raw[13] == ":"
            and raw[16] == ":"
            and (raw[10] == "T" or raw[10] == " ")
            and raw.isascii()
        ):
            return None
        try:
            year = datetime.fromisoformat(raw).year
        except ValueError:
            return None
        if not 1900 <= year <= 2200:
            return None
        return raw[:10] + " " + raw[11:19] + self.tail

    def _fast(self, raw: str) -> str | None:
        """The common case without the checks of :func:`fields.timestamp` (None: use them)."""
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            return None
        if not 1900 <= parsed.year <= 2200:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=self.tz)
        return self.fmt(parsed)


class Orders:
    name = "orders"
    #: Parsing keeps no state the writer needs: it may run in a parser process.
    parse_apart = True
    canonical: tuple[str, ...] = (
        "order_id",
        "customer_id",
        "ordered_at",
        "amount",
        "currency",
        "items",
        "coupon",
        "status",
        "refunded",
    )
    required: tuple[str, ...] = ("order_id", "customer_id", "ordered_at", "amount")

    def bind(self, columns: list[str], index: dict[str, int], ctx: Context) -> None:
        self.index = index
        self.ts = TimestampCache(ctx)
        self.currency = ctx.currency
        self.i_order = index["order_id"]
        self.i_customer = index["customer_id"]
        self.i_at = index["ordered_at"]
        self.i_amount = index["amount"]
        self.i_currency = index.get("currency")
        self.i_items = index.get("items")
        self.i_coupon = index.get("coupon")
        self.i_status = index.get("status")
        self.i_refunded = index.get("refunded")
        # Only a file that states status or refunds changes orders stored before.
        ctx.extra["order_changes"] = self.i_status is not None or self.i_refunded is not None

    def parse(self, record: Record) -> OrderRow | Reject:
        """Fast path for well-formed text cells; anything unusual goes to :meth:`checked`."""
        v = record.values
        try:
            order_id = v[self.i_order].strip()
            customer_id = v[self.i_customer].strip()
            if not (0 < len(order_id) <= 255 and 0 < len(customer_id) <= 255):
                return self.checked(record)
            if not (order_id.isascii() and customer_id.isascii()):
                return self.checked(record)
            at = self.ts(v[self.i_at])
            amount = Decimal(v[self.i_amount])
            if at is None or not amount.is_finite() or abs(amount) > MAX_AMOUNT:
                return self.checked(record)
            currency = self.currency
            if self.i_currency is not None:
                given = v[self.i_currency].strip()
                if given:
                    if len(given) != 3 or not given.isascii() or not given.isalpha():
                        return self.checked(record)
                    currency = given.upper()
            items = None
            if self.i_items is not None:
                given_items = v[self.i_items]
                if type(given_items) is fields.ItemsJson:
                    items = str(given_items)
                else:
                    items = given_items.strip() or None
                    if items is not None and not isinstance(json.loads(items), list | dict):
                        return self.checked(record)
            tail = self._tail(v)
            if tail is None:
                return self.checked(record)
        except (AttributeError, ValueError, InvalidOperation, FieldError, RecursionError):
            return self.checked(record)
        return (record.line, order_id, customer_id, at, str(amount), currency, items, *tail)

    def _tail(self, v: list[Any]) -> tuple[str | None, str, str] | None:
        """Fast path: ``(coupon, status, refunded)`` of well-formed cells; None: anything
        unusual."""
        coupon = None
        if self.i_coupon is not None:
            coupon = v[self.i_coupon].strip() or None
            if coupon is not None and (len(coupon) > 64 or not coupon.isascii()):
                return None
        status = PAID
        if self.i_status is not None:
            status = v[self.i_status].strip().lower() or PAID
            if status not in ORDER_STATUSES:
                return None
        refunded = ZERO
        if self.i_refunded is not None:
            given = v[self.i_refunded].strip()
            if given:
                refunded = Decimal(given)
                if not refunded.is_finite() or refunded < 0 or refunded > MAX_AMOUNT:
                    return None
        return coupon, status, str(refunded)

    def checked(self, record: Record) -> OrderRow | Reject:
        """Field by field, naming the first field that is wrong."""
        try:
            return self._checked(record)
        except Refused as refused:
            return Reject(record.line, refused.field, show_value(refused.value), refused.reason)

    def _checked(self, record: Record) -> OrderRow:
        v = record.values

        def cell(name: str) -> Any:
            i = self.index.get(name)
            return v[i] if i is not None else None

        def field(name: str, parse: Callable[[Any], Any]) -> Any:
            return parse_field(name, parse, cell(name))

        def required(name: str, value: Any, reason: str) -> Any:
            return required_field(name, value, f"missing (every order needs {reason})", cell(name))

        order_id = field("order_id", fields.text)
        customer_id = field("customer_id", fields.text)
        required("order_id", order_id, "an order_id")
        required("customer_id", customer_id, "a customer_id")
        at = required("ordered_at", field("ordered_at", self.ts), "an ordered_at time")
        amount = required("amount", field("amount", fields.decimal), "an amount")
        currency = field("currency", fields.currency) or self.currency
        items = field("items", fields.items)
        coupon = field("coupon", lambda x: fields.text(x, max_length=64))
        status = field("status", order_status)
        refunded = field("refunded", fields.decimal) or ZERO
        if refunded < 0:
            raise Refused("refunded", "a refunded amount cannot be negative", cell("refunded"))
        items_json = None if items is None else json.dumps(items, ensure_ascii=False, default=str)
        return (
            record.line,
            order_id,
            customer_id,
            at,
            str(amount),
            currency,
            items_json,
            coupon,
            status,
            str(refunded),
        )

    def write(self, conn: Connection, batch: list[Any], ctx: Context) -> BatchResult:
        return write_orders(conn, batch, ctx)

    def unit(self, conn: Connection, ctx: Context) -> PostgresOrders | None:
        """PostgreSQL writes several batches per transaction (``import_commit_rows``)."""
        return PostgresOrders(conn, ctx) if ctx.dialect.postgres else None


ZERO = Decimal(0)


def order_status(value: Any) -> str:
    """A status cell: one of :data:`ORDER_STATUSES` (any case); empty means ``paid``."""
    status = fields.text(value, max_length=32)
    if status is None:
        return PAID
    status = status.lower()
    if status not in ORDER_STATUSES:
        raise FieldError(f"unknown order status (expected one of: {', '.join(ORDER_STATUSES)})")
    return status


def write_orders(conn: Connection, batch: list[OrderRow], ctx: Context) -> BatchResult:
    """Create unknown customers, insert the new orders, advance the contact attributes; all
    in the caller's transaction. Rows of ``batch`` are in file order."""
    if ctx.dialect.postgres:
        unit = PostgresOrders(conn, ctx)
        rejects = unit.add(batch)
        result = unit.finish()
        result.rejects[:0] = rejects
        return result
    result = BatchResult()
    rows, first_line = result.keep_first(batch, _duplicate)
    if not rows:
        return result
    raw = conn.connection.driver_connection
    assert raw is not None
    cur = raw.cursor()
    not_new = _write_sqlite(conn, cur, rows, ctx)
    inserted_count = len(rows) - len(not_new)
    earlier = bulk.stored_by_import(cur, ctx.dialect, "orders", not_new, ctx.import_id)
    result.settle_counts(inserted_count, not_new, earlier, first_line, _duplicate)
    if ctx.extra.get("order_changes") and len(not_new) > len(earlier):
        stated = {r[1]: (r[8], r[9]) for r in rows}
        changes = [(k, *stated[k]) for k in not_new if k not in earlier]
        ctx.report.orders_updated += _sqlite_apply_changes(conn, cur, changes, ctx)
    return result


def _sqlite_apply_changes(
    conn: Connection, cur: Any, stated: list[tuple[str, str, str]], ctx: Context
) -> int:
    """SQLite: set the status and refunded amount of stored orders ``(order_id, status,
    refunded)`` where they differ, and recount the purchase attributes of their contacts.
    Returns how many orders changed."""
    cur.execute(
        "SELECT o.order_id, o.contact_id, o.status, o.refunded FROM json_each(?) j "
        "JOIN orders o ON o.order_id = j.value",
        (json.dumps([k for k, _s, _r in stated]),),
    )
    stored = {str(r[0]): (int(r[1]), str(r[2]), Decimal(str(r[3]))) for r in cur.fetchall()}
    changed: list[tuple[str, float, str]] = []
    contacts: set[int] = set()
    for order_id, status, refunded in stated:
        contact_id, was_status, was_refunded = stored[order_id]
        if status != was_status or Decimal(refunded) != was_refunded:
            changed.append((status, float(refunded), order_id))
            contacts.add(contact_id)
    if changed:
        cur.executemany("UPDATE orders SET status = ?, refunded = ? WHERE order_id = ?", changed)
        activity.recount_orders(conn, contacts, now=ctx.now)
    return len(changed)


class PostgresOrders:
    """PostgreSQL: the orders of one commit unit (several batches, one transaction).

    Each batch is streamed with ``COPY`` into a temporary staging table as it comes, so the
    client holds one batch at a time; :meth:`finish` then creates the unknown customers and
    writes the whole unit at once (:func:`_pg_write_unit`). A contact with
    orders in several batches of the unit is updated once instead of once per batch: every
    contact update rewrites the row and, unless it is HOT, an entry in each of the contact
    indexes, and with many customers nearly every order of a batch has a contact of its own.
    """

    def __init__(self, conn: Connection, ctx: Context) -> None:
        raw = conn.connection.driver_connection
        assert raw is not None
        self.conn = conn
        self.cur = raw.cursor()
        self.ctx = ctx
        self.staged = 0  # orders of the unit (copied straight or staged)
        self.in_stage = 0  # of which in the staging table
        self.copied = 0  # of which copied straight into ``orders`` (:meth:`_copy`)
        self.before: int | None = None  # the highest ``orders.id`` before the first copy
        # Sorting the unit by line and grouping it by contact fit in memory instead of spilling.
        self.cur.execute("SET LOCAL work_mem = '128MB'")
        # The staging table's estimates make the planner compile these one-off statements
        # (over a second per unit), which pays off only for long-running queries.
        self.cur.execute("SET LOCAL jit = off")
        bulk.pg_stage_open(self.cur, "wb_stage_orders")

    def add(self, batch: list[OrderRow]) -> list[Reject]:
        """Copy or stage ``batch`` (file order); returns the repeats within it (rejected).

        A batch whose every row comes with its contact id (``ctx.extra["contact_ids"]``,
        the key a row carries -> contacts.id: rows matched by address) is first copied
        straight into ``orders`` (:meth:`_copy`); otherwise, or when one of its orders is
        stored already, it is staged, keyed by customer id
        (``ctx.extra["customer_ids"]``)."""
        result = BatchResult()
        rows, _first_line = result.keep_first(batch, _duplicate)
        ids: dict[str, int] | None = self.ctx.extra.pop("contact_ids", None)
        customers: dict[str, str] = self.ctx.extra.pop("customer_ids", None) or {}
        if rows:
            if ids is not None and self._copy(rows, ids):
                self.copied += len(rows)
            else:
                if customers:  # keyed by customer id where the address has one
                    rows = [
                        r if (c := customers.get(r[2])) is None else (r[0], r[1], c, *r[3:])
                        for r in rows
                    ]
                bulk.pg_stage_append(self.cur, "wb_stage_orders", rows)
                self.in_stage += len(rows)
            self.staged += len(rows)
        return result.rejects

    def _copy(self, rows: list[OrderRow], ids: dict[str, int]) -> bool:
        """``COPY`` ``rows`` straight into ``orders`` under a savepoint, as the raw driver
        would: no staging table, no ``INSERT ... SELECT``, and the server writes while the
        next batch is parsed. False (nothing written): a row's contact is unknown, or an
        order is stored already (the unique index stops the copy; from then on this import
        stages every batch, which tells repeats and duplicates apart)."""
        ctx, cur = self.ctx, self.cur
        if not ctx.extra.get("orders_copy", True) or not ids.keys() >= {r[2] for r in rows}:
            return False
        if self.before is None:
            cur.execute("SELECT coalesce(max(id), 0) FROM orders")
            self.before = int(cur.fetchone()[0])
        import_id = ctx.import_id
        cur.execute("SAVEPOINT wb_orders_copy")
        try:
            with cur.copy(bulk.PG_COPY_ORDERS) as copy:
                write = copy.write_row
                for r in rows:
                    write((r[1], ids[r[2]], r[3], r[4], r[5], r[6], r[7], r[8], r[9], import_id))
        except psycopg.errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT wb_orders_copy")
            ctx.extra["orders_copy"] = False
            return False
        cur.execute("RELEASE SAVEPOINT wb_orders_copy")
        return True

    def finish(self) -> BatchResult:
        """Write the staged orders and advance the contacts of the unit's orders; the caller
        commits. The copied orders are all new: their contacts are advanced first, from the
        orders of this import above :attr:`before`, before the staged ones are inserted."""
        result = BatchResult()
        cur, ctx = self.cur, self.ctx
        if self.copied:
            o = orders.c
            copied = select(o.contact_id, o.ordered_at, o.amount, o.status, o.refunded).where(
                o.id > self.before, o.import_id == ctx.import_id
            )
            activity.apply_orders(self.conn, copied, now=ctx.now)
            result.imported = self.copied
        if not self.in_stage:
            return result
        cur.execute("ANALYZE wb_stage_orders")  # temp tables get no statistics otherwise
        ctx.report.contacts_created += bulk.create_missing_contacts(
            cur, ctx.dialect, "wb_stage_orders", "ordered_at", ctx.now
        )
        repeats, duplicates = _pg_write_unit(self.conn, cur, ctx)
        result.rejects = [
            _duplicate(line, order_id, "an earlier line" if first is None else f"line {first}")
            for line, order_id, first in repeats
        ]
        result.duplicates = duplicates
        result.imported += self.in_stage - len(repeats) - duplicates
        if duplicates and ctx.extra.get("order_changes"):
            changed = bulk.pg_update_orders(cur, ctx.import_id)
            if changed:
                activity.recount_orders(self.conn, {cid for cid in changed}, now=ctx.now)
                ctx.report.orders_updated += len(changed)
        return result


def _write_sqlite(conn: Connection, cur: Any, rows: list[OrderRow], ctx: Context) -> list[str]:
    """SQLite: no staging table. Unknown customers are created first (a write, so the batch
    holds the write lock from then on and what it reads stays true), the batch's contact ids
    are looked up in one query, the orders go straight into ``orders`` with ``ON CONFLICT DO
    NOTHING``, and the attributes of the contacts of the rows that were new are advanced
    from per-contact aggregates. Returns the order ids that were not new."""
    now = ctx.dialect.instant(ctx.now)
    # Contacts already found by the email matching (same transaction): not looked up again.
    known: dict[str, int] = ctx.extra.pop("contact_ids", None) or {}
    first_at: dict[str, str] = {}
    for row in rows:
        customer, at = row[2], row[3]
        if customer in known:
            continue
        seen = first_at.get(customer)
        if seen is None or at < seen:
            first_at[customer] = at
    ids = known
    if first_at:
        ctx.report.contacts_created += bulk.sqlite_create_contacts(cur, first_at, now)
        ids = known | bulk.sqlite_contact_ids(cur, list(first_at))
    cur.execute("SELECT coalesce(max(id), 0) FROM orders")
    before = int(cur.fetchone()[0])
    import_id = ctx.import_id
    stored = [(r[1], ids[r[2]], r[3], r[4], r[5], r[6], r[7], r[8], r[9], import_id) for r in rows]
    cur.executemany(
        "INSERT INTO orders (order_id, contact_id, ordered_at, amount, currency, items, "
        "coupon, status, refunded, import_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (order_id) DO NOTHING",
        stored,
    )
    not_new: list[str] = []
    if cur.rowcount != len(rows):  # some were stored before: this batch added ids > before
        cur.execute("SELECT order_id FROM orders WHERE id > ?", (before,))
        added = {str(r[0]) for r in cur.fetchall()}
        not_new = [r[1] for r in rows if r[1] not in added]
    activity.apply_orders(conn, activity.StoredOrders(after=before), now=ctx.now)
    return not_new


def _pg_write_unit(
    conn: Connection, cur: Any, ctx: Context
) -> tuple[list[tuple[int, str, int | None]], int]:
    """Write the staged unit: first as if every order were new (a plain insert, then the
    contacts advanced from the staging table), under a savepoint; when an order is already
    stored or twice in the unit, the unique index stops that insert at the first such row,
    and the unit is written again by the statement that skips and classifies them. The
    contacts' purchase attributes are advanced by :func:`winback.store.activity.apply_orders`
    (compiled into that statement on the second way)."""
    cur.execute("SAVEPOINT wb_orders_unit")
    try:
        cur.execute(bulk.PG_INSERT_ALL_ORDERS, {"import": ctx.import_id})
    except psycopg.errors.UniqueViolation:
        cur.execute("ROLLBACK TO SAVEPOINT wb_orders_unit")
        return bulk.pg_insert_orders(cur, ctx.import_id, ctx.now)
    cur.execute("RELEASE SAVEPOINT wb_orders_unit")
    stage = bulk.ORDER_STAGE
    staged = select(
        stage.c.customer_id,
        stage.c.ordered_at,
        stage.c.amount,
        stage.c.status,
        stage.c.refunded,
    )
    activity.apply_orders(conn, staged, now=ctx.now)
    return [], 0


def _duplicate(line: int, order_id: str, where: str) -> Reject:
    return Reject(
        line, "order_id", order_id, f"duplicate order_id: the same order is already on {where}"
    )
