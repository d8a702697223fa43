"""A flow's results: per group (treatment, holdout, control), step and variant, counts and
rates with their denominators; the lift over the holdout and over the workspace-wide
control group (:mod:`winback.analytics.lift`); the A/B status of every ``split`` step and
of every send with variants (:func:`winback.analytics.sequential.decide`, applied at each
day's look so that a declared winner stands). The figures are counted by
:mod:`winback.results.attribution`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Connection, Engine, select

from winback.analytics.lift import conversion_lift, revenue_lift
from winback.analytics.sequential import Counts, WinnerRule, decide
from winback.config import Settings
from winback.flows import models as m
from winback.flows.labels import step_labels
from winback.flows.program import Program, compile_program, parse_definition
from winback.results.attribution import (
    GROUPS,
    GroupCounts,
    Scope,
    arm_counts,
    arm_days,
    buyer_revenue,
    entry_results,
    group_counts,
    message_counts,
    split_arms,
    variant_arms,
)
from winback.store.schema import segments

if TYPE_CHECKING:
    from winback.workspace import Workspace

#: Per message: rate name -> (numerator, denominator).
MESSAGE_RATES = {
    "delivery_rate": ("delivered", "sent"),
    "bounce_rate": ("bounced", "sent"),
    "open_rate": ("opened", "delivered"),
    "machine_open_rate": ("machine_opened", "delivered"),
    "click_rate": ("clicked", "delivered"),
    "click_to_open_rate": ("clicked", "opened"),
    "unsubscribe_rate": ("unsubscribed", "delivered"),
    "complaint_rate": ("complained", "delivered"),
    "reactivation_rate": ("reactivated", "delivered"),
    "order_rate": ("orders", "delivered"),
    "revenue_per_delivered": ("revenue", "delivered"),
}
#: Per group, branch or variant of entries.
GROUP_RATES = {
    "conversion_rate": ("converted", "contacts"),
    "reactivation_rate": ("reactivated", "contacts"),
    "revenue_per_contact": ("revenue", "contacts"),
}


def rate(counts: Mapping[str, Any], numerator: str, denominator: str) -> dict[str, Any]:
    """A rate with what it divides: ``{"rate", "count", "denominator", "of"}``; the rate is
    None when the denominator is 0."""
    n, d = counts[numerator], counts[denominator]
    return {
        "rate": (n / d) if d else None,
        "count": n,
        "denominator": denominator,
        "of": d,
    }


def _with_rates(counts: Any, rates: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
    data = asdict(counts)
    data["rates"] = {name: rate(data, a, b) for name, (a, b) in rates.items()}
    return data


@dataclass
class FlowResults:
    flow: str
    name: str
    as_of: datetime
    since: datetime | None
    until: datetime | None
    rule: dict[str, Any]
    groups: dict[str, GroupCounts]
    steps: list[dict[str, Any]]
    branches: list[dict[str, Any]]
    variants: list[dict[str, Any]]
    lift: dict[str, dict[str, Any] | None]
    experiments: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "name": self.name,
            "as_of": self.as_of,
            "since": self.since,
            "until": self.until,
            "rule": self.rule,
            "groups": [{"group": g, **_with_rates(c, GROUP_RATES)} for g, c in self.groups.items()],
            "lift": self.lift,
            "steps": self.steps,
            "branches": self.branches,
            "variants": self.variants,
            "experiments": self.experiments,
        }


def _lift(
    settings: Settings,
    treatment: GroupCounts,
    control: GroupCounts,
    revenue: tuple[Sequence[float], Sequence[float]],
) -> dict[str, Any] | None:
    """Treatment against one comparison group, or None when that group is empty."""
    if control.contacts == 0 or treatment.contacts == 0:
        return None
    threshold = settings.lift_max_relative_mde
    conv = conversion_lift(
        treatment.converted,
        treatment.contacts,
        control.converted,
        control.contacts,
        max_relative_mde=threshold,
    )
    arrays = []
    for values, n in zip(revenue, (treatment.contacts, control.contacts), strict=True):
        a = np.zeros(n)
        a[: len(values)] = values
        arrays.append(a)
    rev = revenue_lift(arrays[0], arrays[1], max_relative_mde=threshold)
    return {"conversion": conv.as_dict(), "revenue_per_contact": rev.as_dict()}


def _looks(days: Mapping[str, list[tuple[int, int, int]]]) -> list[Counts]:
    """Cumulative (conversions, entries) per arm at the end of each day."""
    last = max((d for rows in days.values() for d, _, _ in rows), default=-1)
    looks: list[Counts] = []
    totals = {arm: [0, 0] for arm in days}
    by_day = {arm: {d: (e, c) for d, e, c in rows} for arm, rows in days.items()}
    for day in range(last + 1):
        for arm, rows in by_day.items():
            e, c = rows.get(day, (0, 0))
            totals[arm][0] += c
            totals[arm][1] += e
        looks.append({arm: (s, n) for arm, (s, n) in totals.items()})
    return looks


def experiment(
    step: str,
    label: str,
    kind: str,
    arms: list[str],
    days: dict[tuple[str, str], list[tuple[int, int, int]]],
    rule: WinnerRule,
) -> dict[str, Any]:
    """The winner rule on one A/B test, applied at every day's look."""
    looks = _looks({arm: days.get((step, arm), []) for arm in arms})
    if not looks:
        looks = [{arm: (0, 0) for arm in arms}]
    decision = decide(looks[-1], rule=rule, history=looks[:-1])
    status = f"winner: {decision.winner}" if decision.winner else "no winner yet"
    return {
        "step": step,
        "name": label,
        "kind": kind,
        "status": status,
        "winner": decision.winner,
        "reason": decision.reason,
        "decision": decision.as_dict(),
    }


def entry_segment(conn: Connection, definition: m.FlowDefinition) -> int | None:
    trigger = definition.trigger
    if not isinstance(trigger, m.SegmentEntryTrigger):
        return None
    found = conn.execute(
        select(segments.c.id).where(segments.c.name == trigger.segment_entry)
    ).scalar()
    return int(found) if found is not None else None


def compute(
    engine: Engine,
    settings: Settings,
    program: Program,
    flow_id: int,
    *,
    as_of: datetime,
    since: datetime | None = None,
    until: datetime | None = None,
) -> FlowResults:
    """The results of ``program`` (the flow stored under ``flow_id``) as of ``as_of``, for
    the entries that entered in ``[since, until)``."""
    labels = step_labels(program)
    splits = {
        n.id: [name for name, _, _ in n.branches] for n in program.ordered() if n.kind == "split"
    }
    rule = WinnerRule.from_settings(settings)
    with engine.connect() as conn:
        scope = Scope(
            flow_id=flow_id,
            flow_key=program.key,
            as_of=as_of,
            attribution_days=settings.attribution_window_days,
            conversion_days=settings.conversion_window_days,
            since=since,
            until=until,
            entry_segment_id=entry_segment(conn, program.definition),
        )
        dialect = conn.dialect.name
        with entry_results(conn, scope) as entries:
            groups = group_counts(conn, scope, entries)
            revenue = buyer_revenue(conn, scope, entries)
            messages = message_counts(conn, scope, entries)
            split_rows = split_arms(dialect, scope, splits, entries)
            branch = arm_counts(conn, split_rows) if split_rows is not None else {}
            branch_days = arm_days(conn, split_rows) if split_rows is not None else {}
            v_rows = variant_arms(dialect, scope, entries)
            variant = arm_counts(conn, v_rows)
            variant_days = arm_days(conn, v_rows)
    treatment = groups["treatment"]
    lift = {
        other: _lift(settings, treatment, groups[other], (revenue["treatment"], revenue[other]))
        for other in GROUPS[1:]
    }
    order = {sid: i for i, sid in enumerate(labels)}
    steps = [
        {
            "step": sid,
            "name": labels.get(sid, sid),
            "variant": v,
            **_with_rates(c, MESSAGE_RATES),
        }
        for (sid, v), c in sorted(
            messages.items(), key=lambda kv: (order.get(kv[0][0], len(order)), kv[0][1] or "")
        )
    ]
    branches = [
        {"step": sid, "name": labels[sid], "branch": b,
         **_with_rates(branch.get((sid, b), GroupCounts()), GROUP_RATES)}
        for sid, names in splits.items()
        for b in names
    ]  # fmt: skip
    variants = [
        {"step": sid, "name": labels.get(sid, sid), "variant": v, **_with_rates(c, GROUP_RATES)}
        for (sid, v), c in sorted(variant.items(), key=lambda kv: (order.get(kv[0][0], 0), kv[0][1]))
    ]  # fmt: skip
    experiments = [
        experiment(sid, labels[sid], "split", names, branch_days, rule)
        for sid, names in splits.items()
    ]
    sends = sorted({sid for sid, _ in variant}, key=lambda s: order.get(s, len(order)))
    experiments += [
        experiment(sid, labels.get(sid, sid), "variants",
                   sorted(v for s, v in variant if s == sid), variant_days, rule)
        for sid in sends
    ]  # fmt: skip
    return FlowResults(
        flow=program.key,
        name=program.name,
        as_of=as_of,
        since=since,
        until=until,
        rule={
            "attribution": "last touch, per flow",
            "attribution_window_days": settings.attribution_window_days,
            "conversion_window_days": settings.conversion_window_days,
        },
        groups=groups,
        steps=steps,
        branches=branches,
        variants=variants,
        lift=lift,
        experiments=experiments,
    )


def flow_results(
    ws: Workspace,
    flow: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    as_of: datetime | None = None,
) -> FlowResults:
    """The results of a workspace's flow (key or name) as of ``as_of`` (default: now)."""
    row = ws.flows._row(flow)
    program = compile_program(row.key, parse_definition(row.definition, path=row.key))
    return compute(
        ws.engine,
        ws.settings,
        program,
        int(row.id),
        as_of=as_of or ws.clock.now(),
        since=since,
        until=until,
    )


__all__ = ["FlowResults", "compute", "entry_segment", "flow_results", "rate"]
