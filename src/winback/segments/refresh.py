"""Materialised membership: a few set-based statements per segment.

For a segment ``S`` with condition ``C`` at instant ``now``:

1. exits: ``UPDATE segment_membership SET exited_at = now`` for open stints of ``S`` whose
   contact no longer satisfies ``C``;
2. entries: ``INSERT INTO segment_membership SELECT ... FROM contacts WHERE C`` for contacts
   with no open stint.

**Incremental refresh.** Between the previous refresh (at ``t0``) and ``now``, ``C`` can only
change for a contact when

* the contact row changed (``contacts.updated_at >= t0``: new contacts, maintained columns
  moved by new orders/events, consent, attributes; ``analyzed_at`` for analytics columns),
* a relative date crossed its boundary: for ``column within/before N`` the boundary moved
  from ``t0 - N`` to ``now - N``, so only contacts with ``t0 - N <= column < now - N`` flip —
  found through the index on that column,
* one of its tags was added or removed (``tag_history``), or a tag's ``added_at`` crossed a
  ``within`` boundary,
* its membership of a segment ``C`` refers to changed (refreshed earlier in the same pass).

So both statements are restricted to that candidate set. Conditions whose truth can change
without any of these traces (event conditions that scan ``events``/``orders``, relative
dates on custom JSON attributes) make that segment's refresh full. ``full=True`` forces it.
Incremental refresh assumes that writers stamp ``updated_at`` from the same clock as the
refresh; when the clock goes backwards the refresh is full.

**Slices.** Both statements may be restricted to a window of contact ids: a refresh applied
window by window, each its own transaction, ends with the same stints as in one (each window
only touches the stints of its own contacts), and one stopped half way is completed by the
next refresh (exits already made are not open any more, entries already made block a second
stint), which starts again from the same ``since`` as long as the segment is not stamped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    Column,
    Connection,
    MetaData,
    Select,
    Table,
    and_,
    exists,
    func,
    insert,
    literal,
    select,
    union,
    update,
)

from winback.segments.conditions import (
    AttributeCondition,
    Condition,
    EventCondition,
    SegmentCondition,
    TagCondition,
    compile_condition,
    fast_path,
    walk,
)
from winback.store import schema
from winback.store.schema import (
    BigId,
    contact_tags,
    contacts,
    segment_membership,
    tag_history,
)
from winback.store.types import UTCDateTime

#: Columns written by analytics (they move ``analyzed_at``).
ANALYTICS_COLUMNS = frozenset(schema.ANALYTICS_COLUMNS)
RELATIVE = ("within", "before", "less_than_days_ago", "more_than_days_ago")


@dataclass
class Plan:
    """What an incremental refresh of one condition must look at."""

    full_reason: str | None = None
    crossings: set[tuple[str, timedelta]] = field(default_factory=set)
    tags: set[str] = field(default_factory=set)
    tag_crossings: set[tuple[str, timedelta]] = field(default_factory=set)
    segments: set[str] = field(default_factory=set)
    analytics: bool = False


def plan(cond: Condition) -> Plan:
    """The incremental plan of ``cond`` (``full_reason`` set when only a full refresh is
    sound)."""
    p = Plan()
    for c in walk(cond):
        if isinstance(c, AttributeCondition):
            if c.operator in RELATIVE:
                if c.column is None:
                    p.full_reason = f"relative date on custom attribute {c.attribute!r}"
                else:
                    p.crossings.add((c.column.name, c.value))
            if c.attribute in ANALYTICS_COLUMNS:
                p.analytics = True
        elif isinstance(c, EventCondition):
            fast = fast_path(c)
            if fast is None:
                p.full_reason = f"event condition on {', '.join(c.event)} scans events"
            elif fast.window in ("within", "before"):
                duration = c.within if fast.window == "within" else c.before
                assert duration is not None
                p.crossings.add((fast.column, duration))
        elif isinstance(c, TagCondition):
            p.tags.update(c.tag)
            if c.within is not None:
                p.tag_crossings.update((t, c.within) for t in c.tag)
        elif isinstance(c, SegmentCondition):
            p.segments.add(c.segment)
    return p


def candidates(
    p: Plan, *, since: datetime, now: datetime, segment_ids: dict[str, int]
) -> Select[Any]:
    """Ids of the contacts whose truth value may have changed in ``[since, now]``."""
    parts: list[Select[Any]] = [
        select(contacts.c.id.label("id")).where(contacts.c.updated_at >= since)
    ]
    if p.analytics:
        parts.append(select(contacts.c.id).where(contacts.c.analyzed_at >= since))
    for name, ago in sorted(p.crossings, key=lambda x: (x[0], x[1])):
        column = contacts.c[name]
        low: datetime | date = since - ago
        high: datetime | date = now - ago
        if not isinstance(column.type, UTCDateTime):  # a Date column (birthday)
            low, high = (since - ago).date(), (now - ago).date()
        parts.append(select(contacts.c.id).where(column >= low, column < high))
    if p.tags:
        parts.append(
            select(tag_history.c.contact_id).where(
                tag_history.c.tag.in_(sorted(p.tags)), tag_history.c.at >= since
            )
        )
    for tag, ago in sorted(p.tag_crossings):
        parts.append(
            select(contact_tags.c.contact_id).where(
                contact_tags.c.tag == tag,
                contact_tags.c.added_at >= since - ago,
                contact_tags.c.added_at < now - ago,
            )
        )
    parts.extend(segment_changes(p, since=since, now=now, segment_ids=segment_ids))
    return parts[0] if len(parts) == 1 else union(*parts)  # type: ignore[return-value]


def segment_changes(
    p: Plan, *, since: datetime, now: datetime, segment_ids: dict[str, int]
) -> list[Select[Any]]:
    """Contacts whose membership of a referenced segment changed since ``since``.

    Those stamped exactly ``since`` were made in the pass that last refreshed this segment,
    before it (dependency order), so they are already reflected -- unless this is another
    pass at that same instant."""
    sm = segment_membership
    parts = []
    for name in sorted(p.segments):
        sid = segment_ids[name]
        for column in (sm.c.entered_at, sm.c.exited_at):
            changed = column > since if now > since else column >= since
            parts.append(select(sm.c.contact_id.label("id")).where(sm.c.segment_id == sid, changed))
    return parts


def full_reason(
    p: Plan,
    *,
    since: datetime | None,
    members_before: int | None,
    now: datetime,
    full: bool,
    history: bool = False,
) -> str:
    """Why this refresh must be full ("" when incremental is sound)."""
    if full:
        return "asked"
    if history:
        # The candidates are found through the current columns and their change stamps,
        # which say nothing of what held at an earlier instant.
        return "evaluated at a past instant"
    if since is None or members_before is None:
        return "first refresh or changed definition"
    if now < since:
        return "the clock went backwards"
    return p.full_reason or ""


@dataclass(frozen=True)
class SharedCandidates:
    """The direct candidates (row changes, boundary crossings, tag changes) of every
    incremental segment refreshed from the same ``since``, computed once per pass into a
    temporary table."""

    since: datetime
    table: Table


def shared_candidates(
    conn: Connection, plans: Sequence[Plan], *, since: datetime, now: datetime
) -> SharedCandidates:
    merged = Plan()
    for p in plans:
        merged.crossings |= p.crossings
        merged.tags |= p.tags
        merged.tag_crossings |= p.tag_crossings
        merged.analytics = merged.analytics or p.analytics
    table = Table(
        "wb_refresh_candidates",
        MetaData(),
        Column("id", BigId, primary_key=True),
        prefixes=["TEMPORARY"],
    )
    table.drop(conn, checkfirst=True)
    table.create(conn)
    conn.execute(
        insert(table).from_select(["id"], candidates(merged, since=since, now=now, segment_ids={}))
    )
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ANALYZE wb_refresh_candidates")
    return SharedCandidates(since, table)


@dataclass(frozen=True)
class SegmentChange:
    name: str
    mode: Literal["full", "incremental"]
    entered: int
    exited: int
    members: int
    seconds: float
    reason: str = ""


def scans_events(cond: Condition, inline: Mapping[str, Condition]) -> bool:
    """Whether compiling ``cond`` (with ``inline`` segments expanded) reads ``events`` or
    ``orders`` rather than maintained columns."""
    for c in walk(cond):
        if isinstance(c, EventCondition) and fast_path(c) is None:
            return True
        if isinstance(c, SegmentCondition) and c.segment in inline:
            if scans_events(inline[c.segment], inline):
                return True
    return False


def inlinable(cond: Condition, inline: Mapping[str, Condition]) -> bool:
    """Whether later segments of the same refresh pass may test ``cond`` itself instead of
    the membership of the segment it defines (``segment: NAME`` -> NAME's condition).

    This is the one place that defines the equivalence. Right after a segment is refreshed
    at ``now`` its open stints are exactly the contacts satisfying its condition at ``now``
    (that is what a refresh does, full or incremental), and nothing else writes membership
    inside the refresh transaction; so for a segment refreshed later in the same pass, at the
    same ``now``, "is a current member of NAME" and "satisfies NAME's condition at now" are
    the same test. We substitute only conditions answered by the contact row (attributes,
    maintained columns, consent, tags, other memberships): a test of a few columns per
    contact instead of a lookup in ``segment_membership`` per contact. A condition that scans
    events keeps the lookup (substituting it would repeat the scan)."""
    return not scans_events(cond, inline)


def refresh_one(
    conn: Connection,
    *,
    segment_id: int,
    condition: Condition,
    now: datetime,
    since: datetime | None,
    segment_ids: dict[str, int],
    members_before: int | None,
    full: bool = False,
    shared: SharedCandidates | None = None,
    inline: Mapping[str, Condition] | None = None,
    window: tuple[int, int | None] | None = None,
    any_open: bool | None = None,
    history: bool = False,
) -> tuple[str, str, int, int]:
    """Bring one segment's membership up to ``now``; returns (mode, reason, entered,
    exited). ``inline``: conditions of segments already brought up to ``now`` in this pass
    that may replace lookups of their membership (see :func:`inlinable`). ``window``: only
    the contacts with ids in ``[low, high]`` (high None: no upper bound). ``any_open``:
    whether the segment had open stints when its refresh began (None: look). ``history``:
    evaluate at ``now`` from the rows stamped at or before it (a refresh at a past instant;
    see :mod:`winback.segments.history`), always in full."""
    p = plan(condition)

    def within(column: Any) -> list[Any]:
        if window is None:
            return []
        low, high = window
        return [column >= low] + ([column <= high] if high is not None else [])

    reason = full_reason(
        p, since=since, members_before=members_before, now=now, full=full, history=history
    )
    incremental = not reason
    sm = segment_membership
    # Scanning contacts beats SQLite's multi-index OR for broad conditions (full mode);
    # incremental statements are driven by the candidate list instead.
    matches = compile_condition(
        condition,
        now=now,
        contact_id=contacts.c.id,
        segment_ids=segment_ids,
        scan=True,
        inline_segments=inline,
        history=history,
    )
    open_stint = sm.alias("open_stint")
    already = exists(
        select(literal(1))
        .select_from(open_stint)
        .where(
            open_stint.c.segment_id == segment_id,
            open_stint.c.contact_id == contacts.c.id,
            open_stint.c.exited_at.is_(None),
        )
    )
    columns = (
        literal(segment_id).label("segment_id"),
        contacts.c.id,
        literal(now, UTCDateTime()).label("entered_at"),
    )
    if incremental:
        assert since is not None
        if shared is not None and shared.since == since:
            # DISTINCT keeps SQLite from flattening the (small) list into the join, so that
            # the list drives the statement rather than the segment's members.
            base = select(shared.table.c.id).distinct()
            deps = segment_changes(p, since=since, now=now, segment_ids=segment_ids)
            k = (union(base, *deps) if deps else base).subquery("k")
        else:
            k = candidates(p, since=since, now=now, segment_ids=segment_ids).subquery("k")
        stint = sm.alias("stint")
        leaving = (
            select(stint.c.id)
            .select_from(
                k.join(
                    stint,
                    and_(
                        stint.c.contact_id == k.c.id,
                        stint.c.segment_id == segment_id,
                        stint.c.exited_at.is_(None),
                    ),
                )
            )
            .where(
                ~exists(
                    select(literal(1))
                    .select_from(contacts)
                    .where(contacts.c.id == stint.c.contact_id, matches)
                ),
                *within(k.c.id),
            )
        )
        exit_stmt = update(sm).where(sm.c.id.in_(leaving))
        newcomers = (
            select(*columns)
            .select_from(k.join(contacts, contacts.c.id == k.c.id))
            .where(matches, ~already, *within(k.c.id))
        )
    elif not (_any_open(conn, segment_id) if any_open is None else any_open):
        # No current member (first refresh): nothing can exit, every match enters.
        exit_stmt = None
        newcomers = select(*columns).where(matches, *within(contacts.c.id))
    else:
        still = exists(
            select(literal(1))
            .select_from(contacts)
            .where(contacts.c.id == sm.c.contact_id, matches)
        )
        exit_stmt = update(sm).where(
            sm.c.segment_id == segment_id,
            sm.c.exited_at.is_(None),
            ~still,
            *within(sm.c.contact_id),
        )
        newcomers = select(*columns).where(matches, ~already, *within(contacts.c.id))
    exited = 0
    if exit_stmt is not None:
        exited = conn.execute(
            exit_stmt.values(exited_at=now), execution_options={"preserve_rowcount": True}
        ).rowcount
    entered = conn.execute(
        insert(sm).from_select(["segment_id", "contact_id", "entered_at"], newcomers),
        execution_options={"preserve_rowcount": True},
    ).rowcount
    return ("incremental" if incremental else "full"), reason, entered, exited


def open_stints(conn: Connection, segment_id: int) -> int:
    """The segment's current member count, counted."""
    sm = segment_membership
    return int(
        conn.execute(
            select(func.count())
            .select_from(sm)
            .where(sm.c.segment_id == segment_id, sm.c.exited_at.is_(None))
        ).scalar_one()
    )


def any_open(conn: Connection, segment_id: int) -> bool:
    """Whether the segment has a current member."""
    return _any_open(conn, segment_id)


def _any_open(conn: Connection, segment_id: int) -> bool:
    sm = segment_membership
    query = select(sm.c.id).where(sm.c.segment_id == segment_id, sm.c.exited_at.is_(None))
    return conn.execute(query.limit(1)).first() is not None


def close_stints(conn: Connection, segment_ids: Sequence[int], *, now: datetime) -> int:
    """End the open stints of segments that no longer exist in the definitions."""
    if not segment_ids:
        return 0
    sm = segment_membership
    return conn.execute(
        update(sm)
        .where(sm.c.segment_id.in_(segment_ids), sm.c.exited_at.is_(None))
        .values(exited_at=now)
    ).rowcount
