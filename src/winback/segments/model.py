"""The condition language's model: typed, validated conditions parsed from YAML/JSON, with
error messages that name the place (``all[2].within``). Compiled to SQL by
:mod:`winback.segments.conditions`."""

from __future__ import annotations

import re
from collections.abc import Iterator
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
from sqlalchemy import Boolean, Column, Date, Float, Integer, Numeric

from winback.errors import DefinitionError
from winback.store.schema import contacts, orders
from winback.store.types import UTCDateTime

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

_ADAPTER: TypeAdapter[Condition] = TypeAdapter(Condition)
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
