"""Back-fill: when a flow whose trigger is an event (or a tag added) is enabled with a
look-back window, the contacts whose qualifying event falls inside the window enter as if
the flow had been on, each at the step their timing calls for.

Each candidate's *moment zero* ``t0`` is the time of its latest qualifying event in the
window. The flow is walked from its first step, adding up the waits: a step's moment is
``t0 + offset``. Along the walk:

- ``wait``: the offset grows by the wait;
- ``send``: a contact for whom the send's moment has not passed by more than ``late_by``
  enters there (due at that moment, or at once when it is just past); for the others the
  send is skipped (recorded as ``<step>=late`` in the path) and the walk goes on;
- ``if``: a contact whose moment has not come yet enters at the ``if``; for the others the
  condition is evaluated now and the walk goes on along ``then`` or ``else``;
- ``wait_for`` reached without skipping a message: a contact whose moment has not come
  enters there; the others are parked in it as if since their moment (``step_at``), timed
  out at ``t0 + offset + timeout``, unless that timeout passed more than ``late_by`` ago
  (then they do not enter): the event, or its absence, is judged over the real interval;
- any other step (tags, attributes, a ``wait_for`` after a skipped message ...): the
  contact enters there when its moment has not passed by more than ``late_by``, else not
  at all;
- an ``exit`` or the end of the flow: the contact does not enter.

The walk yields *placements*: a step, its offset, a range of ``t0`` and the ``if``
conditions that lead there. Each placement is one ``INSERT ... SELECT`` of the candidates
in its range, in the transaction that enables the flow: a crash rolls it all back, and a
contact already entered at or after its ``t0`` (an earlier back-fill, the trigger itself)
is never entered again for the same event.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    Connection,
    Interval,
    String,
    exists,
    false,
    func,
    insert,
    literal,
    or_,
    select,
)
from sqlalchemy.sql.elements import ColumnElement

from winback.errors import DefinitionError
from winback.flows import models as m
from winback.flows._sql import PATH_SEPARATOR, at, fe, json_equals, path_token
from winback.flows.conditions import compile_sql
from winback.flows.program import Program
from winback.store.schema import contacts, events, orders, tag_history

#: How late a back-filled message may still go out when no ``late_by`` is given.
DEFAULT_LATE_BY = timedelta(days=1)
#: A back-filled entry's ``entered_at``, after its qualifying event.
ENTERED_AFTER = timedelta(seconds=1)


@dataclass(frozen=True)
class Placement:
    """Where the candidates whose age (enable time - ``t0``) is in ``[low, high)`` (None:
    unbounded) and that meet ``conditions`` (``(condition, location, holds)``) enter: at
    ``step``, due at ``t0 + offset``, with ``path`` (the steps skipped or decided on the
    way); ``parked``: waiting in a ``wait_for`` until ``t0 + offset + parked``."""

    step: str
    offset: timedelta
    low: timedelta | None
    high: timedelta | None
    conditions: tuple[tuple[Any, str, bool], ...] = ()
    path: tuple[str, ...] = ()
    parked: timedelta | None = None


@dataclass(frozen=True)
class _Reach:
    """The candidates a walk has brought to a step: their ages ``[low, high)``, the step's
    offset, the ``if`` conditions on the way, the path so far, and whether a message was
    skipped on the way."""

    offset: timedelta = timedelta(0)
    low: timedelta | None = None
    high: timedelta | None = None
    conds: tuple[tuple[Any, str, bool], ...] = ()
    path: tuple[str, ...] = ()
    skipped: bool = False

    def older_than(self, age: timedelta) -> _Reach:
        return replace(self, low=age if self.low is None else max(self.low, age))


def plan(program: Program, late_by: timedelta = DEFAULT_LATE_BY) -> list[Placement]:
    """The placements of a back-fill. Ranges are of ``age = enable time - t0``: a
    placement takes the candidates with ``low <= age < high``."""
    placements: list[Placement] = []
    _visit(program, late_by, program.first, _Reach(), placements)
    return placements


def _visit(
    program: Program,
    late_by: timedelta,
    node_id: str | None,
    r: _Reach,
    out: list[Placement],
) -> None:
    """Walk from ``node_id`` for the candidates of ``r``."""
    if node_id is None or (r.low is not None and r.high is not None and r.low >= r.high):
        return
    node = program.nodes[node_id]
    kind = node.step_kind
    if kind is None or kind.exit is not None:
        return

    def place(low: timedelta | None, high: timedelta, parked: timedelta | None = None) -> None:
        lo = low if r.low is None else (r.low if low is None else max(r.low, low))
        hi = high if r.high is None else min(r.high, high)
        if lo is None or lo < hi:
            out.append(Placement(node.id, r.offset, lo, hi, r.conds, r.path, parked))

    # Up to ``due`` the step's moment is still ahead; up to ``late`` it is not too late.
    due, late = r.offset, r.offset + late_by
    if kind.delay is not None:
        onward = replace(r, offset=r.offset + kind.delay(node.step))
        _visit(program, late_by, node.next, onward, out)
    elif node.kind == "send":
        place(None, late)
        skip = replace(r.older_than(late), path=(*r.path, path_token(node.id, "late")))
        _visit(program, late_by, node.next, replace(skip, skipped=True), out)
    elif node.kind == "if":
        place(None, due)
        for holds, first, arm in (
            (True, node.then_first, "then"),
            (False, node.else_first, "else"),
        ):
            branch = replace(
                r.older_than(due),
                conds=(*r.conds, (node.step.if_, node.id, holds)),
                path=(*r.path, path_token(node.id, arm)),
            )
            _visit(program, late_by, first, branch, out)
    elif node.kind == "wait_for" and not r.skipped:
        timeout = node.step.wait_for.timeout
        place(None, due)
        place(due, r.offset + timeout + late_by, parked=timeout)
    else:
        place(None, late)


def shifted(conn: Connection, instant: ColumnElement[Any], delta: timedelta) -> Any:
    """``instant + delta`` in SQL (whole seconds), kept in the store's instant format."""
    if not delta:
        return instant
    if conn.dialect.name == "postgresql":
        return instant + literal(delta, Interval())
    seconds = int(delta.total_seconds())
    # SQLite keeps instants as fixed-width text; the fraction of the second is carried over.
    return func.strftime("%Y-%m-%d %H:%M:%S", instant, f"{seconds:+d} seconds").op("||")(
        func.substr(instant, 20)
    )


def candidates(
    conn: Connection, trigger: Any, since: datetime, now: datetime, *, path: str = ""
) -> Any:
    """Per contact, the time of its latest qualifying event in ``(since, now]``: a
    subquery with columns ``contact_id`` and ``t0``."""
    if isinstance(trigger, m.TagAddedTrigger):
        th = tag_history
        conds: list[Any] = [th.c.tag == trigger.tag_added, th.c.action == "added"]
        table, column = th, th.c.at
    elif isinstance(trigger, m.EventTrigger) and trigger.filter.type == "purchase":
        table, column, conds = orders, orders.c.ordered_at, []
    elif isinstance(trigger, m.EventTrigger):
        spec = trigger.filter
        conds = [events.c.type == spec.type]
        conds += [json_equals(conn, events.c.properties, k, v) for k, v in spec.where.items()]
        table, column = events, events.c.occurred_at
    else:
        raise DefinitionError(
            "back-fill needs a trigger that is an event or a tag added (a segment-entry "
            "flow says whether current members enter with `include_existing`)",
            path=path,
            location="trigger",
        )
    return (
        select(table.c.contact_id.label("contact_id"), func.max(column).label("t0"))
        .where(*conds, column > at(since), column <= at(now))
        .group_by(table.c.contact_id)
        .subquery("backfill_candidates")
    )


def backfill(
    conn: Connection,
    flow_id: int,
    program: Program,
    now: datetime,
    window: timedelta,
    late_by: timedelta | None = None,
) -> int:
    """Enter the flow's back-fill candidates of the last ``window`` before ``now``, in
    the caller's transaction; returns how many entered."""
    definition = program.definition
    late = late_by if late_by is not None else definition.entry.late_by or DEFAULT_LATE_BY
    shown = f"flows/{program.key}.yaml"
    cand = candidates(conn, definition.trigger, now - window, now, path=shown)
    entered = 0
    for placement in plan(program, late):
        entered += _insert(conn, flow_id, program, cand, placement, now)
    return entered


def _insert(
    conn: Connection, flow_id: int, program: Program, cand: Any, p: Placement, now: datetime
) -> int:
    entry = program.definition.entry
    t0 = cand.c.t0
    # Entered just after the event, as the trigger would have: "since entry" conditions do
    # not count the qualifying event itself.
    entered = shifted(conn, t0, ENTERED_AFTER)
    conds: list[Any] = [contacts.c.id == cand.c.contact_id]
    # age = now - t0 in [low, high)  <=>  now - high < t0 <= now - low
    if p.high is not None:
        conds.append(t0 > at(now - p.high))
    if p.low is not None:
        conds.append(t0 <= at(now - p.low))
    if entry.consent:
        conds.append(contacts.c[f"{entry.consent}_consent"].is_(True))
    for condition, location, holds in p.conditions:
        sql = compile_sql(
            condition,
            now=now,
            contact_id=cand.c.contact_id,
            entered_at=entered,
            path=f"flows/{program.key}.yaml",
            location=f"{location}.if",
        )
        conds.append(sql if holds else ~func.coalesce(sql, false(), type_=Boolean))
    conds.append(~exists(_blocking(conn, flow_id, entry, t0)))
    moment = shifted(conn, t0, p.offset)
    wake = shifted(conn, t0, p.offset + p.parked) if p.parked is not None else moment
    rows = select(
        literal(flow_id),
        cand.c.contact_id,
        entered,
        literal(p.step, String()),
        moment,
        literal("active", String()),
        wake,
        literal(p.parked is not None),
        literal(False),
        literal(PATH_SEPARATOR.join(p.path) or None, String()),
    ).where(*conds)
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
            ],
            rows,
        )
        .execution_options(preserve_rowcount=True)
    )
    return int(result.rowcount or 0)


def _blocking(conn: Connection, flow_id: int, entry: m.Entry, t0: Any) -> Any:
    """An earlier entry of the contact that keeps it out: one in progress, one entered at
    or after ``t0`` (the same event already counted), or the flow's re-entry rule
    applied at ``t0``."""
    prior = fe.alias("prior")
    rule: list[ColumnElement[bool]] = [prior.c.status == "active", prior.c.entered_at >= t0]
    if entry.reentry == "never":
        rule = []
    elif entry.reentry_after is not None:
        rule.append(prior.c.entered_at > shifted(conn, t0, -entry.reentry_after))
    probe = select(literal(1)).where(
        prior.c.flow_id == flow_id, prior.c.contact_id == contacts.c.id
    )
    return probe.where(or_(*rule)) if rule else probe


def describe(placements: list[Placement]) -> Iterator[str]:
    """One line per placement (``winback flows show`` and tests)."""
    for p in placements:
        where = f"age in [{p.low or timedelta(0)}, {p.high if p.high is not None else 'inf'})"
        parked = f", parked until +{p.offset + p.parked}" if p.parked is not None else ""
        yield f"{p.step} at +{p.offset} for {where}{parked}"


__all__ = ["DEFAULT_LATE_BY", "Placement", "backfill", "describe", "plan", "shifted"]
