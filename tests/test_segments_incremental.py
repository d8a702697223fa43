"""Property: after any history of changes and clock moves, an incremental refresh leaves
exactly the membership a full refresh computes (a full refresh right after changes nothing)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, update

from tests.conftest import T0
from tests.shopdata import add_contact
from winback.store.schema import (
    contact_tags,
    contacts,
    segment_membership,
    segments,
    tag_history,
)
from winback.workspace import Workspace

D = timedelta(days=1)
TAGS = ("vip", "customer_not-active_after-reactivation")
COLUMNS = ("last_seen", "last_email_opened", "last_email_link_clicked", "purchase")

action = st.one_of(
    st.tuples(st.just("advance"), st.integers(0, 40), st.integers(0, 23)),
    st.tuples(st.just("touch"), st.integers(0, 9), st.sampled_from(COLUMNS), st.integers(0, 130)),
    st.tuples(st.just("tag"), st.integers(0, 9), st.sampled_from(TAGS), st.booleans()),
    st.tuples(st.just("consent"), st.integers(0, 9), st.booleans()),
    st.tuples(st.just("new"), st.integers(0, 130)),
)

EXTRA = {
    "recent-vip.yaml": "name: Recent VIP\ntag: vip\nwithin: 10d\n",
    "active-not-vip.yaml": "name: Active not VIP\nall:\n  - segment: Customers Active\n"
    "  - not: {tag: vip}\n  - consent: email\n",
    "old-signup.yaml": "name: Old signups\nattribute: created_at\nbefore: 30d\n",
}


def _apply(ws: Workspace, ids: list[int], step: tuple[Any, ...]) -> None:
    now = ws.clock.now()
    kind = step[0]
    if kind == "advance":
        ws.clock.set(now + step[1] * D + step[2] * timedelta(hours=1))  # type: ignore[attr-defined]
        return
    if kind == "new":
        ids.append(add_contact(ws, f"n{len(ids)}", last_seen=now - step[1] * D))
        return
    cid = ids[step[1] % len(ids)]
    if kind == "touch":
        at = now - step[3] * D
        values: dict[str, Any]
        if step[2] == "purchase":
            values = {"last_purchase_at": at, "orders_count": contacts.c.orders_count + 1}
        else:
            values = {step[2]: at}
        with ws.engine.begin() as c:
            c.execute(update(contacts).where(contacts.c.id == cid).values(**values, updated_at=now))
            c.execute(
                update(contacts)
                .where(contacts.c.id == cid, contacts.c.first_purchase_at.is_(None))
                .values(first_purchase_at=contacts.c.last_purchase_at)
            )
    elif kind == "tag":
        if step[3]:
            ws.store.add_tag([cid], step[2], at=now, source="test")
        else:
            ws.store.remove_tag([cid], step[2], at=now, source="test")
    elif kind == "consent":
        ws.store.set_consent(cid, "email", step[2], at=now, source="test")


@pytest.mark.slow
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    start=st.lists(st.tuples(st.integers(0, 130), st.integers(0, 130)), min_size=1, max_size=6),
    steps=st.lists(action, min_size=1, max_size=10),
)
def test_incremental_equals_full(
    workspace: Workspace, start: list[tuple[int, int]], steps: list[tuple[Any, ...]]
) -> None:
    ws = workspace
    with ws.engine.begin() as c:  # hypothesis reuses the workspace: start clean
        for table in (segment_membership, segments, tag_history, contact_tags, contacts):
            c.execute(delete(table))
    ws.clock.set(T0)  # type: ignore[attr-defined]
    for name, text in EXTRA.items():
        (ws.path / "segments" / name).write_text(text, encoding="utf-8")
    ids = [
        add_contact(
            ws,
            f"c{i}",
            last_purchase_at=T0 - p * D if p < 120 else None,
            first_purchase_at=T0 - p * D if p < 120 else None,
            last_email_opened=T0 - o * D,
            created_at=T0 - (o + p) * D,
        )
        for i, (p, o) in enumerate(start)
    ]
    ws.segments.refresh()
    for step in steps:
        _apply(ws, ids, step)
        incremental = ws.segments.refresh()
        assert any(s.mode == "incremental" for s in incremental.segments)
        check = ws.segments.refresh(full=True)
        wrong = [(s.name, s.entered, s.exited) for s in check.segments if s.entered or s.exited]
        assert not wrong, f"incremental refresh missed changes after {step}: {wrong}"
        for inc, full in zip(incremental.segments, check.segments, strict=True):
            assert inc.members == full.members, inc.name
