"""Segments evaluated at a past instant see only what happened at or before it: orders,
events, tags and consent changes stamped later are ignored (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import insert, select

from tests.conftest import T0
from tests.shopdata import add_contact, add_event, add_order
from winback.segments.conditions import compile_condition, parse_condition
from winback.segments.history import needs_history
from winback.store.schema import contacts, orders
from winback.workspace import Workspace

D = timedelta(days=1)

EXTRA = {
    "vip.yaml": "name: VIP\ntag: vip\n",
    "recent-vip.yaml": "name: Recent VIP\ntag: vip\nwithin: 7d\n",
    "emailable.yaml": "name: Emailable\nconsent: email\n",
    "repeat.yaml": "name: Repeat buyers\nattribute: orders_count\nge: 2\n",
    "big.yaml": "name: Big spenders\nattribute: revenue_total\nge: 15\n",
    "opened.yaml": "name: Opened lately\nattribute: last_email_opened\nwithin: 30d\n",
}


def _shop(ws: Workspace) -> dict[str, int]:
    """a: orders 120 and 10 days ago; b: first order 5 days ago; c: a page view 50 days ago
    and a (human) open 20 days ago, a machine open 40 days ago; d: tagged vip 40 days ago,
    untagged 15 days ago; e: email consent imported today, then an unsubscribe of 25 days
    ago recorded (the older change is logged, the import's newer grant stands)."""
    ids = {name: add_contact(ws, name, created_at=T0 - 200 * D) for name in "abcde"}
    add_order(ws, ids["a"], T0 - 120 * D, 10.0)
    add_order(ws, ids["a"], T0 - 10 * D, 10.0)
    add_order(ws, ids["b"], T0 - 5 * D, 50.0)
    add_event(ws, ids["c"], "page_view", T0 - 50 * D)
    add_event(ws, ids["c"], "email_opened", T0 - 20 * D)
    add_event(ws, ids["c"], "email_opened", T0 - 40 * D, machine=True)
    ws.store.add_tag([ids["d"]], "vip", at=T0 - 40 * D, source="test")
    ws.store.remove_tag([ids["d"]], "vip", at=T0 - 15 * D, source="test")
    with ws.engine.begin() as conn:  # a cancelled order counts nowhere, then or now
        conn.execute(
            insert(orders).values(
                order_id="cancelled",
                contact_id=ids["c"],
                ordered_at=T0 - 60 * D,
                amount=99,
                currency="USD",
                status="cancelled",
            )  # fmt: skip
        )
    ws.store.set_consent(ids["e"], "email", True, at=T0, source="import")
    ws.store.set_consent(ids["e"], "email", False, at=T0 - 25 * D, source="unsubscribe")
    return ids


def _members(ws: Workspace, at: datetime) -> dict[str, set[str]]:
    result = ws.segments.refresh(at)
    out = {}
    for change in result.segments:
        out[change.name] = {m["customer_id"] for m in ws.segments.members(change.name)}
    return out


@pytest.fixture
def shop(workspace: Workspace) -> Workspace:
    folder = workspace.path / "segments"
    folder.mkdir(exist_ok=True)
    for name, text in EXTRA.items():
        (folder / name).write_text(text, encoding="utf-8")
    _shop(workspace)
    return workspace


EXPECTED: dict[int, dict[str, set[str]]] = {
    # days before T0: segment -> members
    45: {
        "Customers": {"a"},
        "Customers - Purchase last 90d": {"a"},
        "Customers - No Purchase last 90d": set(),
        "Active Users": {"c"},
        "VIP": set(),
        "Recent VIP": set(),
        "Emailable": {"e"},
        "Repeat buyers": set(),
        "Big spenders": set(),
        "Opened lately": set(),
    },
    38: {"VIP": {"d"}, "Recent VIP": {"d"}, "Active Users": {"c"}},
    30: {
        "Customers": {"a"},
        "Customers - Purchase last 90d": {"a"},
        "Active Users": {"c"},
        "VIP": {"d"},
        "Recent VIP": set(),
        "Emailable": {"e"},
        "Repeat buyers": set(),
        "Big spenders": set(),
        "Opened lately": set(),
    },
    12: {
        "Customers": {"a"},
        "Customers - Purchase last 90d": set(),
        "Customers - No Purchase last 90d": {"a"},
        "Customers Not Active": {"a"},
        "Active Users": {"c"},
        "VIP": set(),
        "Emailable": set(),
        "Opened lately": {"c"},
    },
    7: {
        "Customers": {"a"},
        "Customers - Purchase last 90d": {"a"},
        "Customers - No Purchase last 90d": set(),
        "Repeat buyers": {"a"},
        "Big spenders": {"a"},
    },
    0: {
        "Customers": {"a", "b"},
        "Customers - Purchase last 90d": {"a", "b"},
        "Repeat buyers": {"a"},
        "Big spenders": {"a", "b"},
        "VIP": set(),
        "Emailable": {"e"},
        "Opened lately": {"c"},
    },
}


def test_membership_at_past_instants(shop: Workspace) -> None:
    for days_before, expected in EXPECTED.items():
        got = _members(shop, T0 - days_before * D)
        for name, members in expected.items():
            assert got[name] == members, (days_before, name)


def test_present_uses_the_current_columns(shop: Workspace) -> None:
    conds = [d.condition for d in shop.segments.definitions().values()]
    with shop.engine.connect() as conn:
        assert not needs_history(conn, conds, T0)
        assert needs_history(conn, conds, T0 - 6 * D)
        # Only orders are read: the last one is 5 days old.
        orders_only = [parse_condition({"event": "purchase"}, path="t", location="")]
        assert not needs_history(conn, orders_only, T0 - 5 * D)
        assert needs_history(conn, orders_only, T0 - 5 * D - timedelta(seconds=1))
    # An event stamped ahead of the clock leaves a refresh at the clock's time on the
    # current columns.
    add_event(shop, add_contact(shop, "early"), "page_view", T0 + timedelta(hours=1))
    result = shop.segments.refresh(T0)
    assert all(c.reason != "evaluated at a past instant" for c in result.segments)
    past = shop.segments.refresh(T0 - 30 * D)
    assert {c.reason for c in past.segments} == {"evaluated at a past instant"}
    # The next refresh after a past one re-evaluates everything.
    again = shop.segments.refresh(T0)
    assert {c.mode for c in again.segments} == {"full"}
    assert {m["customer_id"] for m in shop.segments.members("Customers")} == {"a", "b"}


def test_history_and_current_columns_agree_now(shop: Workspace) -> None:
    """At the data's latest instant, both ways of evaluating give the same contacts."""
    for d in shop.segments.definitions().values():
        if d.depends_on:
            continue
        with shop.engine.connect() as conn:
            fast, slow = (
                set(
                    conn.execute(
                        select(contacts.c.customer_id).where(
                            compile_condition(
                                d.condition, now=T0, contact_id=contacts.c.id, history=history
                            )
                        )
                    ).scalars()
                )
                for history in (False, True)
            )
        if d.name != "Emailable":  # consent's first record is today's import
            assert fast == slow, d.name


def test_flow_conditions_read_history_inside_a_past_pass(shop: Workspace) -> None:
    """A flow's goal compiled while a simulation evaluates a past day ignores the orders
    after that day; outside it, the current columns answer."""
    from winback.flows.conditions import compile_sql
    from winback.segments.history import evaluating

    def buyers(at: datetime) -> set[str]:
        goal = compile_sql({"event": "purchase", "within": "30d"}, now=at, contact_id=contacts.c.id)
        with shop.engine.connect() as conn:
            return set(conn.execute(select(contacts.c.customer_id).where(goal)).scalars())

    # 20 days ago, a's order 10 days ago and b's 5 days ago had not happened yet.
    with evaluating(True):
        assert buyers(T0 - 20 * D) == set()
        assert buyers(T0 - 7 * D) == {"a"}
    assert buyers(T0 - 20 * D) == {"a", "b"}  # the current columns see the future


def test_overdue_audience_at_a_past_instant(workspace: Workspace) -> None:
    """The "overdue" schedule audience at a past instant: orders after it and an analysis
    made later do not count."""
    from sqlalchemy import update

    from winback.flows.triggers import overdue
    from winback.segments.history import evaluating

    ws = workspace
    cadence = add_contact(ws, "cadence")
    for days in (100, 70, 10):
        add_order(ws, cadence, T0 - days * D)
    scored = add_contact(ws, "scored")
    with ws.engine.begin() as conn:
        conn.execute(
            update(contacts).where(contacts.c.id == scored).values(days_overdue=5.0, analyzed_at=T0)
        )

    def audience(at: datetime) -> set[str]:
        with ws.engine.connect() as conn:
            query = select(contacts.c.customer_id).where(overdue(conn, at))
            return set(conn.execute(query).scalars())

    at = T0 - 30 * D
    # Then: gaps of 30 days, the last order 40 days ago; no analysis yet.
    with evaluating(True):
        assert audience(at) == {"cadence"}
    # The current columns see the order 10 days ago and today's analysis.
    assert audience(at) == {"scored"}


def test_analysis_as_of_a_past_day_reads_engagement_up_to_it(shop: Workspace) -> None:
    """c visited 50 days ago and opened an email (a human open) 20 days ago, after a
    machine open 40 days ago: as of 30 days ago only the visit had happened."""
    import dataclasses

    import numpy as np

    from winback.analytics import analysis as an
    from winback.analytics.summary import summary_data

    ws = shop
    with ws.engine.connect() as conn:
        c = conn.execute(select(contacts.c.id).where(contacts.c.customer_id == "c")).scalar_one()
    everyone = summary_data(ws.analytics.transactions(), an.day_of(T0.date()), unit_days=7.0)
    s = dataclasses.replace(everyone, customer=np.array([c], dtype=np.int64))
    then = ws.analytics.engagement_at(s, an.day_of((T0 - 30 * D).date()))
    assert np.isnan(then.last_open[0]) and np.isnan(then.last_click[0])
    assert then.last_visit[0] == an.day_of((T0 - 50 * D).date())
    now = ws.analytics.engagement_at(s, an.day_of(T0.date()))
    assert now.last_open[0] == an.day_of((T0 - 20 * D).date())


NEVER_BOUGHT = "name: Never purchased\nattribute: orders_count\neq: 0\n"


def _newcomers(ws: Workspace) -> None:
    """old: created 100 days ago, nothing else; new: created 20 days ago; imported: created
    today (an import without created_at) with an order 50 days ago; tagged: created today,
    tagged 70 days ago; buyer: created 100 days ago, first order 5 days ago."""
    (ws.path / "segments").mkdir(exist_ok=True)
    (ws.path / "segments" / "never.yaml").write_text(NEVER_BOUGHT, encoding="utf-8")
    add_contact(ws, "old", created_at=T0 - 100 * D)
    add_contact(ws, "new", created_at=T0 - 20 * D)
    add_order(ws, add_contact(ws, "imported", created_at=T0), T0 - 50 * D)
    ws.store.add_tag([add_contact(ws, "tagged", created_at=T0)], "x", at=T0 - 70 * D, source="t")
    add_order(ws, add_contact(ws, "buyer", created_at=T0 - 100 * D), T0 - 5 * D)


def test_contacts_created_after_an_instant_are_not_members_then(workspace: Workspace) -> None:
    """A contact exists from its first record (created_at, or an earlier order, event, tag
    or consent change): before it, no segment has it, "never purchased" included."""
    _newcomers(workspace)
    expected = {
        # days before T0: (Never purchased, Customers, Not Active Users)
        120: (set(), set(), set()),
        80: ({"old", "buyer"}, set(), {"old", "buyer"}),
        40: ({"old", "buyer", "tagged"}, {"imported"}, {"old", "buyer", "tagged", "imported"}),
        10: ({"old", "new", "buyer", "tagged"}, {"imported"}, {"old", "new", "buyer", "tagged", "imported"}),
        0: ({"old", "new", "tagged"}, {"imported", "buyer"}, {"old", "new", "buyer", "tagged", "imported"}),
    }  # fmt: skip
    for days_before, (never, customers, inactive) in expected.items():
        got = _members(workspace, T0 - days_before * D)
        assert got["Never purchased"] == never, days_before
        assert got["Customers"] == customers, days_before
        assert got["Not Active Users"] == inactive, days_before
    with workspace.engine.connect() as conn:  # no condition reads a fact after T0 - 30 days,
        assert needs_history(conn, [], T0 - 30 * D)  # but a contact was created later
        assert not needs_history(conn, [], T0)


REPLAY_FLOW = """
name: Welcome
trigger: {segment_entry: Never purchased}
entry: {reentry: never}
steps:
  - add_tag: welcomed
"""


@pytest.mark.slow
def test_a_replay_never_enrols_a_contact_created_later(workspace: Workspace) -> None:
    from winback.flows.simulate import simulate

    ws = workspace
    _newcomers(ws)
    ws.flows.folder.mkdir(exist_ok=True)
    (ws.flows.folder / "welcome.yaml").write_text(REPLAY_FLOW, encoding="utf-8")
    ws.flows.enable("welcome", now=T0 - 100 * D)
    # From 40 days ago for 10 days: "new" (created 20 days ago) does not exist yet.
    result = simulate(ws, "welcome", start=T0 - 40 * D, days=10)
    assert result.backtest is not None and result.backtest.replay
    assert result.entered == 3  # old, buyer (its order lies ahead) and tagged
    # Over the last 15 days "new" exists; "buyer" bought 5 days ago.
    later = simulate(ws, "welcome", start=T0 - 15 * D, days=5)
    assert later.entered == 4
