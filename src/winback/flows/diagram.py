"""A flow drawn as a diagram: its steps as boxes, top to bottom, with the forks of ``if``,
``wait_for``, ``split`` and ``holdout`` side by side and joining again below, and the number
of contacts at every step and on every branch.

:func:`layout` places the boxes and edges of a compiled :class:`~winback.flows.program.Program`
(no store); :func:`step_counts` reads the counts of one stored flow from the store in three
aggregated statements (the step outcome counters, the active entries per step, the entries
per group); :func:`svg` draws a laid-out flow with its counts as an SVG document, every box
carrying ``data-step`` and its figures as ``data-*`` attributes.

What the counts mean:

- **passed**: contacts that went through the step (the engine's outcome counters in
  ``flow_step_counts``); on an edge leaving a fork, those that took that branch; an exit
  step shows how many took the edge into it.
- **here**: active entries at the step, due to run it.
- **waiting**: active entries held by a wait; the engine parks them at the step *after* a
  ``wait`` or ``wait_until`` with ``wake_at`` at the wait's end, so they are shown on the
  wait that holds them (``wait_for`` holds them at itself).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from xml.sax.saxutils import escape, quoteattr

from sqlalchemy import Connection, case, func, select

from winback.flows import models as m
from winback.flows.labels import step_label
from winback.flows.program import END, Node, Program
from winback.store.schema import flow_entries, flow_step_counts

BOX_W = 210
BOX_H = 66
#: Vertical room for an edge between two boxes of a sequence (with its count).
GAP_Y = 34
#: Vertical room between a fork's box and its branches (the bus and the branch labels).
FORK_DROP = 50
#: Vertical room below a fork's branches where they join again.
JOIN = 26
GAP_X = 26
#: The narrowest column of a branch without steps (room for its label).
EMPTY_ARM_W = 130
MARGIN = 16
START_H = 50
#: The box id of the flow's finish (where contacts who ran off the end are counted).
FINISH = "finish"

#: Kinds drawn as a fork, and how each branch's outcome is counted.
FORK_KINDS = ("if", "wait_for", "split", "holdout")
#: Outcomes that do not take a contact out of its step (a ``wait_for`` starting to wait).
STAYING = frozenset({"waiting"})


@dataclass(frozen=True)
class Box:
    """A step, or the flow's start, placed at ``(x, y)`` (top left)."""

    step: str
    kind: str
    shape: str  # start | step | send | wait | fork | exit | goal | end
    title: str
    detail: str
    x: float
    y: float
    w: float = BOX_W
    h: float = BOX_H


@dataclass(frozen=True)
class Edge:
    """A line from one box to the next (a polyline of points); ``outcome`` names the branch
    of a fork it stands for (``then``, ``branch:A``, ``holdout`` ...), None for the plain
    next step."""

    source: str
    points: tuple[tuple[float, float], ...]
    label: str = ""
    outcome: str | None = None
    target: str | None = None


@dataclass
class Layout:
    width: float
    height: float
    boxes: list[Box] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)


@dataclass(frozen=True)
class StepCounts:
    """What the store knows of one flow's contacts, per step."""

    entered: int = 0
    #: Entries that ran off the end of the flow, and those that left it otherwise.
    completed: int = 0
    exited: int = 0
    #: Step -> outcome -> contacts (the engine's counters).
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Active entries due at the step.
    here: dict[str, int] = field(default_factory=dict)
    #: Active entries parked at the step with a wake time still ahead (held by a wait).
    waiting: dict[str, int] = field(default_factory=dict)

    def passed(self, step: str) -> int:
        return sum(n for o, n in self.outcomes.get(step, {}).items() if o not in STAYING)


# -- layout -----------------------------------------------------------------------------------
@dataclass
class _Block:
    """A laid-out part of the flow in its own coordinates: the centre line of its entry and
    exit is ``x = width / 2``; ``open``: contacts leave it at the bottom."""

    width: float
    height: float
    boxes: list[Box] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    open: bool = True
    first: str | None = None

    def shifted(self, dx: float, dy: float) -> tuple[list[Box], list[Edge]]:
        boxes = [
            Box(b.step, b.kind, b.shape, b.title, b.detail, b.x + dx, b.y + dy, b.w, b.h)
            for b in self.boxes
        ]
        edges = [
            Edge(
                e.source, tuple((x + dx, y + dy) for x, y in e.points), e.label, e.outcome, e.target
            )
            for e in self.edges
        ]
        return boxes, edges


def arms_of(node: Node) -> list[tuple[str, str, str | None]]:
    """The branches of a fork step: (label, outcome counted for it, first step id or None
    when the branch goes straight on)."""
    if node.kind == "holdout":
        share = node.step.holdout.share
        return [(f"holdout {share:.0%}", "holdout", None), ("treatment", "treatment", None)]
    if node.kind == "split":
        total = sum(w for _, w, _ in node.branches) or 1.0
        return [
            (f"{name} {w / total:.0%}", f"branch:{name}", _real(first, node))
            for name, w, first in node.branches
        ]
    outcomes = {"then": "event", "else": "timeout"} if node.kind == "wait_for" else {}
    return [
        (name if node.kind == "if" else ("event" if name == "then" else "timeout"),
         outcomes.get(name, name), _real(first, node))
        for name, _, first in node.arms
    ]  # fmt: skip


def _real(first: str | None, node: Node) -> str | None:
    """A branch's first step, None when it has none (it goes on with the step after)."""
    return None if first is None or first == node.next else first


def _shape(node: Node) -> str:
    kind = node.step_kind
    if node.kind == END:
        return "end"
    if node.kind in FORK_KINDS:
        return "fork"
    if kind is not None and kind.exit is not None:
        return "exit"
    if kind is not None and kind.goal is not None:
        return "goal"
    if kind is not None and kind.holds:
        return "wait"
    return "send" if node.kind == "send" else "step"


def _detail(node: Node) -> str:
    """The second line of a box: what the step does, when its name does not say it."""
    if node.step is None:
        return "end of the flow"
    unnamed = step_label(_unnamed(node))
    return node.kind if unnamed == step_label(node) else unnamed


def _unnamed(node: Node) -> Node:
    step = node.step.model_copy(update={"name": None}) if hasattr(node.step, "name") else node.step
    return Node(id=node.id, kind=node.kind, step=step)


def _box(node: Node, x: float) -> Box:
    return Box(node.id, node.kind, _shape(node), step_label(node), _detail(node), x, 0.0)


class _Layouter:
    def __init__(self, program: Program) -> None:
        self.program = program

    def sequence(self, first: str | None, follow: str | None) -> _Block:
        """The steps from ``first`` up to (not including) ``follow``, stacked."""
        blocks: list[_Block] = []
        current = first
        seen: set[str] = set()
        while current is not None and current != follow and current not in seen:
            seen.add(current)
            node = self.program.nodes[current]
            blocks.append(self.node(node))
            current = node.next
        out = _Block(width=max((b.width for b in blocks), default=0.0), height=0.0, first=first)
        cx = out.width / 2
        y = 0.0
        previous: _Block | None = None
        for block in blocks:
            if previous is not None:
                if previous.open:
                    out.edges.append(
                        Edge(previous.boxes[0].step, ((cx, y), (cx, y + GAP_Y)), target=block.first)
                    )
                y += GAP_Y
            boxes, edges = block.shifted(cx - block.width / 2, y)
            out.boxes += boxes
            out.edges += edges
            y += block.height
            previous = block
        out.height = y
        out.open = previous.open if previous is not None else True
        return out

    def node(self, node: Node) -> _Block:
        if node.kind not in FORK_KINDS:
            box = _box(node, 0.0)
            terminal = box.shape in ("exit", "end")
            return _Block(BOX_W, BOX_H, [box], open=not terminal, first=node.id)
        return self.fork(node)

    def fork(self, node: Node) -> _Block:
        arms = [
            (label, outcome, self.sequence(first, node.next) if first else None)
            for label, outcome, first in arms_of(node)
        ]
        widths = [max(EMPTY_ARM_W, sub.width if sub else 0.0) for _, _, sub in arms]
        total = sum(widths) + GAP_X * (len(arms) - 1)
        width = max(BOX_W, total)
        cx = width / 2
        block = _Block(width, 0.0, [_box(node, cx - BOX_W / 2)], first=node.id)
        top = BOX_H + FORK_DROP
        deepest = max((sub.height for _, _, sub in arms if sub), default=0.0)
        join = top + deepest + JOIN
        left = cx - total / 2
        bus = BOX_H + 14
        any_open = False
        for (label, outcome, sub), w in zip(arms, widths, strict=True):
            ax = left + w / 2
            left += w + GAP_X
            start = ((cx, BOX_H), (cx, bus), (ax, bus))
            if sub is None:  # straight on: down to the join
                block.edges.append(
                    Edge(node.id, (*start, (ax, join - 10), (cx, join - 10), (cx, join)),
                         label, outcome, node.next)
                )  # fmt: skip
                any_open = True
                continue
            block.edges.append(Edge(node.id, (*start, (ax, top)), label, outcome, sub.first))
            boxes, edges = sub.shifted(ax - sub.width / 2, top)
            block.boxes += boxes
            block.edges += edges
            if sub.open:
                bottom = top + sub.height
                block.edges.append(
                    Edge(boxes[-1].step if boxes else node.id,
                         ((ax, bottom), (ax, join - 10), (cx, join - 10), (cx, join)))
                )  # fmt: skip
                any_open = True
        block.open = any_open
        block.height = join if any_open else top + deepest
        return block


def _trigger_text(definition: m.FlowDefinition) -> str:
    trigger = definition.trigger
    data = trigger.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    key = next(iter(data), "trigger")
    value = data.get(key)
    shown = (
        value if isinstance(value, str) else (value.get("type") if isinstance(value, dict) else "")
    )
    return f"{key.replace('_', ' ')}: {shown}" if shown else key.replace("_", " ")


def layout(program: Program) -> Layout:
    """Boxes and edges of the whole flow, its start (the trigger) on top."""
    body = _Layouter(program).sequence(program.first, None)
    width = max(body.width, BOX_W) + 2 * MARGIN
    cx = width / 2
    start = Box(
        "start", "start", "start", "Start", _trigger_text(program.definition),
        cx - BOX_W / 2, MARGIN, BOX_W, START_H,
    )  # fmt: skip
    y0 = MARGIN + START_H + GAP_Y
    boxes, edges = body.shifted(cx - body.width / 2, y0)
    edges.insert(0, Edge("start", ((cx, MARGIN + START_H), (cx, y0)), target=program.first))
    bottom = y0 + body.height
    if body.open:  # contacts run off the end: the flow's finish
        y = bottom + GAP_Y
        edges.append(Edge(FINISH, ((cx, bottom), (cx, y)), target=FINISH))
        boxes.append(Box(FINISH, FINISH, "end", "End", "completed the flow", cx - BOX_W / 2, y,
                         BOX_W, START_H))  # fmt: skip
        bottom = y + START_H
    return Layout(width, bottom + MARGIN, [start, *boxes], edges)


# -- counts -----------------------------------------------------------------------------------
def step_counts(conn: Connection, flow_id: int, now: datetime) -> StepCounts:
    """The flow's counts: outcome counters, active entries per step (due or held by a wait,
    read from the index on ``(flow_id, status, step, wake_at)``) and every entry."""
    fe = flow_entries
    outcomes: dict[str, dict[str, int]] = {}
    sc = flow_step_counts
    for step, outcome, n in conn.execute(
        select(sc.c.step, sc.c.outcome, sc.c.n).where(sc.c.flow_id == flow_id)
    ):
        outcomes.setdefault(step, {})[outcome] = int(n)
    held = case((fe.c.wake_at > now, 1), else_=0)
    here: dict[str, int] = {}
    waiting: dict[str, int] = {}
    for step, is_held, n in conn.execute(
        select(fe.c.step, held, func.count())
        .where(fe.c.flow_id == flow_id, fe.c.status == "active")
        .group_by(fe.c.step, held)
    ):
        target = waiting if is_held else here
        target[step] = target.get(step, 0) + int(n)
    statuses: dict[str, int] = {
        str(status): int(n)
        for status, n in conn.execute(
            select(fe.c.status, func.count()).where(fe.c.flow_id == flow_id).group_by(fe.c.status)
        )
    }
    return StepCounts(
        entered=sum(statuses.values()),
        completed=statuses.get("completed", 0),
        exited=statuses.get("exited", 0),
        outcomes=outcomes,
        here=here,
        waiting=waiting,
    )


@dataclass(frozen=True)
class Figures:
    """The figures of one box."""

    passed: int | None
    here: int
    waiting: int


def box_figures(program: Program, counts: StepCounts) -> dict[str, Figures]:
    """Per step id: passed, here, waiting. Contacts held by a ``wait`` or ``wait_until`` are
    parked at the step after it; they are counted on the wait when exactly one such wait
    leads there, else on the step itself."""
    holders: dict[str, list[str]] = {}
    for node in program.nodes.values():
        kind = node.step_kind
        if kind is not None and kind.holds and node.next is not None and kind.arms is None:
            holders.setdefault(node.next, []).append(node.id)
    into: dict[str, int] = {}
    for node in program.nodes.values():
        if node.kind in FORK_KINDS:
            for _, outcome, first in arms_of(node):
                if first is not None:
                    into[first] = into.get(first, 0) + counts.outcomes.get(node.id, {}).get(
                        outcome, 0
                    )
    figures: dict[str, Figures] = {}
    for node in program.ordered():
        kind = node.step_kind
        passed: int | None = counts.passed(node.id)
        if kind is not None and kind.exit is not None:
            passed = counts.passed(node.id) + into.get(node.id, 0)
        elif kind is not None and kind.holds and kind.arms is None:
            passed = None  # a wait is gone through without a counter
        figures[node.id] = Figures(passed, counts.here.get(node.id, 0), 0)
    for step, held in counts.waiting.items():
        if step not in figures:
            continue  # a step no longer in the flow
        waits = holders.get(step, [])
        shown = waits[0] if len(waits) == 1 and program.nodes[step].kind != "wait_for" else step
        f = figures[shown]
        figures[shown] = Figures(f.passed, f.here, f.waiting + held)
    return figures


def edge_count(edge: Edge, program: Program, counts: StepCounts) -> int | None:
    """Contacts that took the edge, when the counters tell: a fork's branch, or the step
    after a step with a counter (not after a wait, which has none)."""
    if edge.source == "start":
        return counts.entered
    node = program.nodes.get(edge.source)
    if node is None:
        return None
    if edge.outcome is not None:
        return counts.outcomes.get(node.id, {}).get(edge.outcome, 0)
    kind = node.step_kind
    if node.kind in FORK_KINDS or kind is None or (kind.holds and kind.arms is None):
        return None
    if edge.target is None or edge.target != node.next:
        return None
    return counts.passed(node.id)


# -- drawing ----------------------------------------------------------------------------------
FILL = {
    "start": "#f3f4f6",
    "step": "#ffffff",
    "send": "#eef4ff",
    "wait": "#ffffff",
    "fork": "#fff7e6",
    "exit": "#fef2f2",
    "goal": "#ecfdf5",
    "end": "#f3f4f6",
}
STROKE = {"send": "#2f6fed", "fork": "#d97706", "exit": "#b91c1c", "goal": "#15803d"}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _figure_line(box: Box, f: Figures | None, counts: StepCounts) -> str:
    if box.shape == "start":
        return f"{counts.entered:,} entered"
    if box.step == FINISH:
        return f"completed {counts.completed:,}"
    if f is None:
        return ""
    parts = [] if f.passed is None else [f"passed {f.passed:,}"]
    if f.here:
        parts.append(f"here {f.here:,}")
    if f.waiting or box.shape == "wait":
        parts.append(f"waiting {f.waiting:,}")
    return " · ".join(parts) or "no contacts yet"


def _draw_box(box: Box, f: Figures | None, counts: StepCounts) -> Iterable[str]:
    rx = 25 if box.shape in ("start", "end") else 8
    dash = ' stroke-dasharray="5 4"' if box.shape == "wait" else ""
    data = f" data-step={quoteattr(box.step)} data-kind={quoteattr(box.kind)}"
    if f is not None:
        data += f' data-here="{f.here}" data-waiting="{f.waiting}"'
        if f.passed is not None:
            data += f' data-passed="{f.passed}"'
    if box.shape == "start":
        data += f' data-entered="{counts.entered}"'
    if box.step == FINISH:
        data += f' data-completed="{counts.completed}"'
    yield f'<g class="step {box.shape}"{data}>'
    yield f"<title>{escape(box.title)} ({escape(box.step)})</title>"
    yield (
        f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.w:.1f}" height="{box.h:.1f}" '
        f'rx="{rx}" fill="{FILL[box.shape]}" stroke="{STROKE.get(box.shape, "#9ca3af")}" '
        f'stroke-width="1.5"{dash}/>'
    )
    cx = box.x + box.w / 2
    lines = [
        (_clip(box.title, 28), 13, "600", "#1f2937"),
        (_clip(box.detail, 34), 11, "400", "#6b7280"),
    ]
    lines.append(
        (
            _figure_line(box, f, counts),
            11,
            "600",
            "#1f2937",
        )
    )
    top, step = (box.y + 17, 13.0) if box.shape == "start" else (box.y + 21, 19.0)
    for i, (text, size, weight, colour) in enumerate(lines):
        if not text:
            continue
        yield (
            f'<text x="{cx:.1f}" y="{top + i * step:.1f}" font-size="{size}" font-weight="{weight}" '
            f'fill="{colour}" text-anchor="middle">{escape(text)}</text>'
        )
    yield "</g>"


def _draw_edge(edge: Edge, n: int | None) -> Iterable[str]:
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in edge.points)
    attrs = f" data-source={quoteattr(edge.source)}"
    if edge.outcome is not None:
        attrs += f" data-outcome={quoteattr(edge.outcome)}"
    if n is not None:
        attrs += f' data-count="{n}"'
    yield f'<g class="edge"{attrs}>'
    arrow = ' marker-end="url(#arrow)"' if edge.target is not None else ""
    yield (f'<polyline points="{points}" fill="none" stroke="#9ca3af" stroke-width="1.5"{arrow}/>')
    text = edge.label if edge.label else ""
    if n is not None:
        text = f"{text} · {n:,}" if text else f"{n:,}"
    if text:
        if edge.outcome is not None:  # a branch: the label on its way down
            x, y = edge.points[3] if len(edge.points) > 3 else edge.points[-1]
            x0, y0 = edge.points[2]
            yield (
                f'<text x="{x0:.1f}" y="{y0 + 16:.1f}" font-size="11" fill="#92400e" '
                f'text-anchor="middle" paint-order="stroke" stroke="#ffffff" stroke-width="4">'
                f"{escape(_clip(text, 24))}</text>"
            )
        else:
            (x0, y0), (_, y1) = edge.points[0], edge.points[1]
            yield (
                f'<text x="{x0 + 6:.1f}" y="{(y0 + y1) / 2 + 4:.1f}" font-size="11" '
                f'fill="#6b7280">{escape(text)}</text>'
            )
    yield "</g>"


def svg(program: Program, counts: StepCounts, *, title: str | None = None) -> str:
    """The flow as an SVG document with the counts on its boxes and edges."""
    drawn = layout(program)
    figures = box_figures(program, counts)
    name = title or program.name
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="flow-diagram" role="img" '
        f'width="{drawn.width:.0f}" height="{drawn.height:.0f}" '
        f'viewBox="0 0 {drawn.width:.0f} {drawn.height:.0f}" '
        f'font-family="-apple-system,BlinkMacSystemFont,Segoe UI,Roboto,Helvetica,Arial,sans-serif" '
        f"data-flow={quoteattr(program.key)}>",
        f"<title>{escape(name)}: the flow with its contacts per step</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#9ca3af"/></marker></defs>',
    ]
    for edge in drawn.edges:
        out += _draw_edge(edge, edge_count(edge, program, counts))
    for box in drawn.boxes:
        out += _draw_box(box, figures.get(box.step), counts)
    out.append("</svg>")
    return "\n".join(out)


__all__ = [
    "Box",
    "Edge",
    "Figures",
    "Layout",
    "StepCounts",
    "box_figures",
    "layout",
    "step_counts",
    "svg",
]
