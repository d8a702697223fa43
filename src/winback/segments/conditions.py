"""The condition language of segments and flows, and its compiler to SQL.

A condition is a small YAML/JSON mapping (see ``docs/segments.md``)::

    all:
      - attribute: orders_count
        gt: 0
      - not: {event: purchase, within: 90d}
      - {tag: vip}
      - {segment: Customers}
      - {consent: email}

:func:`parse_condition` validates such data into a typed model (errors name the place, e.g.
``all[2].within``); :func:`compile_condition` turns the model into one boolean SQLAlchemy Core
expression correlated to a contact id column, evaluated against an explicit ``now`` (the
engine's clock, never SQL ``now()``), so it runs in the store on SQLite and PostgreSQL.

Every leaf is two-valued (unknown values make a comparison false, never NULL), so ``not`` is
an exact complement.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    and_,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
)
from sqlalchemy.sql.expression import FromClause

from winback.errors import DefinitionError
from winback.segments import history as pit
from winback.segments._json import (
    json_array_has,
    json_bool,
    json_items_have,
    json_number,
    json_present,
    json_text,
    unindexed,
)
from winback.segments.model import (
    ORDER_FIELDS,
    PURCHASE,
    SITE_ACTIVITY,
    AllCondition,
    AnyCondition,
    AttributeCondition,
    Condition,
    ConsentCondition,
    EventCondition,
    NotCondition,
    PropertyTest,
    SegmentCondition,
    TagCondition,
    _attribute_kind,
    _coerce,
    format_duration,
    parse_condition,
    parse_duration,
    referenced_segments,
    walk,
)
from winback.store import purchases
from winback.store.schema import (
    contact_tags,
    contacts,
    events,
    orders,
    segment_membership,
    segments,
)

__all__ = [
    "AllCondition",
    "AnyCondition",
    "AttributeCondition",
    "Condition",
    "ConsentCondition",
    "EventCondition",
    "NotCondition",
    "SegmentCondition",
    "TagCondition",
    "compile_condition",
    "format_duration",
    "parse_condition",
    "parse_duration",
    "referenced_segments",
    "walk",
]

# -- the compiler ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FastColumn:
    """A maintained ``contacts`` column that answers an event condition without scanning
    events: ``last`` is the time of the last (non-machine) such event, ``first`` of the first
    (only purchases have one)."""

    last: str
    first: str | None = None


#: Events whose machine-flagged rows (privacy proxies, link scanners) are not engagement.
MACHINE_SENSITIVE = frozenset({"email_opened", "email_clicked"})

#: Event sets whose last occurrence is maintained on the contact by ingestion.
FAST_COLUMNS: dict[frozenset[str], FastColumn] = {
    frozenset({PURCHASE}): FastColumn("last_purchase_at", "first_purchase_at"),
    frozenset({"email_opened"}): FastColumn("last_email_opened"),
    frozenset({"email_clicked"}): FastColumn("last_email_link_clicked"),
    SITE_ACTIVITY: FastColumn("last_seen"),
}


@dataclass(frozen=True)
class FastPath:
    """An event condition rewritten as a test on one maintained column: ``column IS NOT NULL``
    (``bound`` None) or ``column >= bound`` / ``column < bound``."""

    column: str
    op: Literal["present", "ge", "lt"]
    window: str | None  # 'within' | 'before' | 'since' | None


def fast_path(cond: EventCondition) -> FastPath | None:
    """The maintained-column form of ``cond`` when it is semantically identical, else None."""
    if cond.where or cond.count is not None or cond.include_machine:
        return None
    fast = FAST_COLUMNS.get(frozenset(cond.event))
    if fast is None:
        return None
    occ, window = cond.occurrence, cond.window
    if window is None:  # ever performed: the first and last exist together
        return FastPath(fast.first or fast.last, "present", None)
    if window in ("within", "since"):
        if occ in ("any", "last"):
            return FastPath(fast.last, "ge", window)
        return None  # first occurrence inside the window needs every event
    # before: "some occurrence before" is about the first one, "last before" the last one.
    if occ == "last":
        return FastPath(fast.last, "lt", window)
    return FastPath(fast.first, "lt", window) if fast.first else None


class _Compiler:
    def __init__(
        self,
        now: datetime,
        contact_id: ColumnElement[Any],
        entered_at: ColumnElement[Any] | None,
        row: FromClause,
        use_maintained: bool = True,
        segment_ids: Mapping[str, int] | None = None,
        scan: bool = False,
        inline_segments: Mapping[str, Condition] | None = None,
        history: bool = False,
    ) -> None:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        self.now = now.astimezone(UTC)
        self.cid = contact_id
        self.entered_at = entered_at
        self.row = row
        self.use_maintained = use_maintained
        self.segment_ids = segment_ids or {}
        self.scan = scan
        self.inline = inline_segments or {}
        self.history = history

    def col(self, name: str) -> ColumnElement[Any]:
        if self.history and name in pit.HISTORICAL:
            return pit.column_at(name, self.row, self.now)
        column = self.row.c[name]
        return unindexed(column) if self.scan else column

    def boundary(self, ago: timedelta) -> datetime:
        return self.now - ago

    def compile(self, cond: Condition) -> ColumnElement[bool]:
        if isinstance(cond, AllCondition):
            return and_(*(self.compile(c) for c in cond.all))
        if isinstance(cond, AnyCondition):
            return or_(*(self.compile(c) for c in cond.any))
        if isinstance(cond, NotCondition):
            return not_(self.compile(cond.not_))
        if isinstance(cond, AttributeCondition):
            return self.attribute(cond)
        if isinstance(cond, EventCondition):
            return self.event(cond)
        if isinstance(cond, TagCondition):
            return self.tag(cond)
        if isinstance(cond, SegmentCondition):
            return self.segment(cond)
        if isinstance(cond, ConsentCondition):
            return self.col(f"{cond.consent}_consent").is_(True)
        raise TypeError(f"not a condition: {cond!r}")

    # attributes --------------------------------------------------------------------------
    def attribute(self, cond: AttributeCondition) -> ColumnElement[bool]:
        column = cond.column
        op, value = cond.operator, cond.value
        if column is None:
            return self.json_test(self.col("attributes"), cond.custom_key, op, value)
        expr = self.col(column.name)
        kind = _attribute_kind(column)
        if op in ("is_unknown", "has_any_value"):
            unknown: ColumnElement[bool] = expr.is_(None)
            if kind == "text":
                unknown = or_(unknown, expr == "")
            return unknown if (op == "is_unknown") == value else not_(unknown)
        if op in ("within", "before", "less_than_days_ago", "more_than_days_ago"):
            moment = self.boundary(value)
            bound: datetime | date = moment.date() if kind == "date" else moment
            recent = op in ("within", "less_than_days_ago")
            return and_(expr.is_not(None), expr >= bound if recent else expr < bound)
        known = expr.is_not(None) if kind != "text" else and_(expr.is_not(None), expr != "")
        if op in ("in", "not_in"):
            values = [_coerce(v, kind, cond.attribute) for v in value]
            return and_(known, expr.in_(values) if op == "in" else expr.not_in(values))
        if op == "contains":
            return and_(known, func.lower(expr).contains(str(value).lower(), autoescape=True))
        return and_(known, _compare(expr, op, _coerce(value, kind, cond.attribute)))

    def json_test(
        self, doc: ColumnElement[Any], key: str, op: str, value: Any
    ) -> ColumnElement[bool]:
        k = literal(key)
        if op in ("is_unknown", "has_any_value"):
            present = json_present(doc, k)
            return not_(present) if (op == "is_unknown") == value else present
        if op in ("within", "before", "less_than_days_ago", "more_than_days_ago"):
            text = json_text(doc, k)
            bound = self.boundary(value).isoformat()
            recent = op in ("within", "less_than_days_ago")
            return and_(text.is_not(None), text >= bound if recent else text < bound)
        if op == "contains":
            text = json_text(doc, k)
            substring = and_(
                text.is_not(None), func.lower(text).contains(str(value).lower(), autoescape=True)
            )
            member = json_array_has(doc, k, literal(json.dumps([value])), literal(value))
            return or_(substring, member)
        if op in ("in", "not_in"):
            tests = [self.json_test(doc, key, "eq", v) for v in value]
            anyof = or_(*tests) if tests else false()
            if op == "in":
                return anyof
            return and_(json_present(doc, k), not_(anyof))
        typed = _json_typed(doc, k, value)
        return and_(typed.is_not(None), _compare(typed, op, value))

    # events -----------------------------------------------------------------------------
    def event(self, cond: EventCondition) -> ColumnElement[bool]:
        result = self._event_positive(cond)
        return result if cond.performed else not_(result)

    def _window_bound(self, cond: EventCondition) -> ColumnElement[Any] | datetime | None:
        if cond.window == "since":
            if self.entered_at is None:
                raise DefinitionError(
                    "'since: entry' only has a meaning inside a flow (time of entry); "
                    "in a segment use within: or before:"
                )
            return self.entered_at
        if cond.window == "within":
            assert cond.within is not None
            return self.boundary(cond.within)
        if cond.window == "before":
            assert cond.before is not None
            return self.boundary(cond.before)
        return None

    def _event_positive(self, cond: EventCondition) -> ColumnElement[bool]:
        bound = self._window_bound(cond)
        fast = fast_path(cond) if self.use_maintained and not self.history else None
        if fast is not None:
            column = self.col(fast.column)
            if fast.op == "present":
                return column.is_not(None)
            assert bound is not None
            test = column >= bound if fast.op == "ge" else column < bound
            return and_(column.is_not(None), test)
        if PURCHASE in cond.event and len(cond.event) > 1:
            others = [e for e in cond.event if e != PURCHASE]
            return or_(
                self._event_positive(cond.model_copy(update={"event": [PURCHASE]})),
                self._event_positive(cond.model_copy(update={"event": others})),
            )

        def source(side: str) -> Any:
            return self._source(cond, side, bound)

        if cond.count is not None:
            side = "ever" if bound is None else "before" if cond.window == "before" else "after"
            counted = source(side).with_only_columns(func.count()).scalar_subquery()
            op = cond.count.operator
            return _compare(counted, op, getattr(cond.count, op))
        if cond.window is None:
            return exists(source("ever"))
        if cond.window == "before":
            if cond.occurrence == "last":
                return and_(exists(source("before")), not_(exists(source("after"))))
            return exists(source("before"))
        if cond.occurrence == "first":
            return and_(exists(source("after")), not_(exists(source("before"))))
        return exists(source("after"))

    def _source(self, cond: EventCondition, side: str, bound: Any) -> Any:
        """``SELECT 1 FROM <orders|events> WHERE contact = .. AND type .. AND window side``."""
        purchase = cond.event == [PURCHASE]
        table = (orders if purchase else events).alias()
        ts = table.c["ordered_at" if purchase else "occurred_at"]
        where: list[ColumnElement[bool]] = [table.c.contact_id == self.cid]
        if self.history:
            where.append(ts <= self.now)
        if purchase:
            where.append(purchases.counted(table))
        if side == "after":
            where.append(ts >= bound)
        elif side == "before":
            where.append(ts < bound)
        if not purchase:
            where.append(
                table.c.type == cond.event[0]
                if len(cond.event) == 1
                else table.c.type.in_(cond.event)
            )
            sensitive = MACHINE_SENSITIVE.intersection(cond.event)
            if sensitive and not cond.include_machine:
                # As ingestion does for the maintained columns: machine opens and clicks are
                # not engagement; other events count whatever their flag.
                human: ColumnElement[bool] = table.c.machine.is_(False)
                if len(sensitive) < len(cond.event):
                    human = or_(human, table.c.type.not_in(sorted(sensitive)))
                where.append(human)
        for key, test in (cond.where or {}).items():
            where.append(self._property(table, cond, key, test))
        return select(literal(1)).select_from(table).where(*where).correlate_except(table)

    def _property(
        self, table: FromClause, cond: EventCondition, key: str, test: PropertyTest
    ) -> ColumnElement[bool]:
        op, value = test.operator, test.value
        if cond.event != [PURCHASE]:
            return self.json_test(table.c.properties, key, op, value)
        if key in ORDER_FIELDS:
            column = table.c[key]
            if op in ("is_unknown", "has_any_value"):
                return column.is_(None) if (op == "is_unknown") == value else column.is_not(None)
            if op in ("in", "not_in"):
                return and_(
                    column.is_not(None),
                    column.in_(value) if op == "in" else column.not_in(value),
                )
            if op == "contains":
                return func.lower(column).contains(str(value).lower(), autoescape=True)
            return and_(column.is_not(None), _compare(column, op, value))
        # Any other key is a property of the order's items (e.g. category), compared as text.
        if op not in ("eq", "in"):
            raise DefinitionError(f"order item property {key!r} supports eq and in only, not {op}")
        values = value if op == "in" else [value]
        return or_(
            *(json_items_have(table.c["items"], literal(key), literal(str(v))) for v in values)
        )

    # tags, segments -----------------------------------------------------------------------
    def tag(self, cond: TagCondition) -> ColumnElement[bool]:
        if self.history:
            added = pit.tag_added_at(cond.tag, self.cid, self.now)
            if cond.within is None:
                return added.is_not(None)
            return and_(added.is_not(None), added >= self.boundary(cond.within))
        t = contact_tags.alias()
        where: list[ColumnElement[bool]] = [t.c.contact_id == self.cid]
        where.append(t.c.tag == cond.tag[0] if len(cond.tag) == 1 else t.c.tag.in_(cond.tag))
        if cond.within is not None:
            where.append(t.c.added_at >= self.boundary(cond.within))
        return exists(select(literal(1)).select_from(t).where(*where).correlate_except(t))

    def segment(self, cond: SegmentCondition) -> ColumnElement[bool]:
        if cond.segment in self.inline:
            return self.compile(self.inline[cond.segment])
        if cond.segment in self.segment_ids:
            sm = segment_membership.alias()
            return exists(
                select(literal(1))
                .select_from(sm)
                .where(
                    sm.c.segment_id == self.segment_ids[cond.segment],
                    sm.c.contact_id == self.cid,
                    sm.c.exited_at.is_(None),
                )
                .correlate_except(sm)
            )
        sm, s = segment_membership.alias(), segments.alias()
        query = (
            select(literal(1))
            .select_from(sm.join(s, s.c.id == sm.c.segment_id))
            .where(sm.c.contact_id == self.cid, sm.c.exited_at.is_(None), s.c.name == cond.segment)
            .correlate_except(sm, s)
        )
        return exists(query)


def _json_typed(doc: ColumnElement[Any], key: ColumnElement[Any], value: Any) -> Any:
    if isinstance(value, bool):
        return json_bool(doc, key)
    if isinstance(value, int | float):
        return json_number(doc, key)
    return json_text(doc, key)


_COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}


def _compare(expr: Any, op: str, value: Any) -> ColumnElement[bool]:
    compare = _COMPARISONS.get(op)
    if compare is not None:
        result: ColumnElement[bool] = compare(expr, value)
        return result
    raise ValueError(f"unknown comparison {op!r}")


def compile_condition(
    cond: Condition,
    *,
    now: datetime,
    contact_id: ColumnElement[Any],
    entered_at: ColumnElement[Any] | None = None,
    use_maintained: bool = True,
    segment_ids: Mapping[str, int] | None = None,
    scan: bool = False,
    inline_segments: Mapping[str, Condition] | None = None,
    history: bool | None = None,
) -> ColumnElement[bool]:
    """A boolean SQL expression: does the contact whose id is ``contact_id`` satisfy ``cond``
    at instant ``now``?

    When ``contact_id`` is ``contacts.c.id`` (a query over ``contacts``), attribute tests
    refer to that row directly; otherwise (e.g. a flow state table) the whole test is wrapped
    in one ``EXISTS`` over ``contacts`` correlated to ``contact_id``. ``entered_at`` is the
    column with the time the contact entered the flow, used by ``since: entry`` windows.

    Event conditions that a maintained column answers exactly (see :data:`FAST_COLUMNS`)
    compile to a test on that indexed column; ``use_maintained=False`` forces the scan of
    ``orders``/``events`` (to check the two agree). ``segment_ids`` (name -> id) saves the
    lookup of referenced segments by name. ``scan=True`` keeps SQLite from using indexes on
    the contact row's columns (right when most contacts are evaluated anyway).

    ``inline_segments`` (name -> condition) compiles ``segment: NAME`` as that condition
    instead of a lookup of the materialised membership. Only the segment refresh passes it,
    for segments it has just brought up to this same ``now`` (where membership and condition
    agree by construction; see :func:`winback.segments.refresh.inlinable`).

    ``history=True`` evaluates at ``now`` from the rows (orders, events, tag history, consent
    log) stamped at or before ``now`` instead of the contact's current columns, and only for
    the contacts that existed then (see :mod:`winback.segments.history`); None takes
    :func:`winback.segments.history.in_past`, set around a flow pass at a past instant.
    """
    past = pit.in_past() if history is None else history
    if contact_id is contacts.c.id:
        matched = _Compiler(
            now,
            contact_id,
            entered_at,
            contacts,
            use_maintained,
            segment_ids,
            scan,
            inline_segments,
            past,
        ).compile(cond)
        return and_(pit.existed_at(contacts, now), matched) if past else matched
    row = contacts.alias()
    inner = _Compiler(
        now, row.c.id, entered_at, row, use_maintained, segment_ids, scan, inline_segments, past
    ).compile(cond)
    if past:
        inner = and_(pit.existed_at(row, now), inner)
    return exists(
        select(literal(1))
        .select_from(row)
        .where(row.c.id == contact_id, inner)
        .correlate_except(row)
    )
