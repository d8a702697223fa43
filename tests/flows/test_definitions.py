"""Flow files: validation messages that name file and place, stable step ids, the
generated schema document, and the shipped library."""

from __future__ import annotations

from pathlib import Path

import pytest

from winback.errors import DefinitionError
from winback.flows.labels import step_labels
from winback.flows.program import compile_program, load_program, parse_definition
from winback.flows.schema_doc import schema_markdown
from winback.flows.service import (
    check_conditions,
    delivery_library,
    library_root,
    library_templates,
)
from winback.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]
BASE = "name: x\ntrigger: {segment_entry: A}\nsteps:\n"
BASE_DATA = {"name": "x", "trigger": {"segment_entry": "A"}}


def _error(tmp_path: Path, body: str) -> str:
    path = tmp_path / "x.yaml"
    path.write_text(BASE + body, encoding="utf-8")
    with pytest.raises(DefinitionError) as info:
        program = load_program(path, display="flows/x.yaml")
        check_conditions(program, "flows/x.yaml")
    return str(info.value)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "  - send: {template: a}\n  - wait: 4 days\n",
            "flows/x.yaml:steps[1].wait: expected a duration like 4d, 12h or 30m (got '4 days')",
        ),
        (
            "  - frobnicate: 1\n",
            "flows/x.yaml:steps[0]: expected a mapping with exactly one of send",
        ),
        ("  - send: {channel: pigeon, template: a}\n", "steps[0].send.channel: Input should be"),
        ("  - send: {channel: email}\n", "steps[0].send: a send needs a template or variants"),
        (
            "  - if: {in_segment: X}\n    then: [{wait_until: {local_time: '9am'}}]\n",
            'steps[0].if.then[0].wait_until.local_time: expected a local time of day like "09:00"',
        ),
        ("  - holdout: {share: 2}\n", "steps[0].holdout.share: Input should be less than 1"),
        ("  - if: {in_segmnt: X}\n", "flows/x.yaml:s0.if"),
        ("  - {id: a, exit: x}\n  - {id: a, exit: y}\n", "duplicate step id 'a'"),
    ],
)
def test_errors_name_file_place_and_expectation(tmp_path: Path, body: str, expected: str) -> None:
    assert expected in _error(tmp_path, body)


def test_bad_trigger_and_reentry(tmp_path: Path) -> None:
    path = tmp_path / "y.yaml"
    path.write_text(
        "name: y\ntrigger: {when: later}\nentry: {reentry: sometimes}\nsteps: [{exit: x}]\n"
    )
    message = str(pytest.raises(DefinitionError, load_program, path, display="flows/y.yaml").value)
    assert "trigger: expected one of segment_entry, tag_added, event, schedule" in message
    assert "entry.reentry: expected never, always or 'after <duration>'" in message


def test_step_ids_are_paths_unless_explicit() -> None:
    definition = parse_definition(
        {
            "name": "x",
            "trigger": {"tag_added": "t"},
            "steps": [
                {"send": {"template": "a"}},
                {"if": {"tag": "t"}, "then": [{"exit": "y"}], "else": [{"wait": "1d"}]},
                {
                    "id": "named",
                    "split": {
                        "branches": [
                            {"name": "a", "weight": 1, "steps": [{"exit": "a"}]},
                            {"name": "b", "weight": 1},
                        ]
                    },
                },
            ],
        },
        path="x",
    )
    program = compile_program("x", definition)
    assert [n.id for n in program.ordered()] == [
        "s0",
        "s1",
        "s1.then.0",
        "s1.else.0",
        "named",
        "named.a.0",
    ]
    assert program.nodes["s1.else.0"].next == "named"
    assert program.nodes["named"].branches == [("a", 1.0, "named.a.0"), ("b", 1.0, None)]


def test_steps_show_their_name_or_a_readable_default() -> None:
    definition = parse_definition(
        {
            "name": "x",
            "trigger": {"tag_added": "t"},
            "steps": [
                {"name": "Email 1", "send": {"template": "a"}},
                {"wait": "4d"},
                {"if": {"tag": "t"}, "then": [{"add_tag": "lapsed"}], "else": [{"exit": "y"}]},
                {
                    "send": {
                        "variants": [{"name": "A", "template": "a"}, {"name": "B", "template": "b"}]
                    }
                },
            ],
        },
        path="x",
    )
    labels = step_labels(compile_program("x", definition))
    assert labels == {
        "s0": "Email 1",
        "s1": "wait 4d",
        "s2": "if",
        "s2.then.0": "tag lapsed",
        "s2.else.0": "exit y",
        "s3": "send a | b",
    }
    with pytest.raises(DefinitionError, match="name"):
        parse_definition(
            {"name": "x", "trigger": {"tag_added": "t"}, "steps": [{"name": "", "wait": "1d"}]},
            path="x",
        )


def test_the_reference_flow_names_its_steps() -> None:
    labels = step_labels(load_program(library_root() / "reactivation" / "flow.yaml"))
    assert [labels[k] for k in ("s0", "s2.then.0", "s4.then.0")] == [
        "Email 1",
        "Email 2",
        "Tag: not reactivated",
    ]


def test_schema_document_is_current() -> None:
    assert (ROOT / "docs" / "flows-schema.md").read_text(encoding="utf-8") == schema_markdown(), (
        "regenerate: python -m winback.flows.schema_doc > docs/flows-schema.md"
    )


@pytest.mark.parametrize("template", library_templates())
def test_library_flows_validate(template: str) -> None:
    files = sorted((library_root() / template).glob("*.yaml"))
    assert files
    for file in files:
        check_conditions(load_program(file), str(file))
    assert list((library_root() / template / "templates").glob("*.yaml"))


def test_add_copies_flow_and_templates_and_refuses_twice(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    assert ws.flows.add("reactivation") == ["reactivation", "reactivation-companion"]
    assert (ws.path / "flows" / "reactivation.yaml").is_file()
    copied = (ws.path / "templates" / "reactivation-2.yaml").read_text(encoding="utf-8")
    styled = delivery_library()
    if styled is not None and (styled / "reactivation-2.yaml").is_file():
        assert copied == (styled / "reactivation-2.yaml").read_text(encoding="utf-8")
    else:
        assert "subject:" in copied
    assert {i.key: i.status for i in ws.flows.list()} == {
        "reactivation": "enabled",
        "reactivation-companion": "enabled",
    }
    with pytest.raises(DefinitionError, match="exists already"):
        ws.flows.add("reactivation")


def test_every_template_a_shipped_flow_sends_renders(sqlite_workspace: Workspace) -> None:
    """`flows add` brings message templates that delivery can render for every send step."""
    ws = sqlite_workspace
    names: set[str] = set()
    for template in library_templates():
        for key in ws.flows.add(template, enable=False):
            program = ws.flows.validate_file(ws.path / "flows" / f"{key}.yaml")
            for node in program.nodes.values():
                send = getattr(node.step, "send", None)
                if send is not None:
                    names.update([send.template] if send.template else [])
                    names.update(v.template for v in send.variants)
    assert {n for n in names if not (ws.path / "templates" / f"{n}.yaml").is_file()} == set()
    assert ws.delivery.validate(sorted(names)) == []


def test_the_step_table_is_the_flow_file_syntax() -> None:
    """Each row of the step table is a step key of flow files, parsed into its model and
    compiled to a node of its kind; no other key is a step."""
    from winback.flows.models import FlowDefinition
    from winback.flows.steps import KINDS

    schema = FlowDefinition.model_json_schema(by_alias=True)
    refs = schema["properties"]["steps"]["items"]["oneOf"]
    assert [r["$ref"].rsplit("/", 1)[1] for r in refs] == [k.model.__name__ for k in KINDS]
    samples = {
        "send": {"template": "t"},
        "wait": "1d",
        "wait_until": {"local_time": "09:00"},
        "wait_for": {"event": "page_view", "timeout": "1d"},
        "if": {"consent": "email"},
        "add_tag": "a",
        "remove_tag": "a",
        "set_attribute": {"name": "n", "value": 1},
        "suppress": "email",
        "delete_contact": {},
        "goal": {"condition": {"consent": "email"}},
        "split": {"branches": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]},
        "holdout": {"share": 0.1},
        "exit": "done",
    }
    assert sorted(samples) == sorted(k.key for k in KINDS)
    steps = [{key: value} for key, value in samples.items()]
    program = compile_program("x", parse_definition({**BASE_DATA, "steps": steps}, path="x"))
    kinds = [program.nodes[f"s{i}"] for i in range(len(steps))]
    for node, kind in zip(kinds, KINDS, strict=True):
        assert node.kind == kind.key and isinstance(node.step, kind.model)
        assert node.step_kind is kind
    with pytest.raises(DefinitionError, match="exactly one of send, wait, "):
        parse_definition({**BASE_DATA, "steps": [{"jump": "s0"}]}, path="x")


def test_backfill_needs_an_event_or_tag_trigger() -> None:
    from winback.flows.program import parse_definition

    with pytest.raises(DefinitionError, match="entry.backfill needs an event or tag_added"):
        parse_definition(
            {
                "name": "x",
                "trigger": {"segment_entry": "Customers"},
                "entry": {"backfill": "14d"},
                "steps": [{"wait": "1d"}],
            },
            path="flows/x.yaml",
        )
