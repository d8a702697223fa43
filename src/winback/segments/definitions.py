"""Segment definitions: YAML files in the workspace's ``segments/`` folder and the shipped
defaults (``winback/segments/defaults``), validated, with their dependency order.

A file holds one segment: ``name``, an optional ``description``, and the condition's keys at
the top level (see ``docs/segments.md``). A workspace file replaces the default of the same
name. In the shipped defaults ``{dormant_days}`` stands for the ``dormant_days`` setting.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from winback.errors import DefinitionError, NotFound
from winback.segments.conditions import (
    AllCondition,
    AnyCondition,
    Condition,
    NotCondition,
    SegmentCondition,
    parse_condition,
    referenced_segments,
)

FOLDER = "segments"
META_KEYS = ("name", "description")


@dataclass(frozen=True)
class SegmentDefinition:
    """One validated segment."""

    name: str
    condition: Condition
    data: dict[str, Any] = field(repr=False)  # as written (after default substitutions)
    source: str = ""  # "segments/x.yaml" or "default:x.yaml"
    description: str = ""

    @property
    def depends_on(self) -> set[str]:
        return referenced_segments(self.condition)

    @property
    def is_default(self) -> bool:
        return self.source.startswith("default:")


def parse_definition(data: Any, *, source: str, default_name: str) -> SegmentDefinition:
    """Validate one segment document (already read from YAML)."""
    if not isinstance(data, dict):
        raise DefinitionError(
            f"expected a mapping with name, description and a condition, got {data!r}",
            path=source,
        )
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise DefinitionError(
            f"expected a segment name, got {name!r}", path=source, location="name"
        )
    description = data.get("description", "")
    if not isinstance(description, str):
        raise DefinitionError(
            f"expected text, got {description!r}", path=source, location="description"
        )
    body = {k: v for k, v in data.items() if k not in META_KEYS}
    if not body:
        raise DefinitionError(
            "no condition: add one of attribute, event, tag, segment, consent, all, any, not",
            path=source,
        )
    condition = parse_condition(body, path=source)
    return SegmentDefinition(name.strip(), condition, data, source, description)


def read_file(path: Path, *, source: str, substitutions: Mapping[str, str] | None = None) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError(f"cannot read the file: {exc}", path=source) from None
    for key, value in (substitutions or {}).items():
        text = text.replace("{" + key + "}", value)
    try:
        return _plain(yaml.safe_load(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise DefinitionError(f"invalid YAML: {problem}", path=source, location=where) from None


def _plain(value: Any) -> Any:
    """YAML data with dates and times as ISO 8601 text (as JSON would carry them)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, date | datetime):
        return value.isoformat()
    return value


def default_definitions(*, dormant_days: int = 90) -> list[SegmentDefinition]:
    """The eight shipped segments of the seed."""
    folder = resources.files("winback.segments").joinpath("defaults")
    found = []
    for item in sorted(folder.iterdir(), key=lambda p: p.name):
        if not item.name.endswith(".yaml"):
            continue
        source = f"default:{item.name}"
        with resources.as_file(item) as path:
            data = read_file(path, source=source, substitutions={"dormant_days": str(dormant_days)})
        found.append(parse_definition(data, source=source, default_name=Path(item.name).stem))
    return found


def workspace_definitions(workspace: Path) -> list[SegmentDefinition]:
    folder = workspace / FOLDER
    if not folder.is_dir():
        return []
    found: list[SegmentDefinition] = []
    seen: dict[str, str] = {}
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        source = f"{FOLDER}/{path.name}"
        definition = parse_definition(
            read_file(path, source=source), source=source, default_name=path.stem
        )
        if definition.name in seen:
            raise DefinitionError(
                f"segment {definition.name!r} is also defined in {seen[definition.name]}",
                path=source,
                location="name",
            )
        seen[definition.name] = source
        found.append(definition)
    return found


def load_definitions(workspace: Path, *, dormant_days: int = 90) -> dict[str, SegmentDefinition]:
    """Defaults, then workspace files (which win on equal names); checked for unknown segment
    references and cycles. Returned in dependency order (a segment after those it uses)."""
    merged = {d.name: d for d in default_definitions(dormant_days=dormant_days)}
    for d in workspace_definitions(workspace):
        merged[d.name] = d
    for d in merged.values():
        for location, name in segment_references(d.condition):
            if name not in merged:
                raise DefinitionError(
                    f"unknown segment {name!r} (known: {', '.join(sorted(merged))})",
                    path=d.source,
                    location=location,
                )
    return {name: merged[name] for name in dependency_order(merged)}


def segment_references(cond: Condition, location: str = "") -> Iterator[tuple[str, str]]:
    """(place, segment name) of every segment reference in the condition."""
    if isinstance(cond, SegmentCondition):
        yield (f"{location}.segment" if location else "segment", cond.segment)
    elif isinstance(cond, AllCondition | AnyCondition):
        key = "all" if isinstance(cond, AllCondition) else "any"
        items = cond.all if isinstance(cond, AllCondition) else cond.any
        for i, c in enumerate(items):
            yield from segment_references(
                c, f"{location}.{key}[{i}]" if location else f"{key}[{i}]"
            )
    elif isinstance(cond, NotCondition):
        yield from segment_references(cond.not_, f"{location}.not" if location else "not")


def dependency_order(definitions: Mapping[str, SegmentDefinition]) -> list[str]:
    """Names sorted so that each segment comes after the segments it refers to; raises
    :class:`DefinitionError` on a cycle, naming it."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = [*trail[trail.index(name) :], name]
            raise DefinitionError(
                f"segments refer to each other in a cycle: {' -> '.join(cycle)}",
                path=definitions[name].source,
            )
        state[name] = "visiting"
        for dep in sorted(definitions[name].depends_on):
            if dep in definitions:
                visit(dep, [*trail, name])
        state[name] = "done"
        order.append(name)

    for name in sorted(definitions):
        visit(name, [])
    return order


def find(definitions: Mapping[str, SegmentDefinition], name: str) -> SegmentDefinition:
    if name in definitions:
        return definitions[name]
    folded = {k.casefold(): v for k, v in definitions.items()}
    if name.casefold() in folded:
        return folded[name.casefold()]
    raise NotFound(f"no segment named {name!r} (there are: {', '.join(definitions)})")
