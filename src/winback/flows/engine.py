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

from sqlalchemy import BigInteger, Connection, Engine, and_, any_, func, literal, or_, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ColumnElement

from winback.flows._sql import (
    NO_CARRY,
    Carry,
    Rule,
    at,
    count_outcome,
    deferred_counts,
    fe,
    path_token,
    transition,
)
from winback.flows.program import Node, Program
from winback.flows.steps.base import Batch, flow_condition
from winback.store.slices import DEFAULT_SLICE_MS, Pacer, SliceLog, held_connection

DEFAULT_BATCH = 50_000


@dataclass
class RunningFlow:
    """A flow as the engine sees it: its row id, program and trigger watermark."""

    id: int
    program: Program
    watermark_id: int | None = None
    watermark_at: datetime | None = None
    #: ``split`` steps with ``winner: auto`` whose winner is declared: step id -> branch.
    winners: dict[str, str] = field(default_factory=dict)


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
    #: ``queue(conn, new)``: the step's effect (the send's outbox rows) for the entries
    #: matching ``new``.
    queue: Callable[[Connection, ColumnElement[bool]], None]

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
                kind = node.step_kind
                if kind is not None and kind.resolve is not None:
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
        kind = node.step_kind
        if kind is not None and (
            kind.delay is not None or (kind.exit is not None and not node.goals)
        ):
            return None
        return node

    def _chains(self, node: Node, target: Node | None) -> bool:
        """Whether entries leaving ``node`` for ``target`` can take ``target`` in the same
        statements, while still recorded at ``node``: ``target`` checks no goal that
        ``node`` did not just check on data that ``node`` did not change."""
        if target is None:
            return False
        kind = node.step_kind
        pure = kind is not None and kind.pure
        return not target.goals or (target.goals == node.goals and pure)

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
        consent: frozenset[str] = frozenset(),
    ) -> int:
        """:func:`transition`, with two shortcuts that save an UPDATE of every entry:

        - moves onto plain ``wait`` steps are taken through at once: the entry goes straight
          to the step after the wait with ``wake_at`` at the wait's end (goals are checked
          before that next step);
        - when the last rule sends the remaining entries to a step they run at once (e.g.
          the ``then`` of an ``if`` is a send), that step runs on them right here, while
          they are still recorded at ``node``; its moves record both steps in the path
          (``carry``, with ``consent``: the channels whose consent those rows are known to
          have)."""
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
            if consent:
                onward = replace(onward, consent=consent)
            chained = self._run(conn, flow, chain, batch, now, tally, onward)
            if log:
                count_outcome(conn, flow.id, node.id, last.outcome, chained)
            n += chained
        tally[node.id] = tally.get(node.id, 0) + n
        return n

    def _settle(self, flow: RunningFlow, rule: Rule, now: datetime) -> None:
        """Take ``rule`` straight through plain waits and onto exits without goals."""
        if rule.target is None or rule.wake_at is not None or rule.waiting:
            return
        target = flow.program.nodes[rule.target]
        kind = target.step_kind
        if kind is not None and kind.exit is not None and not target.goals:
            # Going to an exit step: exit now, with its reason.
            rule.target, rule.exit_reason = None, kind.exit(target.step)
            return
        delay, fused = timedelta(0), False
        while kind is not None and kind.delay is not None and target.next is not None:
            delay += kind.delay(target.step)
            target, fused = flow.program.nodes[target.next], True
            kind = target.step_kind
        if fused:
            rule.target, rule.wake_at = target.id, now + delay

    def start_plan(self, flow: RunningFlow, now: datetime) -> Start | None:
        """How entries enrolled at ``now`` can take the flow's first step in the enrolment
        itself, or None when they cannot.

        Only for a first step with no goal in scope whose kind says every new entry
        leaves it with the same outcome (:attr:`StepKind.start`, a ``send`` of one
        template): the enrolment inserts them at the next step (after the waits that
        follow, like any move) with the step's path token, writes the step's effect (the
        messages) from the rows just inserted in the same transaction and adds to the
        step's counter. Otherwise the entries enrol at the first step, due at once, and
        the step loop takes them through it."""
        node = flow.program.nodes[flow.program.first]
        kind = node.step_kind
        if node.goals or kind is None or kind.start is None:
            return None
        opening = kind.start(flow, node, node.step, now)
        if opening is None:
            return None
        outcome, queue = opening
        rule = Rule(outcome, node.next)
        self._settle(flow, rule, now)
        if rule.target is None or rule.exit_reason is not None or rule.waiting:
            return None
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
                when=flow_condition(flow, goal.condition, now, f"goal[{i}]"),
            )
            for i, goal in enumerate(node.goals)
        ]
        met = or_(*[r.when for r in rules if r.when is not None])
        return self._t(
            flow, conn, batch=and_(batch, met), node=node, now=now, rules=rules, tally=tally
        )

    # -- steps ------------------------------------------------------------------------------
    def _batch(
        self,
        conn: Connection,
        flow: RunningFlow,
        node: Node,
        batch: Any,
        now: datetime,
        carry: Carry = NO_CARRY,
    ) -> Batch:
        def chains(target: str | None) -> bool:
            return self._chains(node, self._immediate(flow, target))

        return Batch(conn, flow, node, batch, now, carry, self.default_timezone, chains)

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
        """Run ``node``'s step on the entries of ``batch`` (the handler of its kind, see
        :mod:`winback.flows.steps`) and move them on."""
        kw: dict[str, Any] = {"node": node, "now": now, "tally": tally, "carry": carry}
        kind = node.step_kind
        if kind is None:  # the end marker of a trailing wait
            rule = Rule("completed", None)
            return self._t(flow, conn, batch=batch, **kw, rules=[rule], log=False)
        moves = kind.run(self._batch(conn, flow, node, batch, now, carry), node.step)
        if moves.only is not None:
            batch = and_(batch, moves.only)
        return self._t(
            flow, conn, batch=batch, **kw, rules=moves.rules, log=moves.log, consent=moves.consent
        )

    def _resolve_waiting(
        self, flow: RunningFlow, node: Node, now: datetime, tally: dict[str, int]
    ) -> None:
        """Entries parked at ``node`` (``waiting``) that move on now (the ``resolve`` of its
        kind: at a ``wait_for``, the event happened or the wait timed out), in slices of the
        waiting entries."""
        kind = node.step_kind
        assert kind is not None and kind.resolve is not None
        resolve_moves = kind.resolve
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
            moves = resolve_moves(self._batch(conn, flow, node, batch, now), node.step)
            self._t(
                flow,
                conn,
                batch=batch if moves.only is None else and_(batch, moves.only),
                node=node,
                now=now,
                rules=moves.rules,
                tally=tally,
                log=moves.log,
                from_waiting=True,
            )

        self._in_slices(("waiting", flow.id, node.id), waiting, waiting, by_id, resolve)


__all__ = [
    "RunningFlow",
    "Start",
    "StepRunner",
    "TickReport",
]
