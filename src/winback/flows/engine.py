"""The flow engine: advance every contact that is due, in sets.

For each enabled flow and each step, due entries (``status='active'``, ``wake_at <= now``)
are taken in batches of ids; each batch is one transaction that checks the goals in scope,
performs the step's effect for the whole batch (outbox rows, tags, attributes) and moves the
entries on, all with a few set-based SQL statements. Messages are only *written* here, to
the outbox under the unique key ``<flow>:<entry id>:<step id>`` with ``ON CONFLICT DO
NOTHING``, in the same transaction as the move: a crash at any point either loses the whole
batch (redone on restart) or keeps all of it, so every message is queued exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import (
    Connection,
    Engine,
    String,
    and_,
    case,
    cast,
    delete,
    exists,
    false,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.sql.elements import ColumnElement

from winback.flows import models as m
from winback.flows._sql import (
    Rule,
    at,
    event_happened,
    fe,
    has_consent,
    set_attribute_value,
    stable_uniform,
    transition,
    upsert_insert,
)
from winback.flows.conditions import compile_sql
from winback.flows.program import Node, Program
from winback.store.schema import contact_tags, contacts, outbox, suppressions, tag_history

DEFAULT_BATCH = 50_000


@dataclass
class RunningFlow:
    """A flow as the engine sees it: its row id, program and trigger watermark."""

    id: int
    program: Program
    watermark_id: int | None = None
    watermark_at: datetime | None = None


@dataclass
class TickReport:
    enrolled: dict[str, int] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)
    rounds: int = 0
    #: Flow files that could not be loaded (their stored version kept running).
    errors: list[str] = field(default_factory=list)

    @property
    def contact_steps(self) -> int:
        return sum(self.steps.values())

    @property
    def total_enrolled(self) -> int:
        return sum(self.enrolled.values())


class StepRunner:
    """Advances the due entries of running flows. Knows nothing of files, CLI or delivery."""

    def __init__(
        self, engine: Engine, *, default_timezone: str = "UTC", batch_size: int = DEFAULT_BATCH
    ) -> None:
        self.engine = engine
        self.default_timezone = default_timezone
        self.batch_size = batch_size

    # -- public -----------------------------------------------------------------------------
    def advance(self, flows: Iterable[RunningFlow], now: datetime, report: TickReport) -> int:
        moved = 0
        for flow in flows:
            for node in flow.program.ordered():
                n = self._advance_node(flow, node, now)
                if node.kind == "wait_for":
                    n += self._resolve_waiting(flow, node, now)
                if n:
                    key = f"{flow.program.key}:{node.id}"
                    report.steps[key] = report.steps.get(key, 0) + n
                moved += n
        return moved

    # -- batching ---------------------------------------------------------------------------
    def _due(self, flow: RunningFlow, node: Node, now: datetime) -> ColumnElement[bool]:
        return and_(
            fe.c.flow_id == flow.id,
            fe.c.status == "active",
            fe.c.step == node.id,
            fe.c.wake_at <= at(now),
            fe.c.waiting.is_(False),
        )

    def _advance_node(self, flow: RunningFlow, node: Node, now: datetime) -> int:
        """Due entries at ``node`` in windows of ``batch_size`` ids, one transaction each."""
        due = self._due(flow, node, now)
        with self.engine.connect() as conn:
            low, high = conn.execute(select(func.min(fe.c.id), func.max(fe.c.id)).where(due)).one()
        if low is None:
            return 0
        total = 0
        start = int(low)
        while start <= int(high):
            end = start + self.batch_size - 1
            with self.engine.begin() as conn:
                batch = and_(due, fe.c.id >= start, fe.c.id <= end)
                total += self._check_goals(conn, flow, node, batch, now)
                total += self._run(conn, flow, node, batch, now)
            start = end + 1
        return total

    def _t(
        self,
        flow: RunningFlow,
        conn: Connection,
        *,
        batch: Any,
        node_id: str,
        now: datetime,
        rules: list[Rule],
        log: bool = True,
    ) -> int:
        """:func:`transition`, with moves onto plain ``wait`` steps taken through at once: the
        entry goes straight to the step after the wait with ``wake_at`` at the wait's end
        (one statement less per wait; goals are checked before that next step)."""
        for rule in rules:
            if rule.target is None or rule.wake_at is not None or rule.waiting:
                continue
            exit_node = flow.program.nodes[rule.target]
            if exit_node.kind == "exit" and not exit_node.goals:
                # Going to an exit step: exit now, with its reason.
                rule.target, rule.exit_reason = None, exit_node.step.exit
                continue
            target, delay, fused = flow.program.nodes[rule.target], timedelta(0), False
            while target.kind == "wait" and target.next is not None:
                delay += target.step.wait
                target, fused = flow.program.nodes[target.next], True
            if fused:
                rule.target, rule.wake_at = target.id, now + delay
        return transition(conn, batch=batch, node_id=node_id, now=now, rules=rules, log=log)

    def _check_goals(
        self, conn: Connection, flow: RunningFlow, node: Node, batch: Any, now: datetime
    ) -> int:
        if not node.goals:
            return 0
        rules = [
            Rule(
                outcome=f"goal:{goal.reason}",
                target=None,
                exit_reason=goal.reason,
                when=self._condition(goal.condition, now, flow, f"goal[{i}]"),
            )
            for i, goal in enumerate(node.goals)
        ]
        met = or_(*[r.when for r in rules if r.when is not None])
        return self._t(flow, conn, batch=and_(batch, met), node_id=node.id, now=now, rules=rules)

    def _condition(self, data: Any, now: datetime, flow: RunningFlow, where: str) -> Any:
        return compile_sql(
            data,
            now=now,
            contact_id=fe.c.contact_id,
            entered_at=fe.c.entered_at,
            path=f"flows/{flow.program.key}.yaml",
            location=where,
        )

    # -- steps ------------------------------------------------------------------------------
    def _run(
        self, conn: Connection, flow: RunningFlow, node: Node, batch: Any, now: datetime
    ) -> int:
        step = node.step
        go = node.next
        if node.kind == "end":
            rule = Rule("completed", None)
            return self._t(
                flow, conn, batch=batch, node_id=node.id, now=now, rules=[rule], log=False
            )
        if isinstance(step, m.SendStep):
            return self._send(conn, flow, node, step.send, batch, now)
        if isinstance(step, m.WaitStep):
            rule = Rule("waited", go, wake_at=now + step.wait)
            return self._t(
                flow, conn, batch=batch, node_id=node.id, now=now, rules=[rule], log=False
            )
        if isinstance(step, m.WaitUntilStep):
            return self._wait_until(flow, conn, node, step.wait_until.local_time, batch, now)
        if isinstance(step, m.WaitForStep):
            rule = Rule("waiting", node.id, wake_at=now + step.wait_for.timeout, waiting=True)
            return self._t(flow, conn, batch=batch, node_id=node.id, now=now, rules=[rule])
        if isinstance(step, m.IfStep):
            cond = self._condition(step.if_, now, flow, node.id)
            rules = [Rule("then", node.then_first, when=cond), Rule("else", node.else_first)]
            return self._t(flow, conn, batch=batch, node_id=node.id, now=now, rules=rules)
        if isinstance(step, m.AddTagStep):
            self._add_tag(conn, flow, step.add_tag, batch, now)
            return self._t(
                flow, conn, batch=batch, node_id=node.id, now=now, rules=[Rule("tagged", go)]
            )
        if isinstance(step, m.RemoveTagStep):
            self._remove_tag(conn, flow, step.remove_tag, batch, now)
            return self._t(
                flow, conn, batch=batch, node_id=node.id, now=now, rules=[Rule("untagged", go)]
            )
        if isinstance(step, m.SetAttributeStep):
            attr = step.set_attribute
            conn.execute(
                update(contacts)
                .where(contacts.c.id.in_(select(fe.c.contact_id).where(batch)))
                .values(
                    {
                        contacts.c.attributes: set_attribute_value(conn, attr.name, attr.value),
                        contacts.c.updated_at: at(now),
                    }
                )
            )
            return self._t(
                flow, conn, batch=batch, node_id=node.id, now=now, rules=[Rule("set", go)]
            )
        if isinstance(step, m.SuppressStep):
            address = contacts.c.email if step.suppress == "email" else contacts.c.phone
            chosen = select(
                literal(step.suppress),
                func.lower(address) if step.suppress == "email" else address,
                contacts.c.id,
                literal("flow"),
                literal(f"suppressed by flow {flow.program.key}"),
                at(now),
            ).where(
                contacts.c.id.in_(select(fe.c.contact_id).where(batch)),
                address.is_not(None),
                address != "",
            )
            conn.execute(
                upsert_insert(conn, suppressions)
                .from_select(
                    ["channel", "address", "contact_id", "reason", "detail", "created_at"], chosen
                )
                .on_conflict_do_nothing(index_elements=["channel", "address"])
            )
            return self._t(
                flow, conn, batch=batch, node_id=node.id, now=now, rules=[Rule("suppressed", go)]
            )
        if isinstance(step, m.DeleteContactStep):  # GDPR-style erasure (winback.erasure)
            from winback.erasure import erase_contacts

            erase_contacts(
                conn,
                select(fe.c.contact_id).where(batch),
                at=now,
                source=f"flow:{flow.program.key}",
                reason=step.delete_contact.reason,
                keep_flow_id=flow.id,
            )
            return self._t(
                flow, conn, batch=batch, node_id=node.id, now=now, rules=[Rule("deleted", go)]
            )
        if isinstance(step, m.GoalStep):
            return self._t(
                flow,
                conn,
                batch=batch,
                node_id=node.id,
                now=now,
                rules=[Rule("goal", go)],
                log=False,
            )
        if isinstance(step, m.SplitStep):
            u = stable_uniform(fe.c.id, f"{flow.program.key}:{node.id}")
            total = sum(w for _, w, _ in node.branches)
            rules, cum = [], 0.0
            for i, (name, weight, first) in enumerate(node.branches):
                cum += weight / total
                last = i == len(node.branches) - 1
                rules.append(
                    Rule(
                        f"branch:{name}",
                        first,
                        when=None if last else u < cum,
                        values={"branch": name},
                    )
                )
            return self._t(flow, conn, batch=batch, node_id=node.id, now=now, rules=rules)
        if isinstance(step, m.HoldoutStep):
            u = stable_uniform(fe.c.id, f"{flow.program.key}:{node.id}")
            rules = [
                Rule("holdout", go, when=u < step.holdout.share, values={"holdout": True}),
                Rule("treatment", go),
            ]
            return self._t(flow, conn, batch=batch, node_id=node.id, now=now, rules=rules)
        if isinstance(step, m.ExitStep):
            rule = Rule(step.exit, None, exit_reason=step.exit)
            return self._t(flow, conn, batch=batch, node_id=node.id, now=now, rules=[rule])
        raise AssertionError(f"unknown step kind {node.kind}")  # pragma: no cover

    def _send(
        self,
        conn: Connection,
        flow: RunningFlow,
        node: Node,
        send: m.Send,
        batch: Any,
        now: datetime,
    ) -> int:
        consent = has_consent(send.channel, fe.c.contact_id)
        variants = send.variants or [m.Variant(name="", template=send.template or "", weight=1)]
        u = stable_uniform(fe.c.id, f"{flow.program.key}:{node.id}:variant")
        total = sum(v.weight for v in variants)
        bounds, cum = [], 0.0
        for v in variants:
            cum += v.weight / total
            bounds.append(cum)
        if len(variants) == 1:
            template: Any = literal(variants[0].template, String())
            variant: Any = literal(variants[0].name or None, String())
        else:
            whens = [(u < b, v) for b, v in zip(bounds[:-1], variants[:-1], strict=True)]
            template = case(
                *[(w, literal(v.template)) for w, v in whens], else_=variants[-1].template
            )
            variant = case(*[(w, literal(v.name)) for w, v in whens], else_=variants[-1].name)
        dedup = (
            literal(f"{flow.program.key}:", String())
            + cast(fe.c.id, String())
            + literal(f":{node.id}", String())
        )
        rows = select(
            dedup,
            fe.c.contact_id,
            literal(send.channel, String()),
            template,
            variant,
            literal(flow.program.key, String()),
            fe.c.id,
            literal(node.id, String()),
            literal(send.priority, String()),
            literal("pending", String()),
            at(now),
            literal(0),
            at(now),
        ).where(batch, consent, *([fe.c.holdout.is_(False)] if flow.program.has_holdout else []))
        stmt = (
            upsert_insert(conn, outbox)
            .from_select(
                [
                    "dedup_key",
                    "contact_id",
                    "channel",
                    "template",
                    "variant",
                    "flow",
                    "entry_id",
                    "step",
                    "priority",
                    "status",
                    "not_before",
                    "attempts",
                    "created_at",
                ],
                rows,
            )
            .on_conflict_do_nothing(index_elements=["dedup_key"])
        )
        conn.execute(stmt)
        rules = []
        if flow.program.has_holdout:
            rules.append(Rule("holdout", node.next, when=fe.c.holdout.is_(True)))
        if send.channel in ("email", "sms", "push"):
            rules.append(Rule("no_consent", node.next, when=~consent))
        for i, v in enumerate(variants):
            last = i == len(variants) - 1
            outcome = f"queued:{v.name}" if v.name else "queued"
            rules.append(Rule(outcome, node.next, when=None if last else u < bounds[i]))
        return self._t(flow, conn, batch=batch, node_id=node.id, now=now, rules=rules)

    def _wait_until(
        self,
        flow: RunningFlow,
        conn: Connection,
        node: Node,
        local_time: str,
        batch: Any,
        now: datetime,
    ) -> int:
        zones = {
            z
            for (z,) in conn.execute(
                select(contacts.c.timezone)
                .distinct()
                .where(contacts.c.id.in_(select(fe.c.contact_id).where(batch)))
            )
        }
        tz_of = (
            select(contacts.c.timezone)
            .where(contacts.c.id == fe.c.contact_id)
            .correlate(fe)
            .scalar_subquery()
        )
        rules = []
        for zone in sorted(z for z in zones if z):
            wake = next_local_time(now, local_time, zone, self.default_timezone)
            rules.append(Rule("waited", node.next, when=tz_of == zone, wake_at=wake))
        fallback = next_local_time(now, local_time, None, self.default_timezone)
        rules.append(Rule("waited", node.next, wake_at=fallback))
        return self._t(flow, conn, batch=batch, node_id=node.id, now=now, rules=rules, log=False)

    def _resolve_waiting(self, flow: RunningFlow, node: Node, now: datetime) -> int:
        step = node.step
        assert isinstance(step, m.WaitForStep)
        spec = step.wait_for.filter
        with self.engine.begin() as conn:
            waiting = and_(
                fe.c.flow_id == flow.id,
                fe.c.status == "active",
                fe.c.step == node.id,
                fe.c.waiting.is_(True),
            )
            happened = event_happened(
                conn, fe.c.contact_id, spec.type, spec.where, fe.c.step_at, now
            )
            timed_out = fe.c.wake_at <= at(now)
            rules = [
                Rule("event", node.then_first, when=happened),
                Rule("timeout", node.else_first, when=timed_out),
            ]
            return self._t(
                flow,
                conn,
                batch=and_(waiting, or_(happened, timed_out)),
                node_id=node.id,
                now=now,
                rules=rules,
            )

    def _add_tag(
        self, conn: Connection, flow: RunningFlow, tag: str, batch: Any, now: datetime
    ) -> None:
        source = f"flow:{flow.program.key}"
        lacking = ~exists(
            select(literal(1)).where(
                contact_tags.c.contact_id == fe.c.contact_id, contact_tags.c.tag == tag
            )
        ).correlate(fe)
        conn.execute(
            insert(tag_history).from_select(
                ["contact_id", "tag", "action", "at", "source"],
                select(
                    fe.c.contact_id, literal(tag), literal("added"), at(now), literal(source)
                ).where(batch, lacking),
            )
        )
        conn.execute(
            insert(contact_tags).from_select(
                ["contact_id", "tag", "added_at", "added_by"],
                select(fe.c.contact_id, literal(tag), at(now), literal(source)).where(
                    batch, lacking
                ),
            )
        )

    def _remove_tag(
        self, conn: Connection, flow: RunningFlow, tag: str, batch: Any, now: datetime
    ) -> None:
        source = f"flow:{flow.program.key}"
        having = exists(
            select(literal(1)).where(
                contact_tags.c.contact_id == fe.c.contact_id, contact_tags.c.tag == tag
            )
        ).correlate(fe)
        conn.execute(
            insert(tag_history).from_select(
                ["contact_id", "tag", "action", "at", "source"],
                select(
                    fe.c.contact_id, literal(tag), literal("removed"), at(now), literal(source)
                ).where(batch, having),
            )
        )
        conn.execute(
            delete(contact_tags).where(
                contact_tags.c.tag == tag,
                contact_tags.c.contact_id.in_(select(fe.c.contact_id).where(batch)),
            )
        )


def zone_or_default(name: str | None, default: str) -> ZoneInfo:
    for candidate in (name, default, "UTC"):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")  # pragma: no cover


def next_local_time(now: datetime, local_time: str, zone: str | None, default: str) -> datetime:
    """The first instant at or after ``now`` when the wall clock in ``zone`` shows
    ``local_time`` (HH:MM)."""
    tz = zone_or_default(zone, default)
    hour, minute = (int(p) for p in local_time.split(":"))
    local = now.astimezone(tz)
    candidate = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if candidate < local:
        day = candidate.date() + timedelta(days=1)
        candidate = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)
    return candidate.astimezone(now.tzinfo)


__all__ = ["RunningFlow", "StepRunner", "TickReport", "false", "next_local_time"]
