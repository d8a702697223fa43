"""Segments: files and defaults, materialised membership with history, incremental refresh."""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.conftest import T0
from tests.shopdata import add_contact, add_event, add_order
from winback.errors import DefinitionError, NotFound
from winback.store.schema import segment_membership, segments
from winback.workspace import Workspace

D = timedelta(days=1)
DEFAULT_NAMES = {
    "Active Users",
    "Not Active Users",
    "Customers",
    "Customers - Purchase last 90d",
    "Customers - No Purchase last 90d",
    "Customers Not Active",
    "Customers Active",
    "Customers Not Active after React",
}
REACT_TAG = "customer_not-active_after-reactivation"


def write(ws: Workspace, name: str, text: str) -> None:
    (ws.path / "segments" / name).write_text(text, encoding="utf-8")


def membership(ws: Workspace) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for name in ws.segments.definitions():
        try:
            out[name] = {m["customer_id"] for m in ws.segments.members(name)}
        except NotFound:
            out[name] = set()
    return out


def crafted_shop(ws: Workspace) -> dict[str, int]:
    ids = {}
    ids["active"] = add_contact(ws, "active", email_consent=True)
    add_order(ws, ids["active"], T0 - 10 * D)
    add_event(ws, ids["active"], "email_opened", T0 - 5 * D)
    ids["dormant"] = add_contact(ws, "dormant", email_consent=True)
    add_order(ws, ids["dormant"], T0 - 120 * D)
    add_event(ws, ids["dormant"], "email_opened", T0 - 100 * D)
    ids["tagged"] = add_contact(ws, "tagged")
    add_order(ws, ids["tagged"], T0 - 200 * D)
    ws.store.add_tag([ids["tagged"]], REACT_TAG, at=T0 - D, source="test")
    ids["browsing"] = add_contact(ws, "browsing")
    add_order(ws, ids["browsing"], T0 - 120 * D)
    add_event(ws, ids["browsing"], "page_view", T0 - 10 * D)
    ids["lead"] = add_contact(ws, "lead")
    add_event(ws, ids["lead"], "email_clicked", T0 - 3 * D)
    ids["ghost"] = add_contact(ws, "ghost")
    ids["proxied"] = add_contact(ws, "proxied")
    add_order(ws, ids["proxied"], T0 - 100 * D)
    add_event(ws, ids["proxied"], "email_opened", T0 - 2 * D, machine=True)
    return ids


def test_defaults_are_the_seed_segments(workspace: Workspace) -> None:
    defs = workspace.segments.definitions()
    assert set(defs) == DEFAULT_NAMES
    order = list(defs)
    assert order.index("Customers Not Active") > order.index("Not Active Users")
    assert order.index("Customers Not Active after React") > order.index("Customers Not Active")
    assert all(d.is_default for d in defs.values())


def test_defaults_behave_as_the_seed_describes(workspace: Workspace) -> None:
    crafted_shop(workspace)
    result = workspace.segments.refresh()
    assert {s.mode for s in result.segments} == {"full"}
    got = membership(workspace)
    assert got == {
        "Active Users": {"active", "browsing", "lead"},
        "Not Active Users": {"dormant", "tagged", "ghost", "proxied"},
        "Customers": {"active", "dormant", "tagged", "browsing", "proxied"},
        "Customers - Purchase last 90d": {"active"},
        "Customers - No Purchase last 90d": {"dormant", "tagged", "browsing", "proxied"},
        "Customers Not Active": {"dormant", "tagged", "proxied"},
        "Customers Active": {"active"},
        "Customers Not Active after React": {"tagged"},
    }
    assert result.get("Customers Not Active").members == 3
    assert {r["name"]: r["members"] for r in workspace.segments.list()}["Customers"] == 5


def test_entry_exit_history_and_idempotence(workspace: Workspace) -> None:
    ids = crafted_shop(workspace)
    segs = workspace.segments
    segs.refresh()
    again = segs.refresh()
    assert all((s.entered, s.exited) == (0, 0) for s in again.segments)
    assert {s.mode for s in again.segments} == {"incremental"}
    # 96 days later the purchase (10 days before T0) and the open are over 90 days old.
    later = T0 + 96 * D
    workspace.clock.set(later)  # type: ignore[attr-defined]
    result = segs.refresh()
    assert result.get("Customers - Purchase last 90d").exited == 1
    assert result.get("Customers Not Active").entered == 2  # active, and browsing
    assert segs.is_member("Customers Not Active", ids["active"])
    # a new purchase brings them back: a second stint
    workspace.clock.set(later + D)  # type: ignore[attr-defined]
    add_order(workspace, ids["active"], later + D)
    segs.refresh()
    assert not segs.is_member("Customers Not Active", ids["active"])
    stints = [
        (s["segment"], s["entered_at"], s["exited_at"])
        for s in segs.of_contact(ids["active"], history=True)
        if s["segment"] == "Customers - Purchase last 90d"
    ]
    assert stints == [
        ("Customers - Purchase last 90d", T0, later),
        ("Customers - Purchase last 90d", later + D, None),
    ]
    current = {s["segment"] for s in segs.of_contact(ids["active"])}
    assert current == {"Customers", "Customers - Purchase last 90d", "Not Active Users"}


@pytest.mark.slow
def test_boundary_89_90_91_days(workspace: Workspace) -> None:
    for days in (89, 90, 91):
        cid = add_contact(workspace, f"c{days}")
        add_order(workspace, cid, T0 - days * D)
    workspace.segments.refresh()
    got = membership(workspace)
    assert got["Customers - Purchase last 90d"] == {"c89", "c90"}
    assert got["Customers - No Purchase last 90d"] == {"c91"}
    # one second later, the 90-day-old purchase is more than 90 days ago
    workspace.clock.set(T0 + timedelta(seconds=1))  # type: ignore[attr-defined]
    result = workspace.segments.refresh()
    assert result.get("Customers - Purchase last 90d").mode == "incremental"
    got = membership(workspace)
    assert got["Customers - Purchase last 90d"] == {"c89"}
    assert got["Customers - No Purchase last 90d"] == {"c90", "c91"}


def test_workspace_file_overrides_default_and_change_forces_full(workspace: Workspace) -> None:
    crafted_shop(workspace)
    workspace.segments.refresh()
    write(
        workspace,
        "active.yaml",
        "name: Active Users\ndescription: only clickers\n"
        "attribute: last_email_link_clicked\nwithin: 30d\n",
    )
    definition = workspace.segments.get("active users")
    assert definition.source == "segments/active.yaml"
    result = workspace.segments.refresh()
    change = result.get("Active Users")
    assert (change.mode, change.exited, change.members) == ("full", 2, 1)
    assert result.get("Customers Active").exited == 1  # depends on Active Users
    assert membership(workspace)["Active Users"] == {"lead"}


def test_removed_segment_closes_its_stints(workspace: Workspace) -> None:
    crafted_shop(workspace)
    write(workspace, "vip.yaml", "name: Tagged\ntag: customer_not-active_after-reactivation\n")
    workspace.segments.refresh()
    assert membership(workspace)["Tagged"] == {"tagged"}
    (workspace.path / "segments" / "vip.yaml").unlink()
    result = workspace.segments.refresh()
    assert result.closed == 1
    with workspace.engine.connect() as c:
        open_stints = c.execute(
            select(segment_membership.c.id)
            .join(segments, segments.c.id == segment_membership.c.segment_id)
            .where(segments.c.name == "Tagged", segment_membership.c.exited_at.is_(None))
        ).all()
    assert open_stints == []


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {
                "x.yaml": "name: X\nall:\n  - tag: a\n  - tag: b\n"
                "  - {event: purchase, within: ninety}\n"
            },
            "segments/x.yaml:all[2].within: expected a duration like 90d, 12h or 2w, got 'ninety'",
        ),
        ({"x.yaml": "name: X\nall: [\n"}, "segments/x.yaml:line "),
        ({"x.yaml": "name: X\n"}, "segments/x.yaml: no condition"),
        ({"x.yaml": "name: X\nany:\n  - segment: Nope\n"}, "segments/x.yaml:any[0].segment: "),
        (
            {"a.yaml": "name: A\nsegment: B\n", "b.yaml": "name: B\nnot: {segment: A}\n"},
            "cycle: A -> B -> A",
        ),
        (
            {"a.yaml": "name: Same\ntag: x\n", "b.yaml": "name: Same\ntag: y\n"},
            "segments/b.yaml:name: segment 'Same' is also defined in segments/a.yaml",
        ),
        ({"x.yaml": "name: X\ntag: x\ncolour: red\n"}, "segments/x.yaml: unknown key 'colour'"),
    ],
)
def test_validation_errors(
    sqlite_workspace: Workspace, files: dict[str, str], message: str
) -> None:
    for name, text in files.items():
        write(sqlite_workspace, name, text)
    with pytest.raises(DefinitionError) as info:
        sqlite_workspace.segments.load()
    assert message in str(info.value), str(info.value)


@pytest.mark.slow
def test_csv_export_is_safe_for_spreadsheets(workspace: Workspace, tmp_path: Path) -> None:
    cid = add_contact(
        workspace,
        "=1+2",
        email="@SUM(A1)@example.com",
        first_name='=HYPERLINK("http://evil","x")',
        last_name="-2",
    )
    add_order(workspace, cid, T0 - D)
    add_contact(workspace, "plain", first_name="Zoe")
    write(workspace, "all.yaml", "name: Everyone\nattribute: customer_id\nhas_any_value: true\n")
    workspace.segments.refresh()
    out = tmp_path / "everyone.csv"
    assert workspace.segments.export("Everyone", out) == 2
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    first = next(r for r in rows if r["customer_id"].endswith("1+2"))
    assert first["customer_id"] == "'=1+2"
    assert first["email"] == "'@SUM(A1)@example.com"
    assert first["first_name"].startswith("'=HYPERLINK")
    assert first["last_name"] == "'-2"
    assert next(r for r in rows if r["customer_id"] == "plain")["first_name"] == "Zoe"


def test_unknown_segment_is_reported(sqlite_workspace: Workspace) -> None:
    with pytest.raises(NotFound, match="no segment named 'Nope'"):
        sqlite_workspace.segments.members("Nope")
    with pytest.raises(NotFound, match="not been refreshed"):
        sqlite_workspace.segments.members("Customers")


def test_unquoted_yaml_dates(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    add_contact(ws, "old", created_at=T0 - 400 * D)
    add_contact(ws, "new", created_at=T0 - 4 * D)
    write(ws, "early.yaml", "name: Early\nattribute: created_at\nlt: 2026-01-01\n")
    ws.segments.refresh()
    assert membership(ws)["Early"] == {"old"}
