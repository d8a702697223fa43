"""``send``: queue a message for every entry of the batch that has consent (and is not held
out), in the outbox under ``<flow>:<entry id>:<step id>``; with variants, each entry draws
one for good (A/B test of templates)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator
from sqlalchemy import Connection, String, case, cast, literal, select, true
from sqlalchemy.sql.elements import ColumnElement

from winback.channels import CONSENT_CHANNELS
from winback.flows._sql import (
    Rule,
    at,
    fe,
    has_consent,
    stable_uniform,
    upsert_insert,
)
from winback.flows.fields import Channel, FlowModel
from winback.flows.steps.base import Batch, Moves, Opening, StepModel
from winback.store.schema import outbox

if TYPE_CHECKING:
    from winback.flows.engine import RunningFlow
    from winback.flows.program import Node


class Variant(FlowModel):
    name: str
    template: str
    weight: float = Field(1.0, gt=0)


class Send(FlowModel):
    channel: Channel = "email"
    template: str | None = None
    variants: list[Variant] = Field(default_factory=list)
    priority: Literal["marketing", "transactional"] = "marketing"

    @model_validator(mode="after")
    def _template(self) -> Send:
        if self.template is None and not self.variants:
            raise ValueError("a send needs a template or variants")
        return self


class SendStep(StepModel):
    kind: ClassVar[str] = "send"
    send: Send


#: The outbox columns a send writes, in the order of :func:`queue`'s select.
_COLUMNS = [
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
]


def run(batch: Batch, step: SendStep) -> Moves:
    send, node, flow = step.send, batch.node, batch.flow
    # Consent the ``if`` just before checked (carried) is not tested again.
    checked = send.channel in batch.carry.consent
    consent, u, bounds, variants = queue(
        batch.conn, flow, node, send, batch.where, batch.now, checked
    )
    rules = []
    if flow.program.has_holdout:
        rules.append(Rule("holdout", node.next, when=fe.c.holdout.is_(True)))
    if send.channel in CONSENT_CHANNELS and not checked:
        rules.append(Rule("no_consent", node.next, when=~consent))
    for i, v in enumerate(variants):
        last = i == len(variants) - 1
        outcome = f"queued:{v.name}" if v.name else "queued"
        rules.append(Rule(outcome, node.next, when=None if last else u < bounds[i]))
    return Moves(rules)


def _draw(
    variants: list[Variant], u: ColumnElement[Any]
) -> tuple[list[float], ColumnElement[Any], ColumnElement[Any]]:
    """The variants' cumulative bounds, and the template and variant name each row draws."""
    total = sum(v.weight for v in variants)
    bounds, cum = [], 0.0
    for v in variants:
        cum += v.weight / total
        bounds.append(cum)
    if len(variants) == 1:
        return (
            bounds,
            literal(variants[0].template, String()),
            literal(variants[0].name or None, String()),
        )
    whens = [(u < b, v) for b, v in zip(bounds[:-1], variants[:-1], strict=True)]
    template = case(*[(w, literal(v.template)) for w, v in whens], else_=variants[-1].template)
    variant = case(*[(w, literal(v.name)) for w, v in whens], else_=variants[-1].name)
    return bounds, template, variant


def queue(
    conn: Connection,
    flow: RunningFlow,
    node: Node,
    send: Send,
    batch: Any,
    now: datetime,
    checked: bool = False,
) -> tuple[Any, Any, list[float], list[Variant]]:
    """The outbox rows of a send step for the entries of ``batch`` that have consent
    (and are not held out); returns the consent test, the variant draw and the variants
    with their cumulative bounds. ``checked``: every row of ``batch`` is known to have
    consent (tested in this transaction)."""
    consent = true() if checked else has_consent(send.channel, fe.c.contact_id, now)
    variants = send.variants or [Variant(name="", template=send.template or "", weight=1)]
    u = stable_uniform(fe.c.id, f"{flow.program.key}:{node.id}:variant")
    bounds, template, variant = _draw(variants, u)
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
        .from_select(_COLUMNS, rows)
        .on_conflict_do_nothing(index_elements=["dedup_key"])
    )
    conn.execute(stmt)
    return consent, u, bounds, variants


def start(flow: RunningFlow, node: Node, step: SendStep, now: datetime) -> Opening | None:
    """A first send of one template whose channel needs no consent or the one the entry
    condition requires (checked by the enrolment statement): every new entry leaves it with
    the same outcome, ``queued``, and its message is queued from the rows just inserted."""
    send = step.send
    if len(send.variants) > 1:
        return None
    consent = flow.program.definition.entry.consent
    if send.channel in CONSENT_CHANNELS and consent != send.channel:
        return None
    name = send.variants[0].name if send.variants else ""

    def write(conn: Connection, new: ColumnElement[bool]) -> None:
        # SQLite (one writer): the enrolment statement just checked the consent.
        queue(conn, flow, node, send, new, now, conn.dialect.name == "sqlite")

    return (f"queued:{name}" if name else "queued"), write
