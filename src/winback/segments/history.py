"""Point-in-time evaluation: a condition at an instant ``T`` reads only what happened at or
before ``T``.

The contact row keeps *current* aggregates (``orders_count``, ``last_purchase_at``,
``last_seen``, consent, ...), maintained by ingestion as facts arrive. They answer a
condition at ``T`` exactly when no fact read by the condition is stamped after ``T`` -- the
usual case, a refresh at the clock's now. For an earlier ``T`` (``segments refresh --now``
in the past, a backtest from a past start) each of them is computed from its rows instead:

* purchase aggregates from the counted purchases (:mod:`winback.store.purchases`) with
  ``ordered_at <= T``; an order's status and refunds have no history, so an order refunded
  after ``T`` does not count at ``T`` either;
* ``last_email_opened`` / ``last_email_link_clicked`` / ``last_seen`` from ``events`` with
  ``occurred_at <= T`` (human opens and clicks only; site visits whatever their flag, as
  ingestion does);
* consent from ``consent_log``: among the changes stamped at or before ``T``, the latest
  (of two stamped alike, the one recorded last); with none, the first one recorded (an
  import states consent without saying since when, so its statement is taken to hold from
  before the records begin); a contact with no log at all keeps its current value;
* tags from ``tag_history``: held at ``T`` when, among its changes stamped at or before
  ``T``, the one recorded last is an addition (``within`` measures from that addition);
* analytics columns only when the analysis ran at or before ``T`` (``analyzed_at <= T``);
  a later analysis saw the future, and its values are unknown at ``T``.

Event conditions read ``events``/``orders`` with the same ``<= T`` bound. Profile fields
(names, email, birthday, custom attributes) have no history and are read as stored.

Only the contacts that existed at ``T`` are evaluated (:func:`existed_at`). A contact exists
from its first record: its ``created_at``, or an earlier order, event, tag change or consent
change (an import without ``created_at`` stamps the import's time, and contacts created by
an order or event import take that row's time, so the shop's own history goes first). A
contact with no ``created_at`` is taken to have existed always.

:func:`needs_history` decides, with a few indexed ``max()`` look-ups, whether the fast path
(the current columns) is exact at ``T``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, case, exists, func, literal, or_, select

from winback.channels import CONSENT_CHANNELS
from winback.clock import as_utc
from winback.segments.model import (
    PURCHASE,
    SITE_ACTIVITY,
    AttributeCondition,
    Condition,
    ConsentCondition,
    EventCondition,
    TagCondition,
    walk,
)
from winback.store import purchases
from winback.store.schema import (
    ANALYTICS_COLUMNS,
    consent_log,
    contacts,
    events,
    orders,
    tag_history,
)

#: Maintained event columns: the event types they follow and whether machine rows count.
EVENT_COLUMNS: dict[str, tuple[frozenset[str], bool]] = {
    "last_email_opened": (frozenset({"email_opened"}), False),
    "last_email_link_clicked": (frozenset({"email_clicked"}), False),
    "last_seen": (SITE_ACTIVITY, True),
}
#: Maintained purchase columns and the aggregate of ``orders`` each one is.
ORDER_COLUMNS = ("first_purchase_at", "last_purchase_at", "orders_count", "revenue_total")
CONSENT_COLUMNS = {f"{channel}_consent": channel for channel in CONSENT_CHANNELS}
#: Every contact column whose value at an instant differs from the stored one.
HISTORICAL = frozenset(
    {*EVENT_COLUMNS, *ORDER_COLUMNS, *CONSENT_COLUMNS, *ANALYTICS_COLUMNS, "analyzed_at"}
)


def column_at(name: str, contact: Any, at: datetime) -> ColumnElement[Any]:
    """The value the contact column ``name`` had at ``at``, as a SQL expression over the
    contact row ``contact`` (a ``contacts`` table or alias)."""
    cid = contact.c.id
    if name in ORDER_COLUMNS:
        o = orders.alias()
        aggregate: Any = {
            "first_purchase_at": func.min(o.c.ordered_at),
            "last_purchase_at": func.max(o.c.ordered_at),
            "orders_count": func.count(),
            "revenue_total": func.coalesce(func.sum(purchases.net(o)), 0),
        }[name]
        query = select(aggregate).where(
            o.c.contact_id == cid, o.c.ordered_at <= at, purchases.counted(o)
        )
        return query.correlate_except(o).scalar_subquery()
    if name in EVENT_COLUMNS:
        types, machine_counts = EVENT_COLUMNS[name]
        e = events.alias()
        where = [e.c.contact_id == cid, _types(e, types), e.c.occurred_at <= at]
        if not machine_counts:
            where.append(e.c.machine.is_(False))
        return select(func.max(e.c.occurred_at)).where(*where).correlate_except(e).scalar_subquery()
    if name in CONSENT_COLUMNS:
        return consent_at(CONSENT_COLUMNS[name], contact, at)
    if name in ANALYTICS_COLUMNS or name == "analyzed_at":
        column = contact.c[name]
        return case((contact.c.analyzed_at <= at, column), else_=None)
    return contact.c[name]  # type: ignore[no-any-return]


def existed_at(contact: Any, at: datetime) -> ColumnElement[bool]:
    """Whether the contact row ``contact`` existed at ``at``: created at or before it, or
    with an order, event, tag change or consent change stamped at or before it (each an
    indexed probe by contact)."""
    cid = contact.c.id
    created = contact.c.created_at
    probes: list[ColumnElement[bool]] = [created.is_(None), created <= at]
    for table, stamp in (
        (orders, "ordered_at"),
        (events, "occurred_at"),
        (tag_history, "at"),
        (consent_log, "at"),
    ):
        t = table.alias()
        probes.append(
            exists(
                select(literal(1)).where(t.c.contact_id == cid, t.c[stamp] <= at)
            ).correlate_except(t)
        )
    return or_(*probes)


def created_after(conn: Connection, at: datetime) -> bool:
    """Whether some contact was created after ``at`` (then :func:`existed_at` may drop it)."""
    query = select(exists().where(contacts.c.created_at > at))
    return bool(conn.execute(query).scalar())


def consent_at(channel: str, contact: Any, at: datetime) -> ColumnElement[Any]:
    """Consent on ``channel`` at ``at`` (see the module's rule): true, false or NULL."""
    return func.coalesce(
        _stated(channel, contact.c.id, at),
        _stated(channel, contact.c.id, None),
        contact.c[f"{channel}_consent"],
    )


def _stated(channel: str, cid: Any, at: datetime | None) -> Any:
    """The latest consent change stamped at or before ``at`` (of two stamped alike, the
    one recorded last); with ``at`` None, the one recorded first."""
    log = consent_log.alias()
    where = [log.c.contact_id == cid, log.c.channel == channel]
    if at is not None:
        where.append(log.c.at <= at)
    return (
        select(log.c.granted)
        .where(*where)
        .order_by(*((log.c.at.desc(), log.c.id.desc()) if at is not None else (log.c.id,)))
        .limit(1)
        .correlate_except(log)
        .scalar_subquery()
    )


def tag_added_at(tags: list[str], cid: Any, at: datetime) -> ColumnElement[Any]:
    """When the contact was last given one of ``tags`` among the ones it held at ``at``
    (NULL: none held). One of several tags: the latest such addition."""
    held = []
    for tag in tags:
        h = tag_history.alias()
        latest = (
            select(h.c.action, h.c.at)
            .where(h.c.contact_id == cid, h.c.tag == tag, h.c.at <= at)
            .order_by(h.c.id.desc())
            .limit(1)
            .correlate_except(h)
            .subquery()
        )
        held.append(select(latest.c.at).where(latest.c.action == "added").scalar_subquery())
    return _latest(held)


def _latest(values: list[Any]) -> ColumnElement[Any]:
    """The latest non-NULL of several instants (NULL when all are)."""
    result: Any = values[0]
    for value in values[1:]:
        result = case(
            (result.is_(None), value),
            (value.is_(None), result),
            (value > result, value),
            else_=result,
        )
    return result  # type: ignore[no-any-return]


def _types(table: Any, types: Iterable[str]) -> ColumnElement[bool]:
    names = sorted(types)
    column: ColumnElement[str] = table.c.type
    return column == names[0] if len(names) == 1 else column.in_(names)


# -- is the fast path exact? -------------------------------------------------------------------


def sources(conds: Iterable[Condition]) -> dict[str, set[str]]:
    """What the fast path of ``conds`` reads that has a history: ``orders``, event types,
    tags, consent, analytics."""
    out: dict[str, set[str]] = {"orders": set(), "events": set(), "tags": set(), "other": set()}
    for cond in conds:
        for c in walk(cond):
            if isinstance(c, AttributeCondition) and c.column is not None:
                _column_source(c.column.name, out)
            elif isinstance(c, EventCondition):
                out["events"].update(e for e in c.event if e != PURCHASE)
                if PURCHASE in c.event:
                    out["orders"].add(PURCHASE)
            elif isinstance(c, TagCondition):
                out["tags"].update(c.tag)
            elif isinstance(c, ConsentCondition):
                out["other"].add("consent")
    return out


def _column_source(name: str, out: dict[str, set[str]]) -> None:
    if name in ORDER_COLUMNS:
        out["orders"].add(PURCHASE)
    elif name in EVENT_COLUMNS:
        out["events"].update(EVENT_COLUMNS[name][0])
    elif name in CONSENT_COLUMNS:
        out["other"].add("consent")
    elif name in ANALYTICS_COLUMNS or name == "analyzed_at":
        out["other"].add("analytics")


def horizon(conn: Connection, conds: Iterable[Condition]) -> datetime | None:
    """The latest instant of a fact read by ``conds`` (None: no such fact). Each part is an
    indexed ``max()`` except consent and analytics, read only when a condition uses them."""
    read = sources(conds)
    parts: list[Any] = []
    if read["orders"]:
        parts.append(select(func.max(orders.c.ordered_at)).scalar_subquery())
    for kind in sorted(read["events"]):
        parts.append(
            select(func.max(events.c.occurred_at)).where(events.c.type == kind).scalar_subquery()
        )
    for tag in sorted(read["tags"]):
        parts.append(
            select(func.max(tag_history.c.at)).where(tag_history.c.tag == tag).scalar_subquery()
        )
    if "consent" in read["other"]:
        parts.append(select(func.max(consent_log.c.at)).scalar_subquery())
    if "analytics" in read["other"]:
        parts.append(select(func.max(contacts.c.analyzed_at)).scalar_subquery())
    if not parts:
        return None
    latest: datetime | None = None
    for value in conn.execute(select(*(p.label(f"p{i}") for i, p in enumerate(parts)))).one():
        if value is None:
            continue
        moment = as_utc(value) if isinstance(value, datetime) else None
        if moment is not None and (latest is None or moment > latest):
            latest = moment
    return latest


def needs_history(conn: Connection, conds: Iterable[Condition], at: datetime) -> bool:
    """Whether evaluating ``conds`` at ``at`` must read history: some fact they read is
    stamped after ``at``, so the current columns would see the future, or a contact was
    created after it."""
    latest = horizon(conn, conds)
    if latest is not None and latest > as_utc(at):
        return True
    return created_after(conn, as_utc(at))


#: Whether conditions compiled without an explicit ``history`` evaluate a past instant.
_PAST: ContextVar[bool] = ContextVar("winback_point_in_time", default=False)


def in_past() -> bool:
    """Whether the code running is evaluating conditions at a past instant (see
    :func:`evaluating`)."""
    return _PAST.get()


@contextmanager
def evaluating(past: bool) -> Iterator[None]:
    """Compile the conditions of the block (flow goals, ``if`` steps, schedule audiences)
    from history (``past``) or from the current columns."""
    token = _PAST.set(past)
    try:
        yield
    finally:
        _PAST.reset(token)


__all__ = [
    "evaluating",
    "in_past",
    "HISTORICAL",
    "column_at",
    "consent_at",
    "created_after",
    "existed_at",
    "horizon",
    "needs_history",
    "sources",
    "tag_added_at",
]
