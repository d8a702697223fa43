"""From a flow file to a runnable program: load and validate the YAML, give every step its
stable id and flatten the step tree into nodes that each know where to go next.

Step ids are paths unless a step names its own ``id``: the top-level steps are ``s0``,
``s1`` ...; the steps inside an ``if``/``wait_for`` are ``<parent>.then.N`` and
``<parent>.else.N``; those of a split branch ``<parent>.<branch name>.N``. A contact waits
*at* a step id, so an edited flow keeps contacts whose step id still exists where they are
and lets those whose step id disappeared exit with reason ``flow_changed``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from winback.errors import DefinitionError
from winback.flows import models as m
from winback.flows.steps import BY_KEY
from winback.flows.steps.base import StepKind, StepModel

FLOW_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
#: The kind of the end marker a trailing wait leads to (not a step of the file).
END = "end"


@dataclass
class Node:
    """One step, flattened. ``next`` is where a contact goes when the step is done
    (None: the flow is complete); ``arms`` where each of its nested step lists starts:
    (name, weight of a split branch or None, first step id or None when empty)."""

    id: str
    kind: str
    step: Any
    next: str | None = None
    arms: list[tuple[str, float | None, str | None]] = field(default_factory=list)
    goals: list[m.Goal] = field(default_factory=list)
    order: int = 0

    @property
    def step_kind(self) -> StepKind[Any] | None:
        """The step kind of the node (None: the end marker)."""
        return BY_KEY.get(self.kind)

    def _first(self, name: str) -> str | None:
        return next((first for arm, w, first in self.arms if arm == name and w is None), None)

    @property
    def then_first(self) -> str | None:
        return self._first("then")

    @property
    def else_first(self) -> str | None:
        return self._first("else")

    @property
    def branches(self) -> list[tuple[str, float, str | None]]:
        """The split branches: (name, weight, first step id)."""
        return [(name, w, first) for name, w, first in self.arms if w is not None]


@dataclass
class Program:
    key: str
    definition: m.FlowDefinition
    nodes: dict[str, Node]
    first: str

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def has_holdout(self) -> bool:
        return any(n.kind == "holdout" for n in self.nodes.values())

    def ordered(self) -> list[Node]:
        return sorted(self.nodes.values(), key=lambda n: n.order)


def format_location(loc: tuple[Any, ...]) -> str:
    """``('steps', 2, 'wait', 'wait')`` -> ``steps[2].wait`` (discriminator tags dropped)."""
    out = ""
    previous: Any = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part != previous:
            out += f".{part}" if out else str(part)
        previous = part
    return out


def _message(err: Any) -> str:
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required key missing"
    if err["type"] not in ("step", "trigger", "value_error"):
        msg += f" (got {err.get('input')!r})"
    return msg


def parse_definition(data: Any, *, path: str) -> m.FlowDefinition:
    """Validate a flow mapping; errors name the file and the place in it."""
    if not isinstance(data, dict):
        raise DefinitionError("expected a mapping with name, trigger, entry and steps", path=path)
    try:
        definition = m.FlowDefinition.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{format_location(tuple(err['loc']))}: {_message(err)}" for err in exc.errors()
        ]
        first_loc = format_location(tuple(exc.errors()[0]["loc"]))
        raise DefinitionError(
            "; ".join(
                p.removeprefix(first_loc + ": ") if i == 0 else p for i, p in enumerate(problems)
            ),
            path=path,
            location=first_loc,
        ) from None
    return definition


def load_file(file: Path, *, display: str | None = None) -> m.FlowDefinition:
    shown = display or str(file)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DefinitionError(f"cannot read: {exc.strerror}", path=shown) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else None
        raise DefinitionError(f"not valid YAML: {exc}", path=shown, location=where) from None
    return parse_definition(data, path=shown)


class _Compiler:
    """Flattens a step tree into nodes, in order, each with the goals in its scope."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.nodes: dict[str, Node] = {}

    def _node(self, node: Node) -> Node:
        node.order = len(self.nodes)
        self.nodes[node.id] = node
        return node

    def add(
        self, steps: Sequence[StepModel], prefix: str, follow: str | None, goals: list[m.Goal]
    ) -> str | None:
        """Add ``steps`` (ids ``<prefix>N``) leading to ``follow``; returns the first id."""
        ids = [step.id or f"{prefix}{i}" for i, step in enumerate(steps)]
        scope = list(goals)
        for i, step in enumerate(steps):
            sid = ids[i]
            nxt = ids[i + 1] if i + 1 < len(steps) else follow
            if sid in self.nodes:
                raise DefinitionError(f"duplicate step id {sid!r}", path=self.path, location=sid)
            node = self._node(Node(id=sid, kind=step.kind, step=step, next=nxt, goals=list(scope)))
            kind = BY_KEY[step.kind]
            self._arms(node, kind, scope)
            if kind.goal is not None:
                scope.append(kind.goal(step))
            elif kind.holds and nxt is None:
                # A trailing wait keeps the contact in the flow (goals still apply) until
                # it is over: it leads to an end marker instead of completing at once.
                end = self._node(Node(id=f"{sid}.end", kind=END, step=None, goals=list(scope)))
                node.next = end.id
        return ids[0] if ids else follow

    def _arms(self, node: Node, kind: StepKind[Any], scope: list[m.Goal]) -> None:
        if kind.arms is None:
            return
        try:
            arms = kind.arms(node.step)
        except ValueError as exc:
            raise DefinitionError(str(exc), path=self.path, location=node.id) from None
        for arm in arms:
            first = self.add(arm.steps, f"{node.id}.{arm.name}.", node.next, scope)
            node.arms.append((arm.name, arm.weight, first))


def compile_program(key: str, definition: m.FlowDefinition, *, path: str = "") -> Program:
    """Flatten the step tree into nodes with stable ids."""
    compiler = _Compiler(path)
    base_goals = [definition.goal] if definition.goal else []
    first = compiler.add(list(definition.steps), "s", None, base_goals)
    assert first is not None
    return Program(key=key, definition=definition, nodes=compiler.nodes, first=first)


def load_program(file: Path, *, display: str | None = None) -> Program:
    key = file.stem
    shown = display or str(file)
    if not FLOW_KEY.match(key):
        raise DefinitionError(
            "flow file names must be lower case letters, digits, - and _ (e.g. reactivation.yaml)",
            path=shown,
        )
    return compile_program(key, load_file(file, display=shown), path=shown)
