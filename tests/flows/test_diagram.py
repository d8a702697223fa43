"""The flow diagram's layout and drawing, without a store: a box per step, none overlapping,
branches side by side, counts on boxes and branches, and names escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from itertools import combinations

from winback.flows.diagram import Box, StepCounts, box_figures, layout, svg
from winback.flows.program import Program, compile_program, load_program, parse_definition
from winback.flows.service import library_root, library_templates

SVG = "{http://www.w3.org/2000/svg}"


def _overlap(a: Box, b: Box) -> bool:
    return a.x < b.x + b.w and b.x < a.x + a.w and a.y < b.y + b.h and b.y < a.y + a.h


def test_every_shipped_flow_is_laid_out_with_a_box_per_step_and_no_overlap() -> None:
    for name in library_templates():
        program = load_program(library_root() / name / "flow.yaml")
        drawn = layout(program)
        steps = [b.step for b in drawn.boxes]
        assert set(steps) >= set(program.nodes) and len(steps) == len(set(steps)), name
        for a, b in combinations(drawn.boxes, 2):
            assert not _overlap(a, b), (name, a.step, b.step)
        for box in drawn.boxes:
            assert 0 <= box.x and box.x + box.w <= drawn.width, (name, box.step)
            assert 0 <= box.y and box.y + box.h <= drawn.height, (name, box.step)
        document = ET.fromstring(svg(program, StepCounts()))
        drawn_steps = {
            g.attrib["data-step"] for g in document.iter(f"{SVG}g") if "data-step" in g.attrib
        }
        assert drawn_steps == set(steps)


def _program(steps: list[object]) -> Program:
    definition = parse_definition(
        {"name": "T", "trigger": {"tag_added": "x"}, "steps": steps}, path="t.yaml"
    )
    return compile_program("t", definition)


def test_branches_sit_side_by_side_below_their_fork_and_join_again() -> None:
    program = _program(
        [
            {"if": {"has_tag": "vip"}, "then": [{"add_tag": "a"}, {"add_tag": "b"}],
             "else": [{"add_tag": "c"}]},
            {"add_tag": "after"},
        ]
    )  # fmt: skip
    boxes = {b.step: b for b in layout(program).boxes}
    fork, then0, then1, else0, after = (
        boxes[s] for s in ("s0", "s0.then.0", "s0.then.1", "s0.else.0", "s1")
    )
    assert then0.y == else0.y > fork.y + fork.h
    assert then0.x + then0.w <= else0.x  # then on the left, else on the right
    assert then1.y > then0.y and then1.x == then0.x
    assert after.y > then1.y + then1.h  # after the join
    assert fork.x == after.x  # on the flow's centre line


def test_counts_go_on_the_boxes_and_waits_hold_the_contacts_parked_after_them() -> None:
    program = _program([{"add_tag": "a"}, {"wait": "2d"}, {"add_tag": "b"}])
    counts = StepCounts(
        entered=5,
        outcomes={"s0": {"tagged": 5}},
        here={"s2": 1},
        waiting={"s2": 4},
    )
    f = box_figures(program, counts)
    assert (f["s0"].passed, f["s0"].here, f["s0"].waiting) == (5, 0, 0)
    assert (f["s1"].passed, f["s1"].waiting) == (None, 4)  # the wait holds the four
    assert (f["s2"].passed, f["s2"].here, f["s2"].waiting) == (0, 1, 0)
    document = ET.fromstring(svg(program, counts))
    texts = [t.text for t in document.iter(f"{SVG}text")]
    assert "passed 5" in texts and "waiting 4" in texts and "5 entered" in texts


def test_names_are_escaped() -> None:
    program = _program([{"name": "<script>alert(1)</script> & co", "add_tag": "a"}])
    drawn = svg(program, StepCounts())
    assert "<script>" not in drawn
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in drawn
    ET.fromstring(drawn)  # well-formed
