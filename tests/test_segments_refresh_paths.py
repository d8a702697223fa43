"""The shortcuts that make a first full refresh fast: segments refreshed earlier in
the pass are tested through their condition instead of their membership (inlining), the first
refresh of an empty segment only inserts, and SQLite writes with foreign key checks off on a
connection whose settings are restored afterwards. Each must give exactly what the plain
statements give."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from tests.conftest import T0
from tests.shopdata import add_contact, add_event, customer_ids
from winback.segments.conditions import compile_condition, parse_condition
from winback.segments.refresh import inlinable, scans_events
from winback.store.schema import (
    contact_tags,
    contacts,
    events,
    orders,
    segment_membership,
    segments,
    tag_history,
)
from winback.workspace import Workspace

D = timedelta(days=1)
REACT = "customer_not-active_after-reactivation"

#: Extra segments: one that scans events (so it is looked up, not inlined), segments built on
#: it and on inlined ones, a negation and a tag window.
EXTRA = {
    "openers.yaml": "name: Openers\nevent: email_opened\nwithin: 60d\ncount: {ge: 2}\n",
    "loyal-openers.yaml": "name: Loyal openers\nall:\n  - segment: Openers\n"
    "  - segment: Customers\n",
    "quiet-vip.yaml": "name: Quiet VIP\nall:\n  - segment: Customers Not Active\n"
    "  - not: {segment: Openers}\n  - tag: vip\n    within: 20d\n",
    "either.yaml": "name: Either\nany:\n  - segment: Loyal openers\n"
    "  - not: {segment: Active Users}\n",
}


def _cond(data: Any) -> Any:
    return parse_condition(data)


def test_inlinable_is_about_what_the_condition_reads() -> None:
    row_only = _cond({"all": [{"attribute": "last_seen", "within": "90d"}, {"tag": "vip"}]})
    assert inlinable(row_only, {})
    fast_event = _cond({"event": "purchase", "occurrence": "last", "before": "90d"})
    assert inlinable(fast_event, {})  # answered by last_purchase_at
    counted = _cond({"event": "email_opened", "within": "60d", "count": {"ge": 2}})
    assert scans_events(counted, {}) and not inlinable(counted, {})
    uses = _cond({"all": [{"segment": "Openers"}, {"consent": "email"}]})
    assert inlinable(uses, {})  # Openers is not inlined: a membership lookup
    assert not inlinable(uses, {"Openers": counted})  # would repeat the scan


def _members_by_lookup(ws: Workspace) -> dict[str, set[str]]:
    """Each segment's condition evaluated with every ``segment:`` as a lookup of the stored
    membership (the meaning the flows see), without inlining."""
    with ws.engine.connect() as c:
        ids = {n: int(i) for n, i in c.execute(select(segments.c.name, segments.c.id))}
    out = {}
    for name, definition in ws.segments.definitions().items():
        expr = compile_condition(
            definition.condition, now=ws.clock.now(), contact_id=contacts.c.id, segment_ids=ids
        )
        out[name] = customer_ids(ws, expr)
    return out


def _stored(ws: Workspace) -> dict[str, set[str]]:
    return {
        name: {m["customer_id"] for m in ws.segments.members(name)}
        for name in ws.segments.definitions()
    }


contact = st.tuples(
    st.one_of(st.none(), st.integers(0, 200)),  # last purchase, days ago
    st.one_of(st.none(), st.integers(0, 200)),  # last seen
    st.lists(st.integers(0, 120), max_size=3),  # email opens, days ago
    st.booleans(),  # vip
    st.booleans(),  # reactivation tag
)


@pytest.mark.slow
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(shop=st.lists(contact, min_size=1, max_size=6), later=st.integers(0, 70))
def test_inlined_segments_equal_membership_lookups(
    workspace: Workspace, shop: list[tuple[Any, ...]], later: int
) -> None:
    ws = workspace
    with ws.engine.begin() as c:  # hypothesis reuses the workspace: start clean
        for table in (segment_membership, segments, tag_history, contact_tags, events, orders):
            c.execute(delete(table))
        c.execute(delete(contacts))
    ws.clock.set(T0)  # type: ignore[attr-defined]
    for name, text in EXTRA.items():
        (ws.path / "segments" / name).write_text(text, encoding="utf-8")
    for i, (bought, seen, opens, vip, react) in enumerate(shop):
        cid = add_contact(
            ws,
            f"c{i}",
            email_consent=True,
            last_purchase_at=None if bought is None else T0 - bought * D,
            first_purchase_at=None if bought is None else T0 - (bought + 30) * D,
            last_seen=None if seen is None else T0 - seen * D,
        )
        for days in opens:
            add_event(ws, cid, "email_opened", T0 - days * D, maintain_columns=False)
        if opens:
            with ws.engine.begin() as c:
                c.execute(
                    contacts.update()
                    .where(contacts.c.id == cid)
                    .values(last_email_opened=T0 - min(opens) * D)
                )
        for tag, on in (("vip", vip), (REACT, react)):
            if on:
                ws.store.add_tag([cid], tag, at=T0 - 10 * D, source="test")
    first = ws.segments.refresh()
    assert {s.mode for s in first.segments} == {"full"}
    assert _stored(ws) == _members_by_lookup(ws)
    ws.clock.set(T0 + later * D)  # type: ignore[attr-defined]
    second = ws.segments.refresh()
    assert any(s.mode == "incremental" for s in second.segments)
    assert _stored(ws) == _members_by_lookup(ws)
    forced = ws.segments.refresh(full=True)
    assert not [(s.name, s.entered, s.exited) for s in forced.segments if s.entered or s.exited]


def _pragmas(ws: Workspace) -> list[tuple[int, int]]:
    """(foreign_keys, cache_size) of every idle pooled connection."""
    held = [ws.engine.connect() for _ in range(ws.engine.pool.checkedin())]  # type: ignore[attr-defined]
    try:
        return [
            (
                c.exec_driver_sql("PRAGMA foreign_keys").scalar_one(),
                c.exec_driver_sql("PRAGMA cache_size").scalar_one(),
            )
            for c in held
        ]
    finally:
        for c in held:
            c.close()


def test_sqlite_refresh_restores_connection_settings(
    sqlite_workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = sqlite_workspace
    for i in range(5):
        add_contact(ws, f"c{i}", last_seen=T0 - 40 * i * D, last_purchase_at=T0 - 50 * i * D)
    before = _pragmas(ws)
    assert before and all(fk == 1 for fk, _ in before)
    result = ws.segments.refresh()
    assert result.get("Not Active Users").entered == 2  # seen 120 and 160 days ago
    assert _pragmas(ws) == before
    with ws.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA foreign_key_check").all() == []

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr("winback.segments.service.refresh_one", broken)
    with pytest.raises(RuntimeError, match="boom"):
        ws.segments.refresh(T0 + D)
    assert _pragmas(ws) == before
    with ws.engine.connect() as c:  # rolled back: nothing of the failed pass remains
        stamped = c.execute(select(segments.c.name).where(segments.c.refreshed_at > T0)).scalars()
        assert list(stamped) == []


def test_refresh_of_a_changed_definition_diffs_open_stints(workspace: Workspace) -> None:
    """A changed definition resets the member count but keeps the open stints: the refresh
    must take the diff path (contacts still matching keep their stint)."""
    ws = workspace
    for i in range(4):
        add_contact(ws, f"c{i}", last_seen=T0 - 30 * i * D)  # 0, 30, 60, 90 days
    ws.segments.refresh()
    assert _stored(ws)["Active Users"] == {"c0", "c1", "c2", "c3"}
    (ws.path / "segments" / "a.yaml").write_text(
        "name: Active Users\nattribute: last_seen\nwithin: 45d\n", encoding="utf-8"
    )
    ws.clock.set(T0 + D)  # type: ignore[attr-defined]
    change = ws.segments.refresh().get("Active Users")
    assert (change.mode, change.entered, change.exited, change.members) == ("full", 0, 2, 2)
    with ws.engine.connect() as c:
        stints = c.execute(
            select(segment_membership.c.contact_id, segment_membership.c.exited_at)
        ).all()
    assert len(stints) == len({(s.contact_id, s.exited_at) for s in stints})
    assert _stored(ws)["Active Users"] == {"c0", "c1"}
