"""Tags with history, through the Python API, on both databases."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import T0
from tests.shopdata import add_contact, add_order
from winback.errors import NotFound
from winback.tags import NoContactsChosen
from winback.workspace import Workspace


def test_add_remove_list_with_history(workspace: Workspace) -> None:
    a = add_contact(workspace, "a")
    b = add_contact(workspace, "b")
    add_order(workspace, b, T0 - timedelta(days=3))
    workspace.segments.refresh()
    change = workspace.tags.add("inactive", contact_refs=["a", f"#{b}"])
    assert (change.requested, sorted(change.changed)) == (2, sorted([a, b]))
    again = workspace.tags.add("inactive", segment="Customers")
    assert (again.requested, again.changed) == (1, [])  # b already had it
    workspace.clock.advance(timedelta(hours=1))  # type: ignore[attr-defined]
    removed = workspace.tags.remove("inactive", contact_refs=["a"], source="flow:x")
    assert removed.changed == [a]
    assert workspace.tags.counts() == [
        {"tag": "inactive", "contacts": 1, "last_change": T0 + timedelta(hours=1)}
    ]
    seen = workspace.tags.of_contact(a)
    assert seen["tags"] == []
    assert [(h["action"], h["source"]) for h in seen["history"]] == [
        ("added", "cli"),
        ("removed", "flow:x"),
    ]
    assert [t["tag"] for t in workspace.tags.of_contact(b)["tags"]] == ["inactive"]


def test_unknown_contacts_and_no_target(sqlite_workspace: Workspace) -> None:
    add_contact(sqlite_workspace, "a")
    with pytest.raises(NotFound, match="'zz', '#999'"):
        sqlite_workspace.tags.add("x", contact_refs=["a", "zz", "#999"])
    with pytest.raises(NoContactsChosen):
        sqlite_workspace.tags.add("x")


def test_counts_give_each_tag_in_use_its_own_last_change(workspace: Workspace) -> None:
    a = add_contact(workspace, "a")
    b = add_contact(workspace, "b")
    workspace.tags.add("vip", contact_refs=["a", "b"])
    workspace.clock.advance(timedelta(hours=1))  # type: ignore[attr-defined]
    workspace.tags.add("gone", contact_refs=["a"])
    workspace.clock.advance(timedelta(hours=1))  # type: ignore[attr-defined]
    workspace.tags.add("late", contact_refs=[f"#{b}"])
    workspace.tags.remove("gone", contact_refs=[f"#{a}"])
    assert workspace.tags.counts() == [
        {"tag": "late", "contacts": 1, "last_change": T0 + timedelta(hours=2)},
        {"tag": "vip", "contacts": 2, "last_change": T0},
    ]
