"""A contact's flows in progress, for ``winback contacts show`` (``Workspace.contacts`` is
given it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, select

from winback.flows.labels import step_label
from winback.store.schema import flow_entries, flows

if TYPE_CHECKING:
    from winback.flows.program import Node


def contact_flows(engine: Engine, contact_id: int) -> list[dict[str, Any]]:
    """Active flow entries of the contact: flow, current step id, kind and name, since when, when
    it next wakes, its holdout / A/B branch and its path so far (``step=outcome`` tokens
    joined by " > ")."""
    fe = flow_entries
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                flows.c.key,
                flows.c.name,
                flows.c.definition,
                fe.c.id,
                fe.c.step,
                fe.c.step_at,
                fe.c.entered_at,
                fe.c.wake_at,
                fe.c.waiting,
                fe.c.holdout,
                fe.c.branch,
                fe.c.path,
            )
            .join(flows, flows.c.id == fe.c.flow_id)
            .where(fe.c.contact_id == contact_id, fe.c.status == "active")
            .order_by(fe.c.entered_at, fe.c.id)
        ).all()
    out = []
    for r in rows:
        node = _node(r.definition, r.key, r.step)
        out.append(
            {
                "flow": r.key,
                "name": r.name,
                "entry_id": r.id,
                "step": r.step,
                "step_kind": node.kind if node is not None else None,
                "step_name": step_label(node) if node is not None else r.step,
                "waiting_for_event": bool(r.waiting),
                "entered_at": r.entered_at,
                "at_step_since": r.step_at,
                "wakes_at": r.wake_at,
                "holdout": bool(r.holdout),
                "branch": r.branch,
                "path": r.path,
            }
        )
    return out


def _node(definition: dict[str, Any], key: str, step: str | None) -> Node | None:
    from winback.flows.program import compile_program, parse_definition

    try:
        program = compile_program(key, parse_definition(definition, path=key))
    except Exception:  # an unreadable stored definition must not break `contacts show`
        return None
    return program.nodes.get(step or "")
