"""The condition language: every kind of condition, evaluated in SQL on both databases."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert, literal, select

from tests.conftest import T0
from tests.shopdata import add_contact, add_event, add_order, customer_ids
from winback.errors import DefinitionError
from winback.segments.conditions import (
    compile_condition,
    fast_path,
    parse_condition,
    parse_duration,
    referenced_segments,
)
from winback.store.schema import contact_tags, contacts, segment_membership, segments
from winback.workspace import Workspace

D = timedelta(days=1)


def build_shop(ws: Workspace) -> None:
    """Five contacts around the 90-day boundary (T0 is the clock's now)."""
    a = add_contact(
        ws,
        "a",
        first_name="Ann",
        email="ann@example.com",
        email_consent=True,
        rfm_segment="Champions",
        p_alive=0.9,
        cluster=2,
        attributes={
            "plan": "gold",
            "score": 7,
            "vip": True,
            "interests": ["books", "music"],
            "signup": "2025-01-01T00:00:00+00:00",
        },
    )
    add_order(ws, a, T0 - 10 * D, 30, items=[{"sku": "x", "category": "books"}], coupon="WELCOME")
    add_order(ws, a, T0 - 200 * D, 20, items=[{"sku": "y", "category": "garden"}])
    add_event(ws, a, "email_opened", T0 - 5 * D)

    b = add_contact(
        ws, "b", first_name="Bob", email_consent=False, attributes={"plan": "silver", "score": "7"}
    )
    add_order(ws, b, T0 - 89 * D, 15)
    add_event(ws, b, "email_opened", T0 - 3 * D, machine=True)
    add_event(ws, b, "email_opened", T0 - 120 * D)

    c = add_contact(ws, "c", first_name="", attributes={"signup": "2026-02-20T00:00:00+00:00"})
    add_order(ws, c, T0 - 90 * D, 15)
    add_event(ws, c, "page_view", T0 - 91 * D)

    d = add_contact(ws, "d", rfm_segment="Hibernating", p_alive=0.2, attributes={"score": 2.5})
    add_order(ws, d, T0 - 91 * D, 50)
    add_event(ws, d, "email_clicked", T0 - 2 * D)
    add_event(ws, d, "product_view", T0 - 30 * D, properties={"category": "books", "price": 12})

    e = add_contact(ws, "e")
    add_event(ws, e, "page_view", T0 - 400 * D, machine=True)  # a visit counts, flag or not
    with ws.engine.begin() as conn:
        conn.execute(
            insert(contact_tags).values(contact_id=e, tag="vip", added_at=T0, added_by="test")
        )
        sid = conn.execute(
            insert(segments)
            .values(name="Chosen", definition={}, updated_at=T0)
            .returning(segments.c.id)
        ).scalar_one()
        conn.execute(
            insert(segment_membership),
            [
                {"segment_id": sid, "contact_id": e, "entered_at": T0 - D, "exited_at": None},
                {"segment_id": sid, "contact_id": d, "entered_at": T0 - 9 * D, "exited_at": T0},
            ],
        )


ALL = {"a", "b", "c", "d", "e"}

CASES: list[tuple[Any, set[str]]] = [
    # standard attributes
    ({"attribute": "first_name", "eq": "Ann"}, {"a"}),
    ({"attribute": "first_name", "ne": "Ann"}, {"b"}),
    ({"attribute": "first_name", "is_unknown": True}, {"c", "d", "e"}),
    ({"attribute": "first_name", "has_any_value": True}, {"a", "b"}),
    ({"attribute": "first_name", "in": ["Ann", "Bob", "Zed"]}, {"a", "b"}),
    ({"attribute": "first_name", "not_in": ["Ann"]}, {"b"}),
    ({"attribute": "first_name", "contains": "NN"}, {"a"}),
    ({"attribute": "orders_count", "ge": 2}, {"a"}),
    ({"attribute": "orders_count", "eq": 0}, {"e"}),
    ({"attribute": "revenue_total", "gt": 40}, {"a", "d"}),
    ({"attribute": "rfm_segment", "eq": "Hibernating"}, {"d"}),
    ({"attribute": "p_alive", "lt": 0.5}, {"d"}),
    ({"attribute": "cluster", "eq": 2}, {"a"}),
    ({"attribute": "email_consent", "eq": False}, {"b"}),
    # relative dates on a standard date column, at the 90-day boundary
    ({"attribute": "last_purchase_at", "within": "90d"}, {"a", "b", "c"}),
    ({"attribute": "last_purchase_at", "less_than_days_ago": 90}, {"a", "b", "c"}),
    ({"attribute": "last_purchase_at", "before": "90d"}, {"d"}),
    ({"attribute": "last_purchase_at", "more_than_days_ago": 89}, {"c", "d"}),
    ({"attribute": "last_purchase_at", "gt": "2025-12-01T09:00:00+00:00"}, {"a", "b"}),
    # custom attributes (JSON)
    ({"attribute": "plan", "eq": "gold"}, {"a"}),
    ({"attribute": "attributes.plan", "in": ["gold", "silver"]}, {"a", "b"}),
    ({"attribute": "plan", "not_in": ["gold"]}, {"b"}),
    ({"attribute": "score", "ge": 5}, {"a"}),  # b's "7" is text, not a number
    ({"attribute": "score", "eq": "7"}, {"b"}),
    ({"attribute": "score", "lt": 3}, {"d"}),
    ({"attribute": "vip", "eq": True}, {"a"}),
    ({"attribute": "interests", "contains": "music"}, {"a"}),
    ({"attribute": "plan", "contains": "ILV"}, {"b"}),
    ({"attribute": "plan", "is_unknown": True}, {"c", "d", "e"}),
    ({"attribute": "score", "has_any_value": True}, {"a", "b", "d"}),
    ({"attribute": "signup", "within": "30d"}, {"c"}),
    ({"attribute": "signup", "before": "30d"}, {"a"}),
    # events: purchases at 10, 89, 90, 91 days (a also 200)
    ({"event": "purchase"}, {"a", "b", "c", "d"}),
    ({"event": "purchase", "performed": False}, {"e"}),
    ({"event": "purchase", "within": "90d"}, {"a", "b", "c"}),
    ({"event": "purchase", "within": "89d"}, {"a", "b"}),
    ({"event": "purchase", "occurrence": "last", "before": "90d"}, {"d"}),
    ({"event": "purchase", "before": "90d"}, {"a", "d"}),
    ({"event": "purchase", "occurrence": "first", "within": "90d"}, {"b", "c"}),
    ({"event": "purchase", "occurrence": "first", "before": "100d"}, {"a"}),
    ({"event": "purchase", "count": {"ge": 2}}, {"a"}),
    ({"event": "purchase", "count": {"eq": 0}}, {"e"}),
    ({"event": "purchase", "within": "90d", "count": {"eq": 1}}, {"a", "b", "c"}),
    ({"event": "purchase", "where": {"category": "books"}}, {"a"}),
    ({"event": "purchase", "where": {"category": {"in": ["garden", "tools"]}}}, {"a"}),
    ({"event": "purchase", "within": "30d", "where": {"category": "garden"}}, set()),
    ({"event": "purchase", "where": {"amount": {"ge": 50}}}, {"d"}),
    ({"event": "purchase", "where": {"coupon": "WELCOME"}}, {"a"}),
    # machine opens do not count unless asked
    ({"event": "email_opened", "within": "30d"}, {"a"}),
    ({"event": "email_opened", "within": "30d", "include_machine": True}, {"a", "b"}),
    ({"event": "email_opened", "occurrence": "last", "before": "90d"}, {"b"}),
    ({"event": "email_opened"}, {"a", "b"}),
    ({"event": "email_clicked", "within": "7d"}, {"d"}),
    ({"event": ["page_view", "product_view", "cart_add"], "within": "90d"}, {"d"}),
    ({"event": ["page_view", "product_view", "cart_add"], "within": "91d"}, {"c", "d"}),
    ({"event": ["page_view", "product_view", "cart_add"], "before": "365d"}, {"e"}),
    ({"event": ["page_view", "email_opened"], "within": "4d"}, set()),
    ({"event": ["page_view", "email_opened"], "within": "6d"}, {"a"}),
    ({"event": "product_view", "where": {"category": "books"}}, {"d"}),
    ({"event": "product_view", "where": {"price": {"gt": 10}}}, {"d"}),
    ({"event": "product_view", "where": {"category": "garden"}}, set()),
    ({"event": ["purchase", "email_clicked"], "within": "7d"}, {"d"}),
    # tags, segments, consent
    ({"tag": "vip"}, {"e"}),
    ({"tag": ["vip", "other"], "within": "1d"}, {"e"}),
    ({"tag": "vip", "within": "0d"}, {"e"}),
    ({"tag": "absent"}, set()),
    ({"segment": "Chosen"}, {"e"}),
    ({"in_segment": "Chosen"}, {"e"}),
    ({"consent": "email"}, {"a"}),
    # combinations; not is an exact complement even over unknown values
    ({"all": [{"event": "purchase"}, {"attribute": "plan", "has_any_value": True}]}, {"a", "b"}),
    ({"any": [{"tag": "vip"}, {"consent": "email"}]}, {"a", "e"}),
    ({"not": {"attribute": "plan", "eq": "gold"}}, ALL - {"a"}),
    ({"not": {"attribute": "first_name", "ne": "Ann"}}, ALL - {"b"}),
    ({"not": {"any": [{"event": "purchase"}, {"tag": "vip"}]}}, set()),
    (
        {
            "all": [
                {"attribute": "orders_count", "gt": 0},
                {"not": {"event": "purchase", "within": "90d"}},
                {"not": {"event": "email_opened", "within": "90d"}},
                {"not": {"event": "email_clicked", "within": "90d"}},
                {"not": {"event": ["page_view", "product_view", "cart_add"], "within": "90d"}},
            ]
        },
        set(),
    ),
]


@pytest.mark.parametrize(
    ("use_maintained", "scan"),
    [(True, False), (False, False), (True, True)],
    ids=["maintained", "events", "unindexed"],
)
def test_every_condition(workspace: Workspace, use_maintained: bool, scan: bool) -> None:
    build_shop(workspace)
    wrong = []
    for data, expected in CASES:
        expr = compile_condition(
            parse_condition(data),
            now=T0,
            contact_id=contacts.c.id,
            use_maintained=use_maintained,
            scan=scan,
        )
        got = customer_ids(workspace, expr)
        if got != expected:
            wrong.append(f"{data}: expected {sorted(expected)}, got {sorted(got)}")
    assert not wrong, "\n".join(wrong)


def test_correlated_to_another_table_and_since_entry(workspace: Workspace) -> None:
    """Used over a flow-like table (segment_membership here): wrapped in EXISTS over contacts,
    and `since: entry` measures from the entry column."""
    build_shop(workspace)
    sm = segment_membership
    bought = parse_condition({"event": "purchase", "since": "entry"})
    for use_maintained in (True, False):
        expr = compile_condition(
            bought,
            now=T0,
            contact_id=sm.c.contact_id,
            entered_at=sm.c.entered_at,
            use_maintained=use_maintained,
        )
        with workspace.engine.connect() as c:
            rows = c.execute(select(sm.c.contact_id).where(expr)).all()
        assert rows == []  # e never bought; d entered 9 days ago, bought 91 days ago
    entry = literal(T0 - 95 * D)
    expr = compile_condition(bought, now=T0, contact_id=contacts.c.id, entered_at=entry)
    assert customer_ids(workspace, expr) == {"a", "b", "c", "d"}
    expr = compile_condition(
        parse_condition({"attribute": "plan", "eq": "gold"}), now=T0, contact_id=sm.c.contact_id
    )
    with workspace.engine.connect() as c:
        assert c.execute(select(sm.c.contact_id).where(expr)).all() == []


def test_since_entry_needs_a_flow() -> None:
    with pytest.raises(DefinitionError, match="since: entry"):
        compile_condition(
            parse_condition({"event": "purchase", "since": "entry"}),
            now=T0,
            contact_id=contacts.c.id,
        )


def test_fast_paths_use_maintained_columns() -> None:
    def fp(data: Any) -> Any:
        cond = parse_condition(data)
        path = fast_path(cond)  # type: ignore[arg-type]
        return (path.column, path.op) if path else None

    assert fp({"event": "purchase", "within": "90d"}) == ("last_purchase_at", "ge")
    assert fp({"event": "purchase"}) == ("first_purchase_at", "present")
    assert fp({"event": "purchase", "before": "90d"}) == ("first_purchase_at", "lt")
    assert fp({"event": "purchase", "occurrence": "last", "before": "9d"}) == (
        "last_purchase_at",
        "lt",
    )
    assert fp({"event": ["cart_add", "page_view", "product_view"], "within": "9d"}) == (
        "last_seen",
        "ge",
    )
    assert fp({"event": "email_opened", "within": "9d", "include_machine": True}) is None
    assert fp({"event": "email_opened", "occurrence": "first", "within": "9d"}) is None
    assert fp({"event": "page_view", "within": "9d"}) is None
    assert fp({"event": "purchase", "within": "9d", "where": {"coupon": "X"}}) is None
    sql = str(
        compile_condition(
            parse_condition({"not": {"event": "email_clicked", "within": "90d"}}),
            now=T0,
            contact_id=contacts.c.id,
        )
    )
    assert "last_email_link_clicked" in sql and "events" not in sql


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"all": [{"tag": "a"}, {"tag": "b"}, {"event": "purchase", "within": "ninety"}]},
            "x.yaml:all[2].within: expected a duration like 90d, 12h or 2w, got 'ninety'",
        ),
        ({"attribute": "orders_count"}, "x.yaml: attribute condition on 'orders_count' needs"),
        ({"attribute": "orders_count", "gt": "many"}, "'orders_count' is a number, got 'many'"),
        ({"attribute": "first_name", "within": "9d"}, "within needs a date attribute"),
        ({"any": [{"colour": "red"}]}, "x.yaml:any[0]: expected a condition: a mapping"),
        ({"not": {"tag": "x", "colour": 1}}, "x.yaml:not: unknown key 'colour'"),
        ({"event": "purchase", "within": "9d", "before": "3d"}, "give one time window"),
        ({"consent": "fax"}, "x.yaml:consent: "),
        ({"event": "purchase", "count": {"ge": "3"}}, "x.yaml:count.ge: "),
        ({"all": []}, "x.yaml:all: "),
    ],
)
def test_validation_errors_name_file_and_place(data: Any, message: str) -> None:
    with pytest.raises(DefinitionError) as info:
        parse_condition(data, path="x.yaml")
    assert message in str(info.value), str(info.value)


def test_location_prefix_and_helpers() -> None:
    with pytest.raises(DefinitionError) as info:
        parse_condition({"tag": 3}, path="flows/f.yaml", location="steps[2].if")
    assert str(info.value).startswith("flows/f.yaml:steps[2].if.tag: expected a tag")
    assert info.value.location == "steps[2].if.tag"
    assert parse_duration("2w") == timedelta(days=14)
    assert parse_duration("12 hours") == timedelta(hours=12)
    cond = parse_condition({"all": [{"segment": "A"}, {"not": {"in_segment": "B"}}]})
    assert referenced_segments(cond) == {"A", "B"}
