"""Enrolment: who enters a flow at this tick.

Each flow keeps a watermark of what its trigger has already looked at: the last
``segment_membership.id`` (segment entry), ``tag_history.id`` (tag added), ``events.id`` /
``orders.id`` (event), or the last instant (schedule). A replay (a simulation from a past
start, :func:`winback.segments.history.in_past`) runs on a copy that already holds the
later history: there event and tag triggers take the rows that happened between the last
instant and the simulated now, by their own time. Enrolling the new candidates and moving
the watermark happen in one transaction, so a restart neither loses nor repeats an entry.

A large enrolment is taken in slices (``window``): the candidates of source ids
``(watermark, watermark + window]`` enrol and the watermark moves to the window's end, in one
transaction per slice. A schedule's audience is sliced by contact id: ``watermark_id`` (unused
by schedules otherwise) is the last contact id enrolled for the firing in progress, and
``watermark_at`` moves to the firing's instant with the last slice. Each slice reads the
watermark from the ``flows`` row it locks (``FOR UPDATE SKIP LOCKED`` on PostgreSQL: while
one worker enrols into a flow another leaves that flow's enrolment to it).

An id watermark is only safe when no row below it can still appear. SQLite has one writer at a
time, so ids are committed in order. PostgreSQL hands out sequence values at insert time and
transactions commit in any order: a slow ingestion transaction holding id 100 can commit after
id 101 was seen, and a watermark at 101 would skip it for ever. There the high-water id is read
under a ``SHARE`` lock on the source table, which waits for every transaction still inserting
into it (they hold ``ROW EXCLUSIVE``) and holds new inserts back until the enrolment commits, a
single short statement later.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    String,
    Table,
    and_,
    case,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.sql.elements import ColumnElement

from winback.flows import models as m
from winback.flows._sql import at, count_outcome, fe, json_equals
from winback.flows.conditions import compile_sql
from winback.flows.engine import RunningFlow, Start
from winback.flows.local_time import zone_or_default
from winback.results import control
from winback.segments.history import column_at, existed_at, in_past
from winback.store.schema import (
    contacts,
    control_group,
    events,
    flows,
    orders,
    segment_membership,
    segments,
    tag_history,
)
from winback.store.types import UTCDateTime

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def source_table(trigger: Any) -> Table | None:
    """The table a trigger enrols from (None for schedules)."""
    if isinstance(trigger, m.SegmentEntryTrigger):
        return segment_membership
    if isinstance(trigger, m.TagAddedTrigger):
        return tag_history
    if isinstance(trigger, m.EventTrigger):
        return orders if trigger.filter.type == "purchase" else events
    return None


def source_max_id(conn: Connection, trigger: Any) -> int | None:
    """The current high-water id of the trigger's source (None for schedules): every row at
    or below it is committed, and no row below it can appear later (see the module notes)."""
    table = source_table(trigger)
    if table is None:
        return None
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"LOCK TABLE {table.name} IN SHARE MODE"))
    return conn.execute(select(func.max(table.c.id))).scalar()


@dataclass(frozen=True)
class Enrolment:
    """What one enrolment slice did: entries made, the rows it looked at (candidate source
    rows, or contact ids for a schedule), and whether the flow's candidates are all done
    at this tick."""

    entered: int
    span: int
    done: bool


def enroll(
    conn: Connection,
    flow: RunningFlow,
    now: datetime,
    *,
    default_timezone: str,
    start: Start | None = None,
    window: int | None = None,
    repurchase_days: int | None = None,
) -> Enrolment:
    """Enrol the flow's new candidates, at most ``window`` source ids of them (None: all).
    With ``start`` (:meth:`StepRunner.start_plan`) they enrol past the first step, a send,
    whose messages are queued and outcome counted in this same transaction.
    ``repurchase_days`` (the shop sector's interval) makes customers with one order
    ``overdue`` once that many days have passed since it."""
    row = conn.execute(
        select(flows.c.status, flows.c.watermark_id, flows.c.watermark_at)
        .where(flows.c.id == flow.id)
        .with_for_update(skip_locked=True)
    ).first()
    if row is None or row.status != "enabled":  # another worker enrols it, or paused
        return Enrolment(0, 0, True)
    flow.watermark_id, flow.watermark_at = row.watermark_id, row.watermark_at
    trigger = flow.program.definition.trigger
    new_wm_id, new_wm_at = flow.watermark_id, flow.watermark_at
    candidates: Any = None
    contact_window: tuple[int, int] | None = None
    span, done = 0, True
    if isinstance(trigger, m.ScheduleTrigger):
        fired = last_firing(trigger.schedule, flow.watermark_at, now, default_timezone)
        new_wm_at, new_wm_id = now, None
        if fired is not None:
            candidates = _audience(
                conn, flow, trigger.schedule, fired, now, default_timezone, repurchase_days
            )
            top = int(conn.execute(select(func.max(contacts.c.id))).scalar() or 0)
            low = flow.watermark_id or 0
            high = top if window is None else min(top, low + window)
            contact_window, span = (low, high), high - low
            if high < top:  # the firing goes on at the next slice
                new_wm_id, new_wm_at, done = high, flow.watermark_at, False
    elif in_past() and isinstance(trigger, m.EventTrigger | m.TagAddedTrigger):
        # A replay on a copy of the store: the source holds the shop's whole history, so its
        # rows are taken by their own time, not by id (see :func:`_happened`).
        top = source_max_id(conn, trigger) or 0
        if flow.watermark_at is not None:
            candidates = _happened(
                _source(conn, trigger), flow.watermark_at, flow.watermark_id or 0, now
            )
        new_wm_id, new_wm_at = top, now
    else:
        top = source_max_id(conn, trigger) or 0
        first_time = flow.watermark_id is None
        low = flow.watermark_id or 0
        new_wm_id = top
        if first_time and not (
            isinstance(trigger, m.SegmentEntryTrigger) and trigger.include_existing
        ):
            candidates = None
        elif top > low or first_time:
            source = _source(conn, trigger)
            end = None
            if source is not None and window is not None:
                end = _window_end(conn, source, low, top, window)
            high = top if end is None else end
            candidates = _since(source, low, high)
            new_wm_id, done = high, high >= top
            span = window if end is not None and window is not None else 0
    entered = 0
    if candidates is not None:
        entered = _insert_entries(conn, flow, candidates, now, start, contact_window)
    span = span or entered
    conn.execute(
        update(flows)
        .where(flows.c.id == flow.id)
        .values(watermark_id=new_wm_id, watermark_at=new_wm_at)
    )
    flow.watermark_id, flow.watermark_at = new_wm_id, new_wm_at
    return Enrolment(entered, span, done)


def _source(conn: Connection, trigger: Any) -> tuple[Table, list[Any]] | None:
    """The trigger's source table and the conditions its rows meet (None: no source, a
    segment that does not exist)."""
    if isinstance(trigger, m.SegmentEntryTrigger):
        seg = conn.execute(
            select(segments.c.id).where(segments.c.name == trigger.segment_entry)
        ).scalar()
        if seg is None:
            return None
        sm = segment_membership
        return sm, [sm.c.segment_id == seg, sm.c.exited_at.is_(None)]
    if isinstance(trigger, m.TagAddedTrigger):
        th = tag_history
        return th, [th.c.tag == trigger.tag_added, th.c.action == "added"]
    assert isinstance(trigger, m.EventTrigger)
    spec = trigger.filter
    if spec.type == "purchase":
        return orders, []
    conds = [events.c.type == spec.type]
    conds += [json_equals(conn, events.c.properties, k, v) for k, v in spec.where.items()]
    return events, conds


def _since(source: tuple[Table, list[Any]] | None, low: int, high: int) -> Select[Any] | None:
    """The contacts of the source rows with ids in ``(low, high]``."""
    if source is None:
        return None
    table, conds = source
    return select(table.c.contact_id).where(*conds, table.c.id > low, table.c.id <= high)


#: The column holding when each trigger source's row happened.
STAMPS = {"events": "occurred_at", "orders": "ordered_at", "tag_history": "at"}


def _happened(
    source: tuple[Table, list[Any]] | None, since: datetime, seen_id: int, now: datetime
) -> Select[Any] | None:
    """The contacts of the source rows that happened in ``(since, now]``, and of those
    stamped ``since`` itself that were written after the last look (ids above ``seen_id``:
    a tag added by a step after that tick's enrolment). Each simulated instant sees what
    happened up to it, whatever was recorded later."""
    if source is None:
        return None
    table, conds = source
    stamp = table.c[STAMPS[table.name]]
    late = and_(stamp == at(since), table.c.id > seen_id)
    return select(table.c.contact_id).where(
        *conds, or_(and_(stamp > at(since), stamp <= at(now)), late)
    )


def _window_end(
    conn: Connection, source: tuple[Table, list[Any]], low: int, top: int, rows: int
) -> int | None:
    """The id of the ``rows``-th source row above ``low`` (None: fewer up to ``top``), so
    that a slice takes about ``rows`` candidates however the source's ids are spread."""
    table, conds = source
    return conn.execute(
        select(table.c.id)
        .where(*conds, table.c.id > low, table.c.id <= top)
        .order_by(table.c.id)
        .offset(rows - 1)
        .limit(1)
    ).scalar()


def _audience(
    conn: Connection,
    flow: RunningFlow,
    schedule: m.Schedule,
    fired: date,
    now: datetime,
    default_timezone: str,
    repurchase_days: int | None = None,
) -> Any:
    conds: list[ColumnElement[bool]] = []
    if schedule.segment:
        seg = conn.execute(
            select(segments.c.id).where(segments.c.name == schedule.segment)
        ).scalar()
        if seg is None:
            return None
        sm = segment_membership
        conds.append(
            contacts.c.id.in_(
                select(sm.c.contact_id).where(sm.c.segment_id == seg, sm.c.exited_at.is_(None))
            )
        )
    if schedule.condition is not None:
        conds.append(
            compile_sql(
                schedule.condition,
                now=now,
                contact_id=contacts.c.id,
                path=f"flows/{flow.program.key}.yaml",
                location="trigger.schedule.condition",
            )
        )
    if schedule.birthday:
        month_day = fired.strftime("%m-%d")
        if conn.dialect.name == "postgresql":
            md: Any = func.to_char(contacts.c.birthday, "MM-DD")
        else:
            md = func.strftime("%m-%d", contacts.c.birthday)
        conds.append(md == month_day)
    if schedule.anniversary is not None:
        conds.append(anniversary(conn, schedule.anniversary, fired))
    if schedule.overdue:
        conds.append(overdue(conn, now, repurchase_days))
    return select(contacts.c.id).where(*conds)


#: The contact column each anniversary counts from.
ANNIVERSARY_COLUMNS = {"first_order": "first_purchase_at", "signup": "created_at"}


def anniversary(conn: Connection, kind: str, day: date) -> ColumnElement[bool]:
    """Contacts whose first order or sign-up (UTC date) was on ``day``'s month and day in
    an earlier year."""
    column = contacts.c[ANNIVERSARY_COLUMNS[kind]]
    if conn.dialect.name == "postgresql":
        utc = func.timezone("UTC", column)
        month_day: Any = func.to_char(utc, "MM-DD")
        year: Any = func.to_char(utc, "YYYY")
    else:
        month_day, year = func.strftime("%m-%d", column), func.strftime("%Y", column)
    return and_(month_day == day.strftime("%m-%d"), year < day.strftime("%Y"))


def _days_between(conn: Connection, early: Any, late: Any) -> Any:
    if conn.dialect.name == "postgresql":
        return func.extract("epoch", late - early) / 86400.0
    return func.julianday(late) - func.julianday(early)


def overdue(
    conn: Connection, now: datetime, repurchase_days: int | None = None
) -> ColumnElement[bool]:
    """Past the expected purchase interval: the analytics' ``days_overdue`` when present,
    else the contact's own median interval between orders (set-based, window functions),
    else, for a customer with a single order and a shop ``sector``, the sector's typical
    repurchase interval (``repurchase_days``). At a past instant (:func:`winback.segments.history.in_past`) only the orders up to
    ``now`` and an analysis made by then count."""
    past = in_past()
    o: Any = orders
    if past:
        o = select(orders).where(orders.c.ordered_at <= at(now)).subquery("o")

    def value(row: Any, name: str) -> Any:
        return column_at(name, row, now) if past else row.c[name]

    previous = func.lag(o.c.ordered_at).over(partition_by=o.c.contact_id, order_by=o.c.ordered_at)
    gaps = select(
        o.c.contact_id.label("cid"), _days_between(conn, previous, o.c.ordered_at).label("gap")
    ).subquery()
    ranked = (
        select(
            gaps.c.cid,
            gaps.c.gap,
            func.row_number().over(partition_by=gaps.c.cid, order_by=gaps.c.gap).label("rn"),
            func.count().over(partition_by=gaps.c.cid).label("n"),
        )
        .where(gaps.c.gap.is_not(None))
        .subquery()
    )
    median = (
        select(ranked.c.cid, func.avg(ranked.c.gap).label("median"))
        .where(
            ranked.c.rn.in_([(ranked.c.n + 1) / 2, (ranked.c.n + 2) / 2]),
        )
        .group_by(ranked.c.cid)
        .subquery()
    )
    c2 = contacts.alias("c2")
    by_median = (
        select(median.c.cid)
        .join(c2, c2.c.id == median.c.cid)
        .where(
            value(c2, "days_overdue").is_(None),
            median.c.median > 0,
            _days_between(conn, value(c2, "last_purchase_at"), at(now)) > median.c.median,
        )
    )
    rules: list[ColumnElement[bool]] = [
        value(contacts, "days_overdue") > 0,
        contacts.c.id.in_(by_median),
    ]
    if repurchase_days is not None:
        rules.append(
            and_(
                value(contacts, "days_overdue").is_(None),
                value(contacts, "orders_count") == 1,
                value(contacts, "last_purchase_at") < at(now - timedelta(days=repurchase_days)),
            )
        )
    return or_(*rules)


def _insert_entries(
    conn: Connection,
    flow: RunningFlow,
    candidates: Any,
    now: datetime,
    start: Start | None,
    contact_window: tuple[int, int] | None = None,
) -> int:
    entry = flow.program.definition.entry
    conds: list[ColumnElement[bool]] = [contacts.c.id.in_(candidates)]
    if contact_window is not None:
        conds += [contacts.c.id > contact_window[0], contacts.c.id <= contact_window[1]]
    if in_past():  # a replay enrols only the contacts that existed at ``now``
        conds.append(existed_at(contacts, now))
    if entry.consent:
        name = f"{entry.consent}_consent"
        consent = column_at(name, contacts, now) if in_past() else contacts.c[name]
        conds.append(consent.is_(True))
    prior = fe.alias("prior")
    # One probe of the contact's earlier entries: an active one blocks, and so does any
    # (``never``) or one entered within the re-entry period.
    if entry.reentry == "never":
        blocking: ColumnElement[bool] | None = None
    elif (after := entry.reentry_after) is not None:
        blocking = or_(prior.c.status == "active", prior.c.entered_at > at(now - after))
    else:
        blocking = prior.c.status == "active"
    conds.append(
        ~exists(
            select(literal(1)).where(
                prior.c.flow_id == flow.id,
                prior.c.contact_id == contacts.c.id,
                *([blocking] if blocking is not None else []),
            )
        )
    )
    status: Any = literal("active", String())
    holdout: Any = literal(False)
    path: Any = literal(start.path if start else None, String())
    exit_reason: Any = literal(None, String())
    exited_at: Any = literal(None, UTCDateTime())
    withholding = control.is_marketing(flow.program) and bool(
        conn.execute(select(exists().select_from(control_group))).scalar()
    )
    if withholding:
        # The workspace-wide control group enters held out and leaves at once.
        withheld = control.member(contacts.c.id)
        status = case((withheld, literal("exited", String())), else_=status)
        holdout = case((withheld, literal(True)), else_=holdout)
        path = case((withheld, literal(control.REASON, String())), else_=path)
        exit_reason = case((withheld, literal(control.REASON, String())), else_=exit_reason)
        exited_at = case((withheld, at(now)), else_=exited_at)
    rows = select(
        literal(flow.id),
        contacts.c.id,
        at(now),
        literal(start.step if start else flow.program.first, String()),
        at(now),
        status,
        at(start.wake_at if start else now),
        literal(False),
        holdout,
        path,
        exit_reason,
        exited_at,
    ).where(and_(*conds))
    # The entries made below are those above this id (with ``start``: see the end).
    before = int(conn.execute(select(func.max(fe.c.id))).scalar() or 0) if start else 0
    if conn.dialect.name == "postgresql":
        _no_self_scan_nested_loop(conn)
    result = conn.execute(
        insert(fe)
        .from_select(
            [
                "flow_id",
                "contact_id",
                "entered_at",
                "step",
                "step_at",
                "status",
                "wake_at",
                "waiting",
                "holdout",
                "path",
                "exit_reason",
                "exited_at",
            ],
            rows,
        )
        .execution_options(preserve_rowcount=True)
    )
    entered = int(result.rowcount or 0)
    if start is not None and entered:
        # ``flow_id + 0``: the rows just made are read by id range (primary key).
        new = and_(
            fe.c.flow_id + 0 == flow.id,
            fe.c.id > before,
            fe.c.step == start.step,
            fe.c.status == "active",
        )
        start.queue(conn, new)
        took = entered
        if withholding:  # the withheld entries did not take the step
            took = int(conn.execute(select(func.count()).where(new)).scalar_one())
        count_outcome(conn, flow.id, start.node.id, start.outcome, took)
    return entered


#: Below this many estimated rows in ``flow_entries``, PostgreSQL is kept off nested loops
#: for the enrolment (see :func:`_no_self_scan_nested_loop`).
SMALL_ESTIMATE = 100_000


def _no_self_scan_nested_loop(conn: Connection) -> None:
    """The enrolment's check of earlier entries is an anti-join against ``flow_entries``,
    the table being inserted into. While PostgreSQL believes that table small (empty or
    never analyzed) it picks a nested loop that scans it sequentially for every candidate,
    and each scan also reads the rows the statement has inserted so far: quadratic in the
    enrolment (minutes for 200,000 contacts). A hash anti-join reads it once, before the
    first insert. Only for that case, and only for this transaction (``SET LOCAL``): on a
    table the statistics know to be large, index probes stay the better plan."""
    estimate = conn.execute(
        text("SELECT reltuples FROM pg_class WHERE oid = 'flow_entries'::regclass")
    ).scalar()
    if estimate is None or estimate < SMALL_ESTIMATE:
        conn.execute(text("SET LOCAL enable_nestloop = off"))


def last_firing(
    schedule: m.Schedule, since: datetime | None, now: datetime, default_timezone: str
) -> date | None:
    """The local date of the last scheduled instant in ``(since, now]`` (None: none)."""
    if since is None:
        return None
    tz = zone_or_default(None, default_timezone)
    hour, minute = (int(p) for p in schedule.at.split(":"))
    day = now.astimezone(tz).date()
    first = max(since.astimezone(tz).date(), day - timedelta(days=400))
    while day >= first:
        instant = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)
        if since < instant <= now and _matches(schedule, day):
            return day
        day -= timedelta(days=1)
    return None


def _matches(schedule: m.Schedule, day: date) -> bool:
    if schedule.every == "day":
        return True
    if schedule.every is not None and WEEKDAYS[day.weekday()] == schedule.every:
        return True
    for item in schedule.dates:
        if item == day.isoformat() or item == day.strftime("%m-%d"):
            return True
    return False
