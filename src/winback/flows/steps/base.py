"""What every step kind is made of: its model (the step's mapping in a flow file), its
handler (what the engine does with the due entries of such a step) and what the engine may
assume of it (:class:`StepKind`). The table of every kind is :data:`winback.flows.steps.KINDS`.

A handler acts on a :class:`Batch`, the due entries of one step in one transaction, with a
few set-based statements (outbox rows, tags, attributes ...), and returns :class:`Moves`:
the rules that send each entry on (:class:`~winback.flows._sql.Rule`, first match wins).
The engine applies them (:func:`~winback.flows._sql.transition`), checks goals, takes
entries straight through plain waits and runs the next step in the same statements when
it can.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import Field
from sqlalchemy import Connection, Select, select
from sqlalchemy.sql.elements import ColumnElement

from winback.flows._sql import NO_CARRY, Carry, Rule, fe
from winback.flows.conditions import compile_sql
from winback.flows.fields import FlowModel, Goal

if TYPE_CHECKING:
    from winback.flows.engine import RunningFlow
    from winback.flows.program import Node


class StepModel(FlowModel):
    """A step of a flow file: one action key (:attr:`kind`), an optional explicit id and an
    optional display name."""

    kind: ClassVar[str]
    id: str | None = Field(None, description="Stable id; default is the step's path (s3.then.0).")
    name: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="Label shown for the step (flows show, stats, results, simulate); default: "
        "its kind and main argument, e.g. `send reactivation-1`. The id stays the key.",
    )


S = TypeVar("S", bound=StepModel)


def flow_condition(
    flow: RunningFlow, data: Any, now: datetime, location: str
) -> ColumnElement[bool]:
    """A condition of ``flow`` as SQL over the flow entries (``fe``)."""
    return compile_sql(
        data,
        now=now,
        contact_id=fe.c.contact_id,
        entered_at=fe.c.entered_at,
        path=f"flows/{flow.program.key}.yaml",
        location=location,
    )


def _never(target: str | None) -> bool:
    return False


@dataclass(frozen=True)
class Batch:
    """The entries of one step that one transaction acts on (``where`` over ``fe``)."""

    conn: Connection
    flow: RunningFlow
    node: Node
    where: Any
    now: datetime
    #: What the steps just taken in the same statements left on the rows.
    carry: Carry = NO_CARRY
    #: Time zone of contacts that have none.
    default_timezone: str = "UTC"
    #: ``chains(target)``: whether entries sent to step ``target`` take it at once, in the
    #: same statements (the engine then runs it on the rows the last rule leaves).
    chains: Callable[[str | None], bool] = _never

    @property
    def contact_ids(self) -> Select[Any]:
        """The contacts of the batch (a subquery for ``IN``)."""
        return select(fe.c.contact_id).where(self.where)

    @property
    def salt(self) -> str:
        """What makes this step's random draws its own (``flow:step``)."""
        return f"{self.flow.program.key}:{self.node.id}"

    def condition(self, data: Any, location: str) -> ColumnElement[bool]:
        return flow_condition(self.flow, data, self.now, location)


@dataclass
class Moves:
    """Where a step sends the entries of its batch."""

    rules: list[Rule]
    #: Record each entry's outcome in its path and in the step's counters.
    log: bool = True
    #: Only the entries matching this move (None: the whole batch).
    only: ColumnElement[bool] | None = None
    #: Channels whose consent every entry of the last rule is known to have, tested in this
    #: transaction (the step taken next in the same statements need not test it again).
    consent: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Arm:
    """A list of steps nested in a step: ``then``/``else``, or a split branch (with its
    weight). Their ids are ``<step id>.<name>.N``."""

    name: str
    steps: Sequence[StepModel]
    weight: float | None = None


#: ``start(flow, node, step, now)`` for a first step that entries may take in their
#: enrolment: the outcome they all get and ``queue(conn, new)`` that writes the step's
#: effect for the new entries matching ``new``; None when they cannot.
Opening = tuple[str, Callable[[Connection, ColumnElement[bool]], None]]


@dataclass(frozen=True)
class StepKind(Generic[S]):
    """One step kind: model, handler and what the engine may assume of it."""

    model: type[S]
    #: Act on the due entries of a step of this kind and say where they go.
    run: Callable[[Batch, S], Moves]
    #: Changes nothing a goal condition reads: the next step may run in the same
    #: statements without checking the goals again.
    pure: bool = False
    #: The step lists nested in it, in order (a ``ValueError`` names what is wrong).
    arms: Callable[[S], list[Arm]] | None = None
    #: Entries parked at the step (``waiting``) that move on now, and where.
    resolve: Callable[[Batch, S], Moves] | None = None
    #: The step only holds entries this long: the engine moves entries straight past it,
    #: due at its end.
    delay: Callable[[S], timedelta] | None = None
    #: The step keeps entries until later: a trailing one leads to an end marker, so that
    #: goals still apply until it is over.
    holds: bool = False
    #: The step only ends the entry, with this exit reason (taken at once when no goal is
    #: in scope).
    exit: Callable[[S], str] | None = None
    #: A goal that the steps after this one check.
    goal: Callable[[S], Goal] | None = None
    #: The conditions of the step, to validate: (key, condition).
    conditions: Callable[[S], list[tuple[str, Any]]] | None = None
    #: Enrolment straight past the step when it comes first (see :data:`Opening`).
    start: Callable[[RunningFlow, Node, S, datetime], Opening | None] | None = None

    @property
    def key(self) -> str:
        """The action key of the step in a flow file (``send``, ``wait`` ...)."""
        return self.model.kind


__all__ = [
    "Arm",
    "Batch",
    "Moves",
    "Opening",
    "StepKind",
    "StepModel",
    "flow_condition",
]
