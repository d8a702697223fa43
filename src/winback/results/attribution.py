"""What a flow's messages and entries led to, counted set-based in SQL over the outbox,
the events and the orders (one statement per table of figures, whatever the number of
contacts).

- **Cohort**: the flow's entries that entered in ``[since, until)``; each is in one group:
  ``holdout`` (a ``holdout`` step held it out), ``control`` (the workspace-wide control
  group withheld it, :mod:`winback.results.control`) or ``treatment``.
- **Per message** (the outbox rows of the cohort, per step and variant): ``sent`` (handed to
  the channel: status ``sent`` or ``bounced``), ``bounced`` (a synchronous bounce or an
  ``email_bounced`` event for the message), ``delivered`` (sent and not bounced), ``opened``
  (a human open: an ``email_opened`` event with ``machine`` false), ``machine_opened``
  (messages with a machine open, counted apart: privacy proxies and scanners), ``clicked``
  (a human click), ``unsubscribed``, ``complained``; events are matched by
  ``message_id``.
- **Per entry**: ``converted`` (a counted order within ``conversion_window_days`` of
  entering), its ``orders`` and ``revenue`` there, and ``reactivated``: the entry reached a
  goal of the flow, or left the flow's entry segment (``segment_entry`` trigger), within the
  same window.
- **Attributed orders** (last touch, per flow): a counted order goes to the last message of
  the flow *delivered* to the contact at most ``attribution_window_days`` before it; each
  flow claims an order at most once (two flows may both claim it).

Only :func:`counted_orders` count: paid orders not fully refunded, at their net amount.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Float,
    Integer,
    Interval,
    MetaData,
    String,
    Table,
    and_,
    case,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import Subquery

from winback.flows._sql import at
from winback.results import control
from winback.store import purchases
from winback.store.schema import events, flow_entries, orders, outbox, segment_membership
from winback.store.types import UTCDateTime

#: The group names of a cohort, in display order.
GROUPS = ("treatment", "holdout", "control")
#: Path token of an entry the control group withheld.
CONTROL_TOKEN = control.REASON


@dataclass(frozen=True)
class Scope:
    """Which entries and orders a result counts."""

    flow_id: int
    flow_key: str
    as_of: datetime
    attribution_days: int
    conversion_days: int
    since: datetime | None = None
    until: datetime | None = None
    #: The segment of a ``segment_entry`` trigger: leaving it counts as reactivated.
    entry_segment_id: int | None = None


@dataclass
class GroupCounts:
    """Entries of one group (or split branch, or variant) and what they did."""

    contacts: int = 0
    converted: int = 0
    orders: int = 0
    revenue: float = 0.0
    reactivated: int = 0


@dataclass
class MessageCounts:
    """The messages of one step and variant and what followed them."""

    messages: int = 0
    sent: int = 0
    delivered: int = 0
    bounced: int = 0
    opened: int = 0
    machine_opened: int = 0
    clicked: int = 0
    unsubscribed: int = 0
    complained: int = 0
    reactivated: int = 0
    orders: int = 0
    revenue: float = 0.0


def counted_orders() -> Subquery:
    """The orders results count: one selectable (``id``, ``contact_id``, ``ordered_at``,
    ``amount``) that every figure reads. Counted purchases only (status ``paid``, not fully
    refunded: :mod:`winback.store.purchases`), at their net amount."""
    return (
        select(
            orders.c.id,
            orders.c.contact_id,
            orders.c.ordered_at,
            purchases.net(orders).label("amount"),
        )
        .where(purchases.counted(orders))
        .subquery("counted_orders")
    )


def within_days(
    dialect: str, later: ColumnElement[Any], earlier: ColumnElement[Any], days: int
) -> ColumnElement[bool]:
    """``earlier <= later < earlier + days``, portable (SQLite keeps instants as text)."""
    if dialect == "sqlite":
        gap = func.julianday(later) - func.julianday(earlier)
        return and_(later >= earlier, gap < days)
    return and_(later >= earlier, later < earlier + literal(timedelta(days=days), Interval()))


def _has_token(path: ColumnElement[Any], token: str) -> ColumnElement[bool]:
    """The entry's path (``a=x > b=y``) holds ``token`` as a whole token."""
    return or_(
        path == token,
        path.like(f"{token} > %"),
        path.like(f"% > {token}"),
        path.like(f"% > {token} > %"),
    )


def group_of(fe: Any) -> ColumnElement[str]:
    """An entry's group: ``control``, ``holdout`` or ``treatment``."""
    return case(
        (and_(fe.c.holdout.is_(True), _has_token(fe.c.path, CONTROL_TOKEN)), "control"),
        (fe.c.holdout.is_(True), "holdout"),
        else_="treatment",
    )


def cohort(scope: Scope) -> Subquery:
    """The entries counted, with their group."""
    fe = flow_entries
    where = [fe.c.flow_id == scope.flow_id, fe.c.entered_at <= at(scope.as_of)]
    if scope.since is not None:
        where.append(fe.c.entered_at >= at(scope.since))
    if scope.until is not None:
        where.append(fe.c.entered_at < at(scope.until))
    return (
        select(
            fe.c.id,
            fe.c.contact_id,
            fe.c.entered_at,
            fe.c.path,
            fe.c.branch,
            fe.c.exited_at,
            group_of(fe).label("grp"),
        )
        .where(*where)
        .subquery("cohort")
    )


def conversions(dialect: str, scope: Scope, entries: Subquery) -> Subquery:
    """Per converted entry: its counted orders within the conversion window, their revenue
    and the first order's time."""
    o = counted_orders()
    return (
        select(
            entries.c.id.label("entry_id"),
            func.count(o.c.id).label("orders"),
            func.sum(o.c.amount).label("revenue"),
            func.min(o.c.ordered_at).label("first_at"),
        )
        .join(o, o.c.contact_id == entries.c.contact_id)
        .where(
            within_days(dialect, o.c.ordered_at, entries.c.entered_at, scope.conversion_days),
            o.c.ordered_at <= at(scope.as_of),
        )
        .group_by(entries.c.id)
        .subquery("conversions")
    )


def reactivated(dialect: str, scope: Scope, entries: Subquery) -> ColumnElement[bool]:
    """The entry reached a goal, or left the entry segment, within the conversion window."""
    goal = and_(
        entries.c.path.like("%=goal:%"),
        entries.c.exited_at.is_not(None),
        within_days(dialect, entries.c.exited_at, entries.c.entered_at, scope.conversion_days),
        entries.c.exited_at <= at(scope.as_of),
    )
    if scope.entry_segment_id is None:
        return goal
    sm = segment_membership
    left = exists().where(
        sm.c.segment_id == scope.entry_segment_id,
        sm.c.contact_id == entries.c.contact_id,
        sm.c.entered_at <= entries.c.entered_at,
        sm.c.exited_at.is_not(None),
        sm.c.exited_at > entries.c.entered_at,
        within_days(dialect, sm.c.exited_at, entries.c.entered_at, scope.conversion_days),
        sm.c.exited_at <= at(scope.as_of),
    )
    return or_(goal, left)


def _entry_table(dialect: str, scope: Scope) -> Subquery:
    """The cohort with each entry's conversion figures and reactivation (0/1)."""
    entries = cohort(scope)
    conv = conversions(dialect, scope, entries)
    return (
        select(
            entries.c.id,
            entries.c.contact_id,
            entries.c.grp,
            entries.c.path,
            entries.c.entered_at,
            conv.c.orders,
            conv.c.revenue,
            conv.c.first_at,
            case((reactivated(dialect, scope, entries), 1), else_=0).label("reactivated"),
        )
        .select_from(entries.outerjoin(conv, conv.c.entry_id == entries.c.id))
        .subquery("entry_results")
    )


#: Names of the temporary tables of :func:`entry_results` (unique per call in a process).
_TEMP_NAMES = itertools.count(1)
#: Ids as the store keeps them (the rowid on SQLite).
_ID = BigInteger().with_variant(Integer(), "sqlite")
#: Entries: a table of the cohort with its figures, or the statement that derives it.
Entries = Subquery | Table


@contextmanager
def entry_results(conn: Connection, scope: Scope) -> Iterator[Table]:
    """The cohort with each entry's figures, derived once into a temporary table of the
    connection (its index on ``id`` serves the joins from the messages) that every table of
    figures then reads; dropped on leaving. Needs a transaction that the connection's own
    (``engine.connect()``) rolls back on an error."""
    table = Table(
        f"results_entries_{next(_TEMP_NAMES)}",
        MetaData(),
        Column("id", _ID, primary_key=True, autoincrement=False),
        Column("contact_id", _ID, nullable=False),
        Column("grp", String(16), nullable=False),
        Column("path", String),
        Column("entered_at", UTCDateTime, nullable=False),
        Column("orders", Integer),
        Column("revenue", Float),
        Column("first_at", UTCDateTime),
        Column("reactivated", Integer, nullable=False),
        prefixes=["TEMPORARY"],
    )
    source = _entry_table(conn.dialect.name, scope)
    table.create(conn)
    conn.execute(
        table.insert().from_select(
            [c.name for c in table.columns],
            select(*[source.c[c.name] for c in table.columns]),
        )
    )
    yield table
    # After an error the connection's transaction is rolled back, which discards the table
    # (its creation was part of it) on both databases.
    table.drop(conn)


def _entries(conn: Connection, scope: Scope, entries: Entries | None) -> Entries:
    return entries if entries is not None else _entry_table(conn.dialect.name, scope)


def reactivated_count(conn: Connection, scope: Scope, group: str = "treatment") -> int:
    """The entries of ``group`` that were reactivated (``reactivated`` of
    :func:`group_counts`, without counting the orders)."""
    entries = cohort(scope)
    return int(
        conn.execute(
            select(func.count())
            .select_from(entries)
            .where(entries.c.grp == group, reactivated(conn.dialect.name, scope, entries))
        ).scalar_one()
    )


def _sums(t: Entries) -> list[Any]:
    return [
        func.count(t.c.id),
        func.count(t.c.orders),
        func.coalesce(func.sum(t.c.orders), 0),
        func.coalesce(func.sum(cast(t.c.revenue, Float)), 0.0),
        func.coalesce(func.sum(t.c.reactivated), 0),
    ]


def _counts(row: Any) -> GroupCounts:
    contacts, converted, n_orders, revenue, react = row
    return GroupCounts(int(contacts), int(converted), int(n_orders), float(revenue), int(react))


def group_counts(
    conn: Connection, scope: Scope, entries: Entries | None = None
) -> dict[str, GroupCounts]:
    """Every group's entries and what they did (``entries``: from :func:`entry_results`)."""
    t = _entries(conn, scope, entries)
    rows = conn.execute(select(t.c.grp, *_sums(t)).group_by(t.c.grp)).all()
    out = {g: GroupCounts() for g in GROUPS}
    for grp, *rest in rows:
        out[grp] = _counts(rest)
    return out


def buyer_revenue(
    conn: Connection, scope: Scope, entries: Entries | None = None
) -> dict[str, list[float]]:
    """Per group, the revenue of each converted entry (the others bought nothing: 0)."""
    t = _entries(conn, scope, entries)
    out: dict[str, list[float]] = defaultdict(list)
    for grp, revenue in conn.execute(
        select(t.c.grp, cast(t.c.revenue, Float)).where(t.c.revenue.is_not(None))
    ):
        out[grp].append(float(revenue))
    return out


def _arm_key(a: str, b: str) -> str:
    return f"{a}\x1f{b}"


def split_arms(
    dialect: str, scope: Scope, splits: dict[str, list[str]], entries: Entries | None = None
) -> Subquery | None:
    """The treatment entries of each split branch (path token ``<step>=branch:<name>``),
    with their figures and ``arm`` = step and branch; None when the flow has no split."""
    arms = [(sid, name) for sid, names in splits.items() for name in names]
    if not arms:
        return None
    t = entries if entries is not None else _entry_table(dialect, scope)
    arm = case(
        *[
            (_has_token(t.c.path, f"{sid}=branch:{name}"), _arm_key(sid, name))
            for sid, name in arms
        ],
        else_=None,
    ).label("arm")
    inner = select(t, arm).where(t.c.grp == "treatment").subquery("split_rows")
    return select(inner).where(inner.c.arm.is_not(None)).subquery("split_arms")


def variant_arms(dialect: str, scope: Scope, entries: Entries | None = None) -> Subquery:
    """The entries whose message of a send step with variants drew each variant, with their
    figures (conversion from entry, as for the groups) and ``arm`` = step and variant."""
    t = entries if entries is not None else _entry_table(dialect, scope)
    drawn = (
        select(outbox.c.entry_id, outbox.c.step, outbox.c.variant)
        .where(outbox.c.flow == scope.flow_key, outbox.c.variant.is_not(None))
        .subquery("drawn")
    )
    arm = (drawn.c.step + literal("\x1f") + drawn.c.variant).label("arm")
    return select(t, arm).join(drawn, drawn.c.entry_id == t.c.id).subquery("variant_arms")


def arm_counts(conn: Connection, arms: Subquery) -> dict[tuple[str, str], GroupCounts]:
    """Per arm (step and branch or variant): entries and what they did."""
    out: dict[tuple[str, str], GroupCounts] = {}
    for key, *rest in conn.execute(select(arms.c.arm, *_sums(arms)).group_by(arms.c.arm)):
        a, b = str(key).split("\x1f", 1)
        out[(a, b)] = _counts(rest)
    return out


def arm_days(conn: Connection, arms: Subquery) -> dict[tuple[str, str], list[tuple[int, int, int]]]:
    """For the winner rule's daily looks: per arm, (day, entries, conversions) by whole day
    since the first entry of the arms (an entry counts on the day it entered, a conversion
    on the day of its first order)."""
    start = conn.execute(select(func.min(arms.c.entered_at))).scalar()
    out: dict[tuple[str, str], list[tuple[int, int, int]]] = {}
    if start is None:
        return out
    dialect = conn.dialect.name
    tally: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for column, index in ((arms.c.entered_at, 0), (arms.c.first_at, 1)):
        day = _day(dialect, column, start)
        for key, d, n in conn.execute(
            select(arms.c.arm, day, func.count())
            .where(column.is_not(None))
            .group_by(arms.c.arm, day)
        ):
            tally[str(key)][int(d)][index] += int(n)
    for key, days in tally.items():
        a, b = key.split("\x1f", 1)
        out[(a, b)] = sorted((d, e, c) for d, (e, c) in days.items())
    return out


def _day(dialect: str, value: ColumnElement[Any], start: datetime) -> ColumnElement[int]:
    """Whole days from ``start`` to ``value``."""
    if dialect == "sqlite":
        return cast(func.julianday(value) - func.julianday(at(start)), Integer)
    return cast(func.floor(func.extract("epoch", value - at(start)) / 86400), Integer)


def message_counts(
    conn: Connection, scope: Scope, entries: Entries | None = None
) -> dict[tuple[str, str | None], MessageCounts]:
    """Per step and variant: the cohort's messages, what happened to them and the orders
    attributed to them (last touch, per flow)."""
    t = _entries(conn, scope, entries)
    m = outbox
    flag = {
        "bounced": and_(events.c.type == "email_bounced"),
        "opened": and_(events.c.type == "email_opened", events.c.machine.is_(False)),
        "machine_opened": and_(events.c.type == "email_opened", events.c.machine.is_(True)),
        "clicked": and_(events.c.type == "email_clicked", events.c.machine.is_(False)),
        "unsubscribed": events.c.type == "email_unsubscribed",
        "complained": events.c.type == "email_complained",
    }
    # Every event of the message (one index seek; the flags pick the kinds they count).
    facts = and_(events.c.message_id == m.c.message_id, events.c.occurred_at <= at(scope.as_of))
    # One row per message of the cohort with what followed it (0/1 per kind of event), its
    # events found through the message id index: the flow's messages are read once.
    pm = (
        select(
            m.c.id,
            m.c.step,
            m.c.variant,
            m.c.status,
            func.max(t.c.reactivated).label("reactivated"),
            *[func.max(case((cond, 1), else_=0)).label(name) for name, cond in flag.items()],
        )
        .select_from(m.join(t, t.c.id == m.c.entry_id).outerjoin(events, facts))
        .where(m.c.flow == scope.flow_key)
        # In the order of ix_outbox_flow_messages (read from the index alone); one group
        # per message.
        .group_by(m.c.step, m.c.status, m.c.variant, m.c.entry_id, m.c.message_id, m.c.id)
        .subquery("message_events")
    )
    sent = pm.c.status.in_(["sent", "bounced"])
    bounced = or_(pm.c.status == "bounced", pm.c.bounced == 1)
    delivered = and_(pm.c.status == "sent", pm.c.bounced == 0)

    def n(cond: ColumnElement[bool]) -> Any:
        return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)

    def got(name: str) -> ColumnElement[bool]:
        return and_(sent, pm.c[name] == 1)

    rows = conn.execute(
        select(
            pm.c.step,
            pm.c.variant,
            func.count(pm.c.id),
            n(sent),
            n(delivered),
            n(bounced),
            *[n(got(name)) for name in ("opened", "machine_opened", "clicked", "unsubscribed",
                                        "complained")],
            n(and_(delivered, pm.c.reactivated == 1)),
        ).group_by(pm.c.step, pm.c.variant)
    ).all()  # fmt: skip
    out: dict[tuple[str, str | None], MessageCounts] = {}
    names = [f.name for f in fields(MessageCounts)][:10]
    for step, variant, *values in rows:
        out[(str(step), variant)] = MessageCounts(**dict(zip(names, map(int, values), strict=True)))
    cohort_entries = cohort(scope) if entries is None else t
    for (step, variant), (n_orders, revenue) in attributed(conn, scope, cohort_entries).items():
        counts = out.setdefault((step, variant), MessageCounts())
        counts.orders, counts.revenue = n_orders, revenue
    return out


def attributed(
    conn: Connection, scope: Scope, entries: Entries
) -> dict[tuple[str, str | None], tuple[int, float]]:
    """Orders and revenue per step and variant, each counted order given to the last
    message of the flow delivered to its contact within the attribution window before it."""
    dialect = conn.dialect.name
    o = counted_orders()
    m = outbox
    bounce = exists().where(events.c.message_id == m.c.message_id, events.c.type == "email_bounced")
    rank = (
        func.row_number()
        .over(partition_by=o.c.id, order_by=(m.c.sent_at.desc(), m.c.id.desc()))
        .label("rank")
    )
    touches = (
        select(o.c.id, cast(o.c.amount, Float).label("amount"), m.c.step, m.c.variant, rank)
        .select_from(o.join(m, m.c.contact_id == o.c.contact_id))
        .join(entries, entries.c.id == m.c.entry_id)
        .where(
            m.c.flow == scope.flow_key,
            m.c.status == "sent",
            m.c.sent_at.is_not(None),
            ~bounce,
            within_days(dialect, o.c.ordered_at, m.c.sent_at, scope.attribution_days),
            o.c.ordered_at <= at(scope.as_of),
        )
        .subquery("touches")
    )
    return {
        (str(step), variant): (int(k), float(revenue))
        for step, variant, k, revenue in conn.execute(
            select(touches.c.step, touches.c.variant, func.count(), func.sum(touches.c.amount))
            .where(touches.c.rank == 1)
            .group_by(touches.c.step, touches.c.variant)
        )
    }
