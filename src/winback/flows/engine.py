"""The flow engine: advance every contact that is due, in sets.

For each enabled flow and each step, due entries (``status='active'``, ``wake_at <= now``)
are taken in slices of ids; each slice is one transaction that checks the goals in scope,
performs the step's effect for the whole slice (outbox rows, tags, attributes) and moves the
entries on, all with a few set-based SQL statements. Messages are only *written* here, to
the outbox under the unique key ``<flow>:<entry id>:<step id>`` with ``ON CONFLICT DO
NOTHING``, in the same transaction as the move: a crash at any point either loses the whole
slice (redone on restart) or keeps all of it, so every message is queued exactly once.

Slices are sized by a :class:`~winback.store.slices.Pacer` to hold the write lock about
``write_slice_ms`` each (other writers get the store between them). On PostgreSQL each slice
first claims its entries (``SELECT ... FOR UPDATE SKIP LOCKED``) and acts on those only, in
the same transaction: several workers share the due entries of a step, an entry is moved by
one worker at a time, and none acts on an entry another has just moved.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    Engine,
    String,
    and_,
    any_,
    case,
    cast,
    false,
    func,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ColumnElement

from winback.flows import models as m
from winback.flows._sql import (
    CONSENT_CHANNELS,
    NO_CARRY,
    Carry,
    Rule,
    at,
    count_outcome,
    deferred_counts,
    event_happened,
    fe,
    has_consent,
    path_token,
    set_attribute_value,
    stable_uniform,
    transition,
    upsert_insert,
)
from winback.flows.conditions import compile_sql, required_consent
from winback.flows.program import Node, Program
from winback.store import activity
from winback.store.schema import contacts, outbox, suppressions
from winback.store.slices import DEFAULT_SLICE_MS, Pacer, SliceLog, held_connection

DEFAULT_BATCH = 50_000
#: Steps that change nothing a goal condition reads (the next step may run in the same
#: statements without checking the goals again).
PURE_STEPS = frozenset({"if", "send", "split", "holdout"})


@dataclass
class RunningFlow:
    """A flow as the engine sees it: its row id, program and trigger watermark."""

    id: int
    program: Program
    watermark_id: int | None = None
    watermark_at: datetime | None = None


@dataclass
class Start:
    """Entries of a flow whose first step is a send they can all take at once enrol
    straight past it (:meth:`StepRunner.start_plan`): inserted at the step after it,
    with its path token, and their messages queued in the same transaction."""

    node: Node
    outcome: str
    #: Where the entries are inserted, and when they are due there.
    step: str
    wake_at: datetime
    #: ``queue(conn, new)``: the send step's outbox rows for the entries matching ``new``.
    queue: Any = None

    @property
    def path(self) -> str:
        return path_token(self.node.id, self.outcome)


@dataclass
class TickReport:
    enrolled: dict[str, int] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)
    rounds: int = 0
    #: Flow files that could not be loaded (their stored version kept running).
    errors: list[str] = field(default_factory=list)
    #: The write transactions of the tick (how many, the longest).
    writes: SliceLog = field(default_factory=SliceLog)
    #: The tick returned early because it was asked to stop.
    stopped: bool = False

    @property
    def contact_steps(self) -> int:
        return sum(self.steps.values())

    @property
    def total_enrolled(self) -> int:
        return sum(self.enrolled.values())


class StepRunner:
    """Advances the due entries of running flows. Knows nothing of files, CLI or delivery."""

    def __init__(
        self,
        engine: Engine,
        *,
        default_timezone: str = "UTC",
        batch_size: int = DEFAULT_BATCH,
        pacer: Pacer | None = None,
    ) -> None:
        self.engine = engine
        self.default_timezone = default_timezone
        #: The most entries one slice takes (the pacer usually keeps slices smaller).
        self.batch_size = batch_size
        self.pacer = pacer or Pacer(DEFAULT_SLICE_MS)
        #: Per thread: the connection held by :meth:`session` (none: each transaction
        #: takes its own), the stop event and the slice log of the tick in progress. A
        #: workspace's runner may tick from several threads.
        self._local = threading.local()

    @property
    def _conn(self) -> Connection | None:
        return getattr(self._local, "conn", None)

    @_conn.setter
    def _conn(self, conn: Connection | None) -> None:
        self._local.conn = conn

    @property
    def log(self) -> SliceLog | None:
        """Where this thread's tick records its write slices."""
        return getattr(self._local, "log", None)

    @property
    def stopping(self) -> bool:
        """Whether this thread's tick was asked to stop (checked between slices)."""
        stop: threading.Event | None = getattr(self._local, "stop", None)
        return stop is not None and stop.is_set()

    @contextmanager
    def pass_of(self, log: SliceLog | None, stop: threading.Event | None = None) -> Iterator[None]:
        """Record this thread's slices in ``log`` and honour ``stop`` during the block."""
        saved = (self.log, getattr(self._local, "stop", None))
        self._local.log, self._local.stop = log, stop
        try:
            yield
        finally:
            self._local.log, self._local.stop = saved

    # -- public -----------------------------------------------------------------------------
    @contextmanager
    def session(self) -> Iterator[None]:
        """Run the transactions of one tick (:meth:`transaction`) on one held connection
        (:func:`~winback.store.slices.held_connection`: on SQLite the WAL is checkpointed
        once, when the session ends). Each slice still commits on its own: a crash loses at
        most the slice in progress."""
        if self._conn is not None:  # nested: the outer session holds the connection
            yield
            return
        with held_connection(self.engine) as conn:
            self._conn = conn
            try:
                yield
            finally:
                self._conn = None

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction, committed when the block ends (rolled back on error). The
        outcome counters it adds to are written together just before the commit
        (:func:`~winback.flows._sql.deferred_counts`)."""
        if self._conn is None:
            with self.engine.begin() as conn, deferred_counts(conn):
                yield conn
            return
        with self._conn.begin(), deferred_counts(self._conn):
            yield self._conn

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read (no write lock taken), ended when the block ends."""
        if self._conn is None:
            with self.engine.connect() as conn:
                yield conn
            return
        try:
            yield self._conn
        finally:
            if self._conn.in_transaction():
                self._conn.rollback()

    def advance(self, flows: Iterable[RunningFlow], now: datetime, report: TickReport) -> int:
        moved = 0
        for flow in flows:
            for node in flow.program.ordered():
                if self.stopping:
                    return moved
                # Contact-steps per step id (a batch may take rows through several steps).
                tally: dict[str, int] = {}
                self._advance_node(flow, node, now, tally)
                if node.kind == "wait_for":
                    self._resolve_waiting(flow, node, now, tally)
                for node_id, n in tally.items():
                    if n:
                        key = f"{flow.program.key}:{node_id}"
                        report.steps[key] = report.steps.get(key, 0) + n
                        moved += n
        return moved

    # -- batching ---------------------------------------------------------------------------
    def _due(
        self, flow: RunningFlow, node: Node, now: datetime, *, by_id: bool = False
    ) -> ColumnElement[bool]:
        """Entries due at ``node``. ``by_id``: written so that no index over ``flow_id``
        applies, for id windows (the primary key range is then the only access path)."""
        return and_(
            (fe.c.flow_id + 0 == flow.id) if by_id else (fe.c.flow_id == flow.id),
            fe.c.status == "active",
            fe.c.step == node.id,
            fe.c.wake_at <= at(now),
            fe.c.waiting.is_(False),
        )

    def _advance_node(
        self, flow: RunningFlow, node: Node, now: datetime, tally: dict[str, int]
    ) -> None:
        """Due entries at ``node``, one transaction per slice (see :meth:`_in_slices`)."""
        probe = and_(
            fe.c.flow_id == flow.id,
            fe.c.status == "active",
            fe.c.step == node.id,
            fe.c.wake_at <= at(now),
        )  # the due index alone (``waiting`` is not in it): an upper bound

        def step(conn: Connection, batch: ColumnElement[bool]) -> None:
            self._check_goals(conn, flow, node, batch, now, tally)
            self._run(conn, flow, node, batch, now, tally)

        self._in_slices(
            ("step", flow.id, node.id),
            probe,
            self._due(flow, node, now),
            self._due(flow, node, now, by_id=True),
            step,
        )

    def _in_slices(
        self,
        key: Any,
        probe: ColumnElement[bool],
        whole: ColumnElement[bool],
        by_id: ColumnElement[bool],
        act: Callable[[Connection, ColumnElement[bool]], None],
    ) -> None:
        """Apply ``act`` to the entries matching ``whole`` in write slices of about as many
        rows as the pacer gives for ``key`` (at most ``batch_size``).

        ``probe`` (an upper bound of the rows, answered by an index) counts them and finds
        their id range. When they fit in one slice they are taken in one set (``whole``,
        through its index). Otherwise they are taken in windows of ids sized to hold about
        a slice of them each and read through the primary key (``by_id``): filtering each
        window out of an index would read every matching entry again for every window.
        The windows are resized after each slice, and the loop ends early when the tick is
        asked to stop (after the slice in progress has committed)."""
        with self.reading() as conn:
            count, low, high = conn.execute(
                select(func.count(), func.min(fe.c.id), func.max(fe.c.id)).where(probe)
            ).one()
        if not count:
            return
        rows = self.pacer.rows(key, maximum=self.batch_size)
        if count <= rows:
            self._slice(key, count, whole, act)
            return
        span = int(high) - int(low) + 1
        start = int(low)
        while start <= int(high) and not self.stopping:
            rows = self.pacer.rows(key, maximum=self.batch_size)
            end = start + max(1, span * rows // count) - 1
            self._slice(key, rows, and_(by_id, fe.c.id >= start, fe.c.id <= end), act)
            start = end + 1

    def _slice(
        self,
        key: Any,
        rows: int,
        batch: ColumnElement[bool],
        act: Callable[[Connection, ColumnElement[bool]], None],
    ) -> None:
        """One write slice: claim the entries of ``batch``, act on them, commit."""
        with self.pacer.slice(key, rows, self.log) as piece, self.transaction() as conn:
            claimed = self._claim(conn, batch)
            if claimed is None:
                piece.rows = 0  # nothing to learn from
                return
            batch, taken = claimed
            if taken is not None:
                piece.rows = taken
            act(conn, batch)

    def _claim(
        self, conn: Connection, batch: ColumnElement[bool]
    ) -> tuple[ColumnElement[bool], int | None] | None:
        """The entries of ``batch`` this transaction may act on and how many (None when
        not counted), or None when there are none.

        On PostgreSQL: those it could lock (``FOR UPDATE SKIP LOCKED``: entries another
        worker is moving are left to it). A locked entry stays put until this transaction
        ends, and the lock re-reads a row another worker moved since this statement began,
        so every later statement of the slice sees the entries as claimed. SQLite has one
        writer: the whole batch."""
        if conn.dialect.name != "postgresql":
            return batch, None
        ids = list(
            conn.execute(select(fe.c.id).where(batch).with_for_update(skip_locked=True)).scalars()
        )
        if not ids:
            return None
        claimed = literal(ids, postgresql.ARRAY(BigInteger()))
        return and_(batch, fe.c.id == any_(claimed)), len(ids)

    def _immediate(self, flow: RunningFlow, target: str | None) -> Node | None:
        """The node an entry sent to ``target`` runs at once (None: an exit, the end of
        the flow or a wait)."""
        if target is None:
            return None
        node = flow.program.nodes[target]
        if node.kind == "wait" or (node.kind == "exit" and not node.goals):
            return None
        return node

    def _chains(self, node: Node, target: Node | None) -> bool:
        """Whether entries leaving ``node`` for ``target`` can take ``target`` in the same
        statements, while still recorded at ``node``: ``target`` checks no goal that
        ``node`` did not just check on data that ``node`` did not change."""
        if target is None:
            return False
        return not target.goals or (target.goals == node.goals and node.kind in PURE_STEPS)

    def _t(
        self,
        flow: RunningFlow,
        conn: Connection,
        *,
        batch: Any,
        node: Node,
        now: datetime,
        rules: list[Rule],
        tally: dict[str, int],
        carry: Carry = NO_CARRY,
        log: bool = True,
        from_waiting: bool = False,
    ) -> int:
        """:func:`transition`, with two shortcuts that save an UPDATE of every entry:

        - moves onto plain ``wait`` steps are taken through at once: the entry goes straight
          to the step after the wait with ``wake_at`` at the wait's end (goals are checked
          before that next step);
        - when the last rule sends the remaining entries to a step they run at once (e.g.
          the ``then`` of an ``if`` is a send), that step runs on them right here, while
          they are still recorded at ``node``; its moves record both steps in the path
          (``carry``)."""
        for rule in rules:
            self._settle(flow, rule, now)
        last = rules[-1]
        chain = None
        if (
            last.when is None
            and last.wake_at is None
            and not last.waiting
            and not from_waiting
            and "holdout" not in last.values
        ):
            candidate = self._immediate(flow, last.target)
            chain = candidate if self._chains(node, candidate) else None
        n = transition(
            conn,
            batch=batch,
            flow_id=flow.id,
            node_id=node.id,
            now=now,
            rules=rules[:-1] if chain is not None else rules,
            log=log,
            carry=carry,
            from_waiting=from_waiting,
        )
        if chain is not None:
            # The rows left in the batch are exactly those of the last rule.
            onward = carry.then(node.id, last.outcome if log else None, last.values)
            if node.kind == "if" and last.outcome == "then" and conn.dialect.name == "sqlite":
                # The rows left passed the condition in this transaction, and SQLite has
                # one writer: the consent it requires still holds for the next step.
                onward = replace(onward, consent=required_consent(node.step.if_))
            m = self._run(conn, flow, chain, batch, now, tally, onward)
            if log:
                count_outcome(conn, flow.id, node.id, last.outcome, m)
            n += m
        tally[node.id] = tally.get(node.id, 0) + n
        return n

    def _settle(self, flow: RunningFlow, rule: Rule, now: datetime) -> None:
        """Take ``rule`` straight through plain waits and onto exits without goals."""
        if rule.target is None or rule.wake_at is not None or rule.waiting:
            return
        exit_node = flow.program.nodes[rule.target]
        if exit_node.kind == "exit" and not exit_node.goals:
            # Going to an exit step: exit now, with its reason.
            rule.target, rule.exit_reason = None, exit_node.step.exit
            return
        target, delay, fused = flow.program.nodes[rule.target], timedelta(0), False
        while target.kind == "wait" and target.next is not None:
            delay += target.step.wait
            target, fused = flow.program.nodes[target.next], True
        if fused:
            rule.target, rule.wake_at = target.id, now + delay

    def start_plan(self, flow: RunningFlow, now: datetime) -> Start | None:
        """How entries enrolled at ``now`` can take the flow's first step in the enrolment
        itself, or None when they cannot.

        Only for a first step that is a ``send`` of one template with no goal in scope,
        whose channel needs no consent or the one the entry condition requires (checked
        by the enrolment statement): then every new entry leaves it with the same outcome
        (``queued``) for the same next step, and the enrolment inserts them there (after
        the waits that follow, like any move) with the step's path token, queues their
        messages from the rows just inserted in the same transaction and adds to the
        step's counter. Otherwise the entries enrol at the first step, due at once, and
        the step loop takes them through it."""
        node = flow.program.nodes[flow.program.first]
        step = node.step
        if node.goals or not isinstance(step, m.SendStep):
            return None
        send = step.send
        if len(send.variants) > 1:
            return None
        consent = flow.program.definition.entry.consent
        if send.channel in CONSENT_CHANNELS and consent != send.channel:
            return None
        name = send.variants[0].name if send.variants else ""
        rule = Rule(f"queued:{name}" if name else "queued", node.next)
        self._settle(flow, rule, now)
        if rule.target is None or rule.exit_reason is not None or rule.waiting:
            return None

        def queue(conn: Connection, new: ColumnElement[bool]) -> None:
            # SQLite (one writer): the enrolment statement just checked the consent.
            self._queue(conn, flow, node, send, new, now, conn.dialect.name == "sqlite")

        return Start(node, rule.outcome, rule.target, rule.wake_at or now, queue)

    def _check_goals(
        self,
        conn: Connection,
        flow: RunningFlow,
        node: Node,
        batch: Any,
        now: datetime,
        tally: dict[str, int],
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
        return self._t(
            flow, conn, batch=and_(batch, met), node=node, now=now, rules=rules, tally=tally
        )

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
        self,
        conn: Connection,
        flow: RunningFlow,
        node: Node,
        batch: Any,
        now: datetime,
        tally: dict[str, int],
        carry: Carry = NO_CARRY,
    ) -> int:
        step = node.step
        go = node.next
        kw: dict[str, Any] = {"node": node, "now": now, "tally": tally, "carry": carry}
        if node.kind == "end":
            rule = Rule("completed", None)
            return self._t(flow, conn, batch=batch, **kw, rules=[rule], log=False)
        if isinstance(step, m.SendStep):
            return self._send(conn, flow, step.send, batch, kw)
        if isinstance(step, m.WaitStep):
            rule = Rule("waited", go, wake_at=now + step.wait)
            return self._t(flow, conn, batch=batch, **kw, rules=[rule], log=False)
        if isinstance(step, m.WaitUntilStep):
            return self._wait_until(flow, conn, step.wait_until.local_time, batch, kw)
        if isinstance(step, m.WaitForStep):
            rule = Rule("waiting", node.id, wake_at=now + step.wait_for.timeout, waiting=True)
            return self._t(flow, conn, batch=batch, **kw, rules=[rule])
        if isinstance(step, m.IfStep):
            cond = self._condition(step.if_, now, flow, node.id)
            then_node = self._immediate(flow, node.then_first)
            else_node = self._immediate(flow, node.else_first)
            if self._chains(node, then_node) and not self._chains(node, else_node):
                # ``else`` first, so that the rows left are the ``then`` ones, taken on at
                # once (false and unknown conditions go to ``else``, as below).
                not_true = ~func.coalesce(cond, false(), type_=Boolean)
                rules = [
                    Rule("else", node.else_first, when=not_true),
                    Rule("then", node.then_first),
                ]
            else:
                rules = [Rule("then", node.then_first, when=cond), Rule("else", node.else_first)]
            return self._t(flow, conn, batch=batch, **kw, rules=rules)
        if isinstance(step, m.AddTagStep):
            self._add_tag(conn, flow, step.add_tag, batch, now)
            return self._t(flow, conn, batch=batch, **kw, rules=[Rule("tagged", go)])
        if isinstance(step, m.RemoveTagStep):
            self._remove_tag(conn, flow, step.remove_tag, batch, now)
            return self._t(flow, conn, batch=batch, **kw, rules=[Rule("untagged", go)])
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
            return self._t(flow, conn, batch=batch, **kw, rules=[Rule("set", go)])
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
            return self._t(flow, conn, batch=batch, **kw, rules=[Rule("suppressed", go)])
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
            return self._t(flow, conn, batch=batch, **kw, rules=[Rule("deleted", go)])
        if isinstance(step, m.GoalStep):
            return self._t(
                flow,
                conn,
                batch=batch,
                **kw,
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
            return self._t(flow, conn, batch=batch, **kw, rules=rules)
        if isinstance(step, m.HoldoutStep):
            u = stable_uniform(fe.c.id, f"{flow.program.key}:{node.id}")
            rules = [
                Rule("holdout", go, when=u < step.holdout.share, values={"holdout": True}),
                Rule("treatment", go),
            ]
            return self._t(flow, conn, batch=batch, **kw, rules=rules)
        if isinstance(step, m.ExitStep):
            rule = Rule(step.exit, None, exit_reason=step.exit)
            return self._t(flow, conn, batch=batch, **kw, rules=[rule])
        raise AssertionError(f"unknown step kind {node.kind}")  # pragma: no cover

    def _send(
        self, conn: Connection, flow: RunningFlow, send: m.Send, batch: Any, kw: dict[str, Any]
    ) -> int:
        node, now = kw["node"], kw["now"]
        # Consent the ``if`` just before checked (carried) is not tested again.
        checked = send.channel in kw["carry"].consent
        consent, u, bounds, variants = self._queue(conn, flow, node, send, batch, now, checked)
        rules = []
        if flow.program.has_holdout:
            rules.append(Rule("holdout", node.next, when=fe.c.holdout.is_(True)))
        if send.channel in CONSENT_CHANNELS and not checked:
            rules.append(Rule("no_consent", node.next, when=~consent))
        for i, v in enumerate(variants):
            last = i == len(variants) - 1
            outcome = f"queued:{v.name}" if v.name else "queued"
            rules.append(Rule(outcome, node.next, when=None if last else u < bounds[i]))
        return self._t(flow, conn, batch=batch, **kw, rules=rules)

    def _queue(
        self,
        conn: Connection,
        flow: RunningFlow,
        node: Node,
        send: m.Send,
        batch: Any,
        now: datetime,
        checked: bool = False,
    ) -> tuple[Any, Any, list[float], list[m.Variant]]:
        """The outbox rows of a send step for the entries of ``batch`` that have consent
        (and are not held out); returns the consent test, the variant draw and the variants
        with their cumulative bounds. ``checked``: every row of ``batch`` is known to have
        consent (tested in this transaction)."""
        consent = true() if checked else has_consent(send.channel, fe.c.contact_id)
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
        return consent, u, bounds, variants

    def _wait_until(
        self, flow: RunningFlow, conn: Connection, local_time: str, batch: Any, kw: dict[str, Any]
    ) -> int:
        node, now = kw["node"], kw["now"]
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
        return self._t(flow, conn, batch=batch, **kw, rules=rules, log=False)

    def _resolve_waiting(
        self, flow: RunningFlow, node: Node, now: datetime, tally: dict[str, int]
    ) -> None:
        """Entries waiting at a ``wait_for`` step whose event happened or whose wait timed
        out, in slices of the waiting entries."""
        step = node.step
        assert isinstance(step, m.WaitForStep)
        spec = step.wait_for.filter
        waiting = and_(
            fe.c.flow_id == flow.id,
            fe.c.status == "active",
            fe.c.step == node.id,
            fe.c.waiting.is_(True),
        )
        by_id = and_(
            fe.c.flow_id + 0 == flow.id,
            fe.c.status == "active",
            fe.c.step == node.id,
            fe.c.waiting.is_(True),
        )

        def resolve(conn: Connection, batch: ColumnElement[bool]) -> None:
            happened = event_happened(
                conn, fe.c.contact_id, spec.type, spec.where, fe.c.step_at, now
            )
            timed_out = fe.c.wake_at <= at(now)
            rules = [
                Rule("event", node.then_first, when=happened),
                Rule("timeout", node.else_first, when=timed_out),
            ]
            self._t(
                flow,
                conn,
                batch=and_(batch, or_(happened, timed_out)),
                node=node,
                now=now,
                rules=rules,
                tally=tally,
                from_waiting=True,
            )

        self._in_slices(("waiting", flow.id, node.id), waiting, waiting, by_id, resolve)

    def _add_tag(
        self, conn: Connection, flow: RunningFlow, tag: str, batch: Any, now: datetime
    ) -> None:
        chosen = select(fe.c.contact_id).where(batch)
        activity.add_tags(conn, chosen, tag, source=f"flow:{flow.program.key}", at=now)

    def _remove_tag(
        self, conn: Connection, flow: RunningFlow, tag: str, batch: Any, now: datetime
    ) -> None:
        chosen = select(fe.c.contact_id).where(batch)
        activity.remove_tags(conn, chosen, tag, source=f"flow:{flow.program.key}", at=now)


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


__all__ = ["RunningFlow", "Start", "StepRunner", "TickReport", "false", "next_local_time"]
