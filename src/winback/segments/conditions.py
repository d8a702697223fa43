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
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    Date,
    Float,
    Integer,
    Numeric,
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
from winback.segments._json import (
    json_array_has,
    json_bool,
    json_items_have,
    json_number,
    json_present,
    json_text,
    unindexed,
)
from winback.store.schema import (
    contact_tags,
    contacts,
    events,
    orders,
    segment_membership,
    segments,
)
from winback.store.types import UTCDateTime

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

# -- durations -------------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+)\s*(d|days?|h|hours?|w|weeks?|m|min|minutes?)\s*$", re.I)
_UNITS = {"d": "days", "h": "hours", "w": "weeks", "m": "minutes"}


def parse_duration(value: Any) -> timedelta:
    """``90d``, ``12h``, ``2w``, ``30m`` (also ``90 days``) as a :class:`timedelta`."""
    if isinstance(value, timedelta):
        return value
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"expected a duration like 90d, 12h or 2w, got {value!r}")
    unit = _UNITS[match.group(2)[0].lower()]
    return timedelta(**{unit: int(match.group(1))})


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for suffix, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{suffix}"
    return f"{seconds}s"


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Scalar = StrictBool | StrictInt | StrictFloat | str


def _days(value: Any) -> timedelta:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a whole number of days, got {value!r}")
    return timedelta(days=value)


DaysAgo = Annotated[timedelta, BeforeValidator(_days)]

# -- the model ---------------------------------------------------------------------------------

#: Standard attributes: columns of ``contacts`` usable in conditions.
STANDARD_ATTRIBUTES: dict[str, Column[Any]] = {
    c.name: c for c in contacts.columns if c.name not in ("id", "attributes")
}
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_EVENT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]*$")

COMPARISONS = ("eq", "ne", "lt", "le", "gt", "ge")
OPERATORS = (
    *COMPARISONS,
    "in",
    "not_in",
    "contains",
    "is_unknown",
    "has_any_value",
    "within",
    "before",
    "less_than_days_ago",
    "more_than_days_ago",
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _attribute_kind(column: Column[Any]) -> str:
    t = column.type
    if isinstance(t, UTCDateTime):
        return "datetime"
    if isinstance(t, Date):
        return "date"
    if isinstance(t, Boolean):
        return "bool"
    if isinstance(t, Integer | Float | Numeric):
        return "number"
    return "text"


class AttributeCondition(_Model):
    """A profile attribute: a standard column of ``contacts`` (including the analytics ones such
    as ``rfm_segment``, ``p_alive``, ``cluster``, ``clv``) or a custom attribute stored in
    ``contacts.attributes`` (write ``attributes.NAME`` to force the custom one)."""

    attribute: str
    eq: Scalar | None = None
    ne: Scalar | None = None
    lt: Scalar | None = None
    le: Scalar | None = None
    gt: Scalar | None = None
    ge: Scalar | None = None
    in_: list[Scalar] | None = Field(None, alias="in")
    not_in: list[Scalar] | None = None
    contains: Scalar | None = None
    is_unknown: StrictBool | None = None
    has_any_value: StrictBool | None = None
    within: Duration | None = None
    before: Duration | None = None
    less_than_days_ago: DaysAgo | None = None
    more_than_days_ago: DaysAgo | None = None

    @field_validator("attribute")
    @classmethod
    def _known(cls, value: str) -> str:
        name = value.removeprefix("attributes.")
        if value in STANDARD_ATTRIBUTES or _KEY.match(name):
            return value
        raise ValueError(
            f"{value!r} is not an attribute name (letters, digits, _ and -; custom attributes "
            "may be written attributes.NAME)"
        )

    @model_validator(mode="after")
    def _one_operator(self) -> AttributeCondition:
        given = [op for op in OPERATORS if getattr(self, _field(op)) is not None]
        if len(given) != 1:
            what = "none" if not given else ", ".join(given)
            raise ValueError(
                f"attribute condition on {self.attribute!r} needs exactly one operator "
                f"({', '.join(OPERATORS)}); got {what}"
            )
        op = given[0]
        column = self.column
        if column is not None:
            kind = _attribute_kind(column)
            if op in ("within", "before", "less_than_days_ago", "more_than_days_ago"):
                if kind not in ("datetime", "date"):
                    raise ValueError(f"{op} needs a date attribute; {self.attribute!r} is a {kind}")
            elif op in (*COMPARISONS, "in", "not_in", "contains"):
                values = self.value if isinstance(self.value, list) else [self.value]
                for v in values:
                    _coerce(v, kind, self.attribute)
        return self

    @property
    def operator(self) -> str:
        return next(op for op in OPERATORS if getattr(self, _field(op)) is not None)

    @property
    def value(self) -> Any:
        return getattr(self, _field(self.operator))

    @property
    def column(self) -> Column[Any] | None:
        """The standard column, or None for a custom attribute."""
        return STANDARD_ATTRIBUTES.get(self.attribute)

    @property
    def custom_key(self) -> str:
        return self.attribute.removeprefix("attributes.")


def _field(op: str) -> str:
    return "in_" if op == "in" else op


def _coerce(value: Any, kind: str, name: str) -> Any:
    """A condition value in the Python type of a standard column (raises ValueError)."""
    if kind == "number":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        raise ValueError(f"{name!r} is a number, got {value!r}")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise ValueError(f"{name!r} is true or false, got {value!r}")
    if kind == "datetime":
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            raise ValueError(
                f"{name!r} is a date and time, expected ISO 8601, got {value!r}"
            ) from None
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    if kind == "date":
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            raise ValueError(f"{name!r} is a date, expected YYYY-MM-DD, got {value!r}") from None
    if isinstance(value, str):
        return value
    raise ValueError(f"{name!r} is text, got {value!r}")


class PropertyTest(_Model):
    """A test on one event property (or order field): one operator."""

    eq: Scalar | None = None
    ne: Scalar | None = None
    lt: Scalar | None = None
    le: Scalar | None = None
    gt: Scalar | None = None
    ge: Scalar | None = None
    in_: list[Scalar] | None = Field(None, alias="in")
    not_in: list[Scalar] | None = None
    contains: Scalar | None = None
    is_unknown: StrictBool | None = None
    has_any_value: StrictBool | None = None

    @model_validator(mode="after")
    def _one(self) -> PropertyTest:
        given = [op for op in _PROPERTY_OPS if getattr(self, _field(op)) is not None]
        if len(given) != 1:
            raise ValueError(f"needs exactly one operator ({', '.join(_PROPERTY_OPS)})")
        return self

    @property
    def operator(self) -> str:
        return next(op for op in _PROPERTY_OPS if getattr(self, _field(op)) is not None)

    @property
    def value(self) -> Any:
        return getattr(self, _field(self.operator))


_PROPERTY_OPS = (*COMPARISONS, "in", "not_in", "contains", "is_unknown", "has_any_value")


def _property_test(value: Any) -> Any:
    return value if isinstance(value, dict) else {"eq": value}


class CountTest(_Model):
    eq: StrictInt | None = None
    ne: StrictInt | None = None
    lt: StrictInt | None = None
    le: StrictInt | None = None
    gt: StrictInt | None = None
    ge: StrictInt | None = None

    @model_validator(mode="after")
    def _one(self) -> CountTest:
        if sum(getattr(self, op) is not None for op in COMPARISONS) != 1:
            raise ValueError("needs exactly one of eq, ne, lt, le, gt, ge (e.g. {ge: 3})")
        return self

    @property
    def operator(self) -> str:
        return next(op for op in COMPARISONS if getattr(self, op) is not None)


#: Events that live in ``orders``.
PURCHASE = "purchase"
#: Site activity: ``contacts.last_seen`` is the last of these (non-machine) events.
SITE_ACTIVITY = frozenset({"page_view", "product_view", "cart_add"})
ORDER_FIELDS = {"amount": orders.c.amount, "currency": orders.c.currency, "coupon": orders.c.coupon}


class EventCondition(_Model):
    """Events the contact performed (``purchase`` means an order)."""

    event: list[str]
    performed: StrictBool = True
    occurrence: Literal["any", "first", "last"] = "any"
    within: Duration | None = None
    before: Duration | None = None
    since: Literal["entry"] | None = None
    count: CountTest | None = None
    where: dict[str, Annotated[PropertyTest, BeforeValidator(_property_test)]] | None = None
    include_machine: StrictBool = False

    @field_validator("event", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not names:
            raise ValueError(f"expected an event name or a list of them, got {value!r}")
        for name in names:
            if not isinstance(name, str) or not _EVENT_NAME.match(name):
                raise ValueError(f"{name!r} is not an event name")
        return sorted(set(names))

    @model_validator(mode="after")
    def _consistent(self) -> EventCondition:
        windows = [w for w in ("within", "before", "since") if getattr(self, w) is not None]
        if len(windows) > 1:
            raise ValueError(f"give one time window, not {' and '.join(windows)}")
        if self.count is not None and self.occurrence != "any":
            raise ValueError("count cannot be combined with occurrence first/last")
        if PURCHASE in self.event and len(self.event) > 1:
            if self.count is not None or self.occurrence != "any" or self.where:
                raise ValueError(
                    "purchase cannot be mixed with other events in a count, first/last or "
                    "where condition; write two conditions under any:"
                )
        for key in self.where or {}:
            if not _KEY.match(key):
                raise ValueError(f"{key!r} is not a property name")
        return self

    @property
    def window(self) -> str | None:
        return next((w for w in ("within", "before", "since") if getattr(self, w)), None)


class TagCondition(_Model):
    """The contact has (one of) the tag(s), optionally added within a period."""

    tag: list[str]
    within: Duration | None = None

    @field_validator("tag", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ValueError(f"expected a tag or a list of tags, got {value!r}")
        return sorted(set(names))


class SegmentCondition(_Model):
    """The contact is currently a member of the (materialised) segment."""

    segment: str = Field(alias="in_segment")

    @model_validator(mode="before")
    @classmethod
    def _either_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and "segment" in data and "in_segment" not in data:
            data = {("in_segment" if k == "segment" else k): v for k, v in data.items()}
        return data


class ConsentCondition(_Model):
    """The contact's current consent on the channel is granted."""

    consent: Literal["email", "sms", "push"]


class AllCondition(_Model):
    all: list[Condition] = Field(min_length=1)


class AnyCondition(_Model):
    any: list[Condition] = Field(min_length=1)


class NotCondition(_Model):
    not_: Condition = Field(alias="not")


_KINDS = {
    "all": "all",
    "any": "any",
    "not": "not",
    "attribute": "attribute",
    "event": "event",
    "tag": "tag",
    "segment": "segment",
    "in_segment": "segment",
    "consent": "consent",
}


def _kind(data: Any) -> str | None:
    if isinstance(data, BaseModel):
        return {
            AttributeCondition: "attribute",
            EventCondition: "event",
            TagCondition: "tag",
            SegmentCondition: "segment",
            ConsentCondition: "consent",
            AllCondition: "all",
            AnyCondition: "any",
            NotCondition: "not",
        }.get(type(data))
    if not isinstance(data, dict):
        return None
    found = [k for k in data if k in _KINDS]
    return f"{_KINDS[found[0]]}-condition" if len(found) == 1 else None


Condition = Annotated[
    Annotated[AttributeCondition, Tag("attribute-condition")]
    | Annotated[EventCondition, Tag("event-condition")]
    | Annotated[TagCondition, Tag("tag-condition")]
    | Annotated[SegmentCondition, Tag("segment-condition")]
    | Annotated[ConsentCondition, Tag("consent-condition")]
    | Annotated[AllCondition, Tag("all-condition")]
    | Annotated[AnyCondition, Tag("any-condition")]
    | Annotated[NotCondition, Tag("not-condition")],
    Discriminator(
        lambda d: _kind(d) if not isinstance(d, BaseModel) else f"{_kind(d)}-condition",
        custom_error_type="condition_kind",
        custom_error_message="expected a condition: a mapping with exactly one of the keys "
        "attribute, event, tag, segment, consent, all, any, not",
    ),
]

for _m in (AllCondition, AnyCondition, NotCondition):
    _m.model_rebuild()

_ADAPTER: TypeAdapter[Any] = TypeAdapter(Condition)
_TAGS = {f"{k}-condition" for k in _KINDS.values()}


def parse_condition(data: Any, *, path: str | None = None, location: str = "") -> Condition:
    """Validate ``data`` (from YAML/JSON) into a condition. Raises :class:`DefinitionError`
    naming ``path`` (the file), the place (``location`` + the place inside ``data``, like
    ``all[2].within``) and what is wrong."""
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        problems = [_describe(err, location) for err in exc.errors()]
        where, message = problems[0]
        if len(problems) > 1:
            others = "; ".join(f"{w}: {m}" if w else m for w, m in problems[1:4])
            message += f" (also: {others})"
        raise DefinitionError(message, path=path, location=where) from None


def _describe(err: Any, prefix: str) -> tuple[str, str]:
    where = prefix
    for part in err["loc"]:
        if isinstance(part, int):
            where += f"[{part}]"
        elif part in _TAGS or part.startswith("function-"):
            continue
        else:
            part = {"in_": "in", "not_": "not", "in_segment": "segment"}.get(part, part)
            where = f"{where}.{part}" if where else str(part)
    kind = err["type"]
    message = str(err["msg"]).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        last = str(err["loc"][-1])
        where = where.rsplit(".", 1)[0] if "." in where else prefix
        message = f"unknown key {last!r}"
    elif kind == "missing":
        message = "missing required key"
    elif kind not in ("value_error", "condition_kind", "assertion_error"):
        message = f"{message}, got {err.get('input')!r}"
    return where, message


def walk(cond: Condition) -> Iterator[Condition]:
    """Every condition in the tree, depth first."""
    yield cond
    if isinstance(cond, AllCondition):
        for c in cond.all:
            yield from walk(c)
    elif isinstance(cond, AnyCondition):
        for c in cond.any:
            yield from walk(c)
    elif isinstance(cond, NotCondition):
        yield from walk(cond.not_)


def referenced_segments(cond: Condition) -> set[str]:
    """Names of the segments this condition depends on."""
    return {c.segment for c in walk(cond) if isinstance(c, SegmentCondition)}


# -- the compiler ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FastColumn:
    """A maintained ``contacts`` column that answers an event condition without scanning
    events: ``last`` is the time of the last (non-machine) such event, ``first`` of the first
    (only purchases have one)."""

    last: str
    first: str | None = None


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

    def col(self, name: str) -> ColumnElement[Any]:
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
        fast = fast_path(cond) if self.use_maintained else None
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
            if not cond.include_machine:
                where.append(table.c.machine.is_(False))
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
        t = contact_tags.alias()
        where: list[ColumnElement[bool]] = [t.c.contact_id == self.cid]
        where.append(t.c.tag == cond.tag[0] if len(cond.tag) == 1 else t.c.tag.in_(cond.tag))
        if cond.within is not None:
            where.append(t.c.added_at >= self.boundary(cond.within))
        return exists(select(literal(1)).select_from(t).where(*where).correlate_except(t))

    def segment(self, cond: SegmentCondition) -> ColumnElement[bool]:
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


def _compare(expr: Any, op: str, value: Any) -> ColumnElement[bool]:
    if op == "eq":
        return expr == value
    if op == "ne":
        return expr != value
    if op == "lt":
        return expr < value
    if op == "le":
        return expr <= value
    if op == "gt":
        return expr > value
    if op == "ge":
        return expr >= value
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
    """
    options = {"use_maintained": use_maintained, "segment_ids": segment_ids, "scan": scan}
    if contact_id is contacts.c.id:
        return _Compiler(now, contact_id, entered_at, contacts, **options).compile(cond)  # type: ignore[arg-type]
    row = contacts.alias()
    inner = _Compiler(now, row.c.id, entered_at, row, **options).compile(cond)  # type: ignore[arg-type]
    return exists(
        select(literal(1))
        .select_from(row)
        .where(row.c.id == contact_id, inner)
        .correlate_except(row)
    )
