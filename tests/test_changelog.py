"""CHANGELOG.md keeps the Keep a Changelog layout: under each release, the sections Added,
Changed, Deprecated, Removed, Fixed and Security at most once each, and one line per change
(figures belong in docs/)."""

from __future__ import annotations

import re
from pathlib import Path

CHANGELOG = Path(__file__).resolve().parents[1] / "CHANGELOG.md"
SECTIONS = ("Added", "Changed", "Deprecated", "Removed", "Fixed", "Security")
MAX_LINE = 160


def problems(text: str) -> list[str]:
    """What breaks the layout, one line each with its line number."""
    found: list[str] = []
    release = None
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("## "):
            release, seen = line[3:], set()
        elif line.startswith("### "):
            name = line[4:].strip()
            if name not in SECTIONS:
                found.append(f"{number}: section {name!r} is not one of {', '.join(SECTIONS)}")
            elif name in seen:
                found.append(f"{number}: a second {name!r} section under {release!r}")
            seen.add(name)
        elif release is not None and line.strip():
            if not line.startswith("- "):
                found.append(f"{number}: not a one-line entry (continued or a paragraph): {line!r}")
            elif len(line) > MAX_LINE:
                found.append(f"{number}: an entry of {len(line)} characters (at most {MAX_LINE})")
    return found


def test_changelog_is_one_line_per_change_in_keep_a_changelog_sections() -> None:
    text = CHANGELOG.read_text(encoding="utf-8")
    assert re.search(r"^## Unreleased$", text, re.M)
    assert problems(text) == []


def test_layout_problems_are_found() -> None:
    text = (
        "# Changelog\n\n## Unreleased\n\n### Added\n- One thing.\n\n### Changed\n"
        "- A change\n  continued on a second line.\n\n### Added\n- Again.\n\n### Improved\n"
        f"- {'x' * 200}\n"
    )
    assert problems(text) == [
        "10: not a one-line entry (continued or a paragraph): '  continued on a second line.'",
        "12: a second 'Added' section under 'Unreleased'",
        "15: section 'Improved' is not one of Added, Changed, Deprecated, Removed, Fixed, Security",
        "16: an entry of 202 characters (at most 160)",
    ]
