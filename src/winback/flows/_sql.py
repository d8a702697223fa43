"""SQL building blocks of the engine that differ between SQLite and PostgreSQL, and the
set-based transition (log + move) every step ends with."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Float,
    String,
    and_,
    cast,
    exists,
    func,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from winback.channels import CONSENT_CHANNELS
from winback.segments.history import column_at, in_past
from winback.store import purchases
from winback.store.schema import contacts, events, flow_entries, flow_step_counts, orders
from winback.store.types import JSONDoc, UTCDateTime

fe = flow_entries


def at(value: datetime) -> ColumnElement[Any]:
    """An instant as a typed SQL literal (bound parameter)."""
    return literal(value, UTCDateTime())


def stable_uniform(entry_id: ColumnElement[Any], salt: str) -> ColumnElement[Any]:
    """A number in [0, 1) fixed by (entry id, salt): the same on every run and database,
    so a restarted engine puts an entry in the same A/B branch or holdout group.
    Multiplicative hashing with a salt-derived odd multiplier below 2**31 (the product stays
    below 2**63 for ids below 2**32)."""
    mult, add = salt_numbers(salt)
    return cast((entry_id * mult + add) % 4294967296, Float) / 4294967296.0


def salt_numbers(salt: str) -> tuple[int, int]:
    digest = hashlib.sha256(salt.encode()).digest()
    mult = (int.from_bytes(digest[:4], "big") >> 1) | 1
    add = int.from_bytes(digest[4:8], "big")
    return mult, add


def stable_uniform_py(entry_id: int, salt: str) -> float:
    """The Python twin of :func:`stable_uniform` (tests and reports)."""
    mult, add = salt_numbers(salt)
    return ((entry_id * mult + add) % 4294967296) / 4294967296.0


def has_consent(
    channel: str, contact_id: ColumnElement[Any], now: datetime | None = None
) -> ColumnElement[bool]:
    """The contact has consent on ``channel``; at ``now`` when a simulation evaluates a
    past day (:func:`winback.segments.history.in_past`), else as stored."""
    if channel not in CONSENT_CHANNELS:
        return true()
    column: Any = contacts.c[f"{channel}_consent"]
    if now is not None and in_past():
        column = column_at(f"{channel}_consent", contacts, now)
    return exists(
        select(literal(1)).where(contacts.c.id == contact_id, column.is_(True))
    ).correlate_except(contacts)


def json_equals(conn: Connection, doc: Any, key: str, value: Any) -> ColumnElement[bool]:
    """``doc[key] == value`` for a JSON property (strings, numbers, booleans)."""
    if conn.dialect.name == "postgresql":
        text = value if isinstance(value, str) else json.dumps(value)
        equal: ColumnElement[bool] = doc[key].as_string() == text
    else:
        equal = func.json_extract(doc, f'$."{key}"') == value
    return equal


def event_happened(
    conn: Connection,
    contact_id: ColumnElement[Any],
    event_type: str,
    where: dict[str, Any],
    since: ColumnElement[Any],
    until: datetime,
) -> ColumnElement[bool]:
    """Did the contact perform the event in [since, until]? ``purchase`` reads orders."""
    if event_type == "purchase":
        q = select(literal(1)).where(
            orders.c.contact_id == contact_id,
            purchases.counted(orders),
            orders.c.ordered_at >= since,
            orders.c.ordered_at <= at(until),
        )
        return exists(q).correlate_except(orders)
    conds = [
        events.c.contact_id == contact_id,
        events.c.type == event_type,
        events.c.occurred_at >= since,
        events.c.occurred_at <= at(until),
    ]
    conds += [json_equals(conn, events.c.properties, k, v) for k, v in where.items()]
    return exists(select(literal(1)).where(*conds)).correlate_except(events)


def set_attribute_value(conn: Connection, name: str, value: Any) -> Any:
    """``contacts.attributes`` with ``name`` set to ``value`` (a SQL expression)."""
    doc = json.dumps(value)
    if conn.dialect.name == "postgresql":
        return func.coalesce(
            contacts.c.attributes, cast(literal("{}", String()), postgresql.JSONB)
        ).op("||")(
            func.jsonb_build_object(
                literal(name, String()), cast(literal(doc, String()), postgresql.JSONB)
            )
        )
    return func.json_set(func.coalesce(contacts.c.attributes, "{}"), f'$."{name}"', func.json(doc))


def upsert_insert(conn: Connection, table: Any) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


@dataclass
class Rule:
    """Where the rows matching ``when`` go (the first matching rule wins; ``when`` None
    matches all). ``target`` None with no ``exit_reason`` completes the flow."""

    outcome: str
    target: str | None
    when: ColumnElement[bool] | None = None
    exit_reason: str | None = None
    wake_at: datetime | None = None
    waiting: bool = False
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Carry:
    """What earlier steps taken in the same statements left to record on the rows: their
    ``step=outcome`` path tokens and column values (see ``StepRunner._t``)."""

    tokens: tuple[str, ...] = ()
    values: tuple[tuple[str, Any], ...] = ()
    #: Channels whose consent the step just before checked true for every row, in this
    #: same transaction (the next step only: any step may change consent).
    consent: frozenset[str] = frozenset()

    def then(self, step: str, outcome: str | None, values: dict[str, Any]) -> Carry:
        tokens = self.tokens + ((path_token(step, outcome),) if outcome is not None else ())
        return Carry(tokens, self.values + tuple(values.items()))


NO_CARRY = Carry()
#: Between the ``step=outcome`` tokens of ``flow_entries.path``.
PATH_SEPARATOR = " > "


def path_token(step: str, outcome: str) -> str:
    return f"{step}={outcome}"


def append_path(tokens: list[str]) -> Any:
    """``flow_entries.path`` with ``tokens`` appended (one SQL expression)."""
    suffix = literal(PATH_SEPARATOR.join(tokens), String())
    return func.coalesce(fe.c.path + literal(PATH_SEPARATOR, String()), literal("", String())) + (
        suffix
    )


#: ``Connection.info`` key of the counts a transaction adds up (:func:`deferred_counts`).
COUNTS = "winback.flow_step_counts"


def count_outcome(conn: Connection, flow_id: int, step: str, outcome: str, n: int) -> None:
    """Add ``n`` to the (flow, step, outcome) counter of ``flow_step_counts`` (at the end of
    the transaction inside :func:`deferred_counts`)."""
    if n <= 0:
        return
    pending: dict[tuple[int, str, str], int] | None = conn.info.get(COUNTS)
    if pending is not None:
        pending[(flow_id, step, outcome)] = pending.get((flow_id, step, outcome), 0) + n
        return
    _add_count(conn, flow_id, step, outcome, n)


def _add_count(conn: Connection, flow_id: int, step: str, outcome: str, n: int) -> None:
    stmt = upsert_insert(conn, flow_step_counts).values(
        flow_id=flow_id, step=step, outcome=outcome, n=n
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["flow_id", "step", "outcome"],
            set_={"n": flow_step_counts.c.n + stmt.excluded.n},
        )
    )


@contextmanager
def deferred_counts(conn: Connection) -> Iterator[None]:
    """Add up the counts of the block and write them when it ends, in key order: the
    counter rows (which several PostgreSQL workers share) stay locked only for the end of
    each transaction, and always in the same order (no deadlock between workers)."""
    if COUNTS in conn.info:  # nested: the outer block writes them
        yield
        return
    pending: dict[tuple[int, str, str], int] = {}
    conn.info[COUNTS] = pending
    try:
        yield
        for (flow_id, step, outcome), n in sorted(pending.items()):
            _add_count(conn, flow_id, step, outcome, n)
    finally:
        del conn.info[COUNTS]


def transition(
    conn: Connection,
    *,
    batch: ColumnElement[bool],
    flow_id: int,
    node_id: str,
    now: datetime,
    rules: list[Rule],
    log: bool = True,
    carry: Carry = NO_CARRY,
    from_waiting: bool = False,
) -> int:
    """Record the outcome of the step for the rows of ``batch`` and move them as ``rules``
    say.

    Rules are applied in order, each with one set-based UPDATE over the rows of the batch it
    matches: the entries move on, their ``path`` gets ``step=outcome`` appended (after the
    tokens ``carry``-ied from earlier steps taken in the same statements) and the update's
    row count goes to the (flow, step, outcome) counter. A moved row no longer belongs to
    the batch (its step, status or ``waiting`` changed), so the first matching rule wins and
    each condition is evaluated once per row. ``log`` False records no outcome for this
    step (waits)."""
    moved = 0
    for rule in rules:
        where = batch if rule.when is None else and_(batch, rule.when)
        tokens = list(carry.tokens)
        if log:
            tokens.append(path_token(node_id, rule.outcome))
        values = _values(rule, node_id, now, from_waiting)
        for column, value in carry.values:
            values.setdefault(fe.c[column], value)
        if tokens:
            values[fe.c.path] = append_path(tokens)
        n = int(conn.execute(update(fe).where(where).values(values)).rowcount or 0)
        if log:
            count_outcome(conn, flow_id, node_id, rule.outcome, n)
        moved += n
    return moved


def _values(rule: Rule, node_id: str, now: datetime, from_waiting: bool) -> dict[Any, Any]:
    """Only the columns that change (an unchanged ``status`` in the SET list would still
    cost the maintenance of the indexes over it)."""
    if rule.exit_reason is not None:
        status = "exited"
    else:
        status = "active" if rule.target is not None else "completed"
    values: dict[Any, Any] = {
        fe.c.step: rule.target or node_id,
        fe.c.step_at: now,
    }
    if rule.waiting != from_waiting:
        values[fe.c.waiting] = rule.waiting
    if status == "active":
        values[fe.c.wake_at] = rule.wake_at or now
    else:
        values[fe.c.status] = status
        values[fe.c.wake_at] = None
        values[fe.c.exit_reason] = rule.exit_reason or "completed"
        values[fe.c.exited_at] = now
    for column, value in rule.values.items():
        values[fe.c[column]] = value
    return values


__all__ = [
    "NO_CARRY",
    "Carry",
    "JSONDoc",
    "Rule",
    "at",
    "event_happened",
    "has_consent",
    "set_attribute_value",
    "stable_uniform",
    "transition",
]
