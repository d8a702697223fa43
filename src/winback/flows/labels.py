"""How a step is shown to people: its ``name`` when the flow file gives one ("Email 1"),
else a readable default made of its kind and main argument ("send reactivation-1",
"wait 4d", "tag customer_lapsed"). The step id (``s0``, ``s2.then.0``) stays the key of
everything stored; the label is only what commands print beside it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from winback.flows.fields import EventFilter, format_duration

if TYPE_CHECKING:
    from winback.flows.program import Node, Program


def _event(value: EventFilter | str) -> str:
    return value if isinstance(value, str) else value.type


def _send(step: Any) -> str:
    send = step.send
    if send.variants:
        return f"send {' | '.join(v.template for v in send.variants)}"
    return f"send {send.template}"


_DEFAULTS: dict[str, Callable[[Any], str]] = {
    "send": _send,
    "wait": lambda s: f"wait {format_duration(s.wait)}",
    "wait_until": lambda s: f"wait until {s.wait_until.local_time}",
    "wait_for": lambda s: f"wait for {_event(s.wait_for.event)}",
    "if": lambda s: "if",
    "add_tag": lambda s: f"tag {s.add_tag}",
    "remove_tag": lambda s: f"untag {s.remove_tag}",
    "set_attribute": lambda s: f"set {s.set_attribute.name}",
    "suppress": lambda s: f"suppress {s.suppress}",
    "delete_contact": lambda s: "delete contact",
    "goal": lambda s: f"goal {s.goal.reason}",
    "split": lambda s: f"split {' / '.join(b.name for b in s.split.branches)}",
    "holdout": lambda s: f"holdout {s.holdout.share:.0%}",
    "exit": lambda s: f"exit {s.exit}",
}


def step_label(node: Node) -> str:
    """The step's ``name``, else its default label; the end marker of a trailing wait reads
    ``end``."""
    if node.step is None:
        return "end"
    name: str | None = getattr(node.step, "name", None)
    if name:
        return name
    default = _DEFAULTS.get(node.kind)
    return default(node.step) if default is not None else node.kind


def step_labels(program: Program) -> dict[str, str]:
    """Every step id of the program with its label, in flow order."""
    return {node.id: step_label(node) for node in program.ordered()}


def labelled(step_id: str, labels: dict[str, str]) -> str:
    """``label (id)`` for display; a step id no longer in the flow is shown as it is."""
    label = labels.get(step_id)
    return f"{label} ({step_id})" if label and label != step_id else step_id


def in_order(ids: Iterable[str], labels: dict[str, str]) -> list[str]:
    """``ids`` in flow order (ids no longer in the flow last, sorted)."""
    order = {sid: i for i, sid in enumerate(labels)}
    return sorted(ids, key=lambda sid: (order.get(sid, len(order)), sid))
