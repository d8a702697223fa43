"""Contact activity is written one way, whatever brings it: a file import, the event API,
the simulator, the flow engine or the tag commands leave the same contact rows, histories
and logs (``winback.store.activity``)."""

from __future__ import annotations

import csv
import itertools
import json
import random
import threading
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update

from tests.conftest import T0
from winback.clock import FixedClock
from winback.delivery.inbound import EventIn
from winback.flows.simulate import record_orders
from winback.store import activity
from winback.store.schema import consent_log, contacts, tag_history
from winback.workspace import Workspace

D = timedelta(days=1)
H = timedelta(hours=1)
BEFORE = T0 - 30 * D
COMPARED = (
    "orders_count",
    "revenue_total",
    "first_purchase_at",
    "last_purchase_at",
    "last_email_opened",
    "last_email_link_clicked",
    "last_seen",
    "email_consent",
    "updated_at",
)
_serial = itertools.count()

#: (customer, type, days before T0, properties): out of order, machine opens and visits,
#: events that move nothing, a repeated unsubscribe, purchases.
ACTIVITY: list[tuple[int, str, timedelta, dict[str, Any]]] = [
    (0, "email_opened", 5 * D, {}),
    (0, "email_opened", 2 * D, {"machine": True}),
    (0, "email_opened", 7 * D, {}),
    (0, "email_clicked", 6 * D, {}),
    (0, "email_clicked", 1 * D, {"machine": True}),
    (0, "purchase", 9 * D, {"order_id": "A", "amount": "10.50"}),
    (0, "purchase", 3 * D, {"order_id": "B", "amount": "4.25"}),
    (1, "page_view", 3 * D, {"machine": True}),
    (1, "product_view", 4 * D, {}),
    (1, "cart_add", 8 * D, {}),
    (1, "feedback_submitted", 1 * D, {}),
    (2, "email_unsubscribed", 4 * D, {}),
    (2, "email_unsubscribed", 2 * D, {}),
    (2, "purchase", 5 * D, {"order_id": "C", "amount": "100"}),
    (3, "sales_call", 1 * D, {}),
]


def people(ws: Workspace, prefix: str, n: int) -> list[int]:
    """``n`` contacts ``<prefix>0...`` created long before, with email consent."""
    names = [f"{prefix}{i}" for i in range(n)]
    with ws.engine.begin() as conn:
        ids = ws.store.ensure_contacts(names, at=BEFORE, conn=conn)
        conn.execute(
            update(contacts).where(contacts.c.id.in_(list(ids.values()))).values(email_consent=True)
        )
    return [ids[name] for name in names]


def import_events(ws: Workspace, path: Path, prefix: str, activity: list[Any]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["event_id", "customer_id", "type", "occurred_at", "properties"])
        for who, kind, ago, props in activity:
            if "order_id" in props:
                props = {**props, "order_id": f"{prefix}{props['order_id']}"}
            at = (T0 - ago).isoformat()
            out.writerow(
                [f"{prefix}e{next(_serial)}", f"{prefix}{who}", kind, at, json.dumps(props)]
            )
    ws.imports.events(path)


def api_events(ws: Workspace, prefix: str, activity: list[Any]) -> None:
    ws.delivery.ingest(
        [
            EventIn(
                customer_id=f"{prefix}{who}",
                type=kind,
                occurred_at=T0 - ago,
                event_id=f"{prefix}e{next(_serial)}",
                properties={**props, "order_id": f"{prefix}{props['order_id']}"}
                if "order_id" in props
                else props,
            )
            for who, kind, ago, props in activity
        ]
    )


def rows(ws: Workspace, ids: list[int]) -> list[dict[str, Any]]:
    """The compared columns of each contact, its consent log and tag history (without the
    source, which names the path)."""
    out = []
    with ws.engine.connect() as conn:
        for cid in ids:
            row = conn.execute(
                select(*(contacts.c[c] for c in COMPARED)).where(contacts.c.id == cid)
            )
            values = dict(row.one()._mapping)
            values["revenue_total"] = Decimal(str(values["revenue_total"])).quantize(
                Decimal("0.01")
            )
            values["consent_log"] = [
                tuple(r)
                for r in conn.execute(
                    select(consent_log.c.channel, consent_log.c.granted, consent_log.c.at)
                    .where(consent_log.c.contact_id == cid)
                    .order_by(consent_log.c.id)
                )
            ]
            values["tag_history"] = [
                tuple(r)
                for r in conn.execute(
                    select(tag_history.c.tag, tag_history.c.action, tag_history.c.at)
                    .where(tag_history.c.contact_id == cid)
                    .order_by(tag_history.c.tag, tag_history.c.id)
                )
            ]
            out.append(values)
    return out


def test_import_and_event_api_leave_identical_contacts(
    workspace: Workspace, tmp_path: Path
) -> None:
    ws = workspace.replace(settings=workspace.settings.model_copy(update={"import_batch_size": 4}))
    by_file, by_api = people(ws, "f", 4), people(ws, "a", 4)
    shuffled = random.Random(3).sample(ACTIVITY, len(ACTIVITY))
    import_events(ws, tmp_path / "events.csv", "f", shuffled)
    for i in range(0, len(shuffled), 4):  # the same batches, one transaction each
        api_events(ws, "a", shuffled[i : i + 4])
    assert rows(ws, by_file) == rows(ws, by_api)
    c0, c1, c2, c3 = rows(ws, by_api)
    assert (c0["last_email_opened"], c0["last_email_link_clicked"]) == (T0 - 5 * D, T0 - 6 * D)
    assert (c0["orders_count"], c0["revenue_total"]) == (2, Decimal("14.75"))
    assert (c0["first_purchase_at"], c0["last_purchase_at"]) == (T0 - 9 * D, T0 - 3 * D)
    assert c1["last_seen"] == T0 - 3 * D  # a machine page view counts; feedback does not
    assert c2["email_consent"] is False  # logged once, at the unsubscribe that changed it
    assert c2["consent_log"] in ([("email", False, T0 - 4 * D)], [("email", False, T0 - 2 * D)])
    assert c0["updated_at"] == c1["updated_at"] == c2["updated_at"] == T0
    assert c3["updated_at"] == BEFORE  # a sales call moves nothing


def test_orders_by_import_event_api_and_simulator_are_equal(
    workspace: Workspace, tmp_path: Path
) -> None:
    ws = workspace
    purchases = [a for a in ACTIVITY if a[1] == "purchase"]
    by_file, by_api, by_sim = people(ws, "f", 3), people(ws, "a", 3), people(ws, "s", 3)
    import_events(ws, tmp_path / "orders.csv", "f", purchases)
    api_events(ws, "a", purchases)
    record_orders(
        ws.engine,
        [(T0 - ago, by_sim[who], float(p["amount"])) for who, _k, ago, p in purchases],
        currency=ws.settings.currency,
        now=ws.clock.now(),
    )
    assert rows(ws, by_file) == rows(ws, by_api) == rows(ws, by_sim)
    assert rows(ws, by_sim)[0]["last_purchase_at"] == T0 - 3 * D  # not the last one recorded


TAGGER = """
name: Tagger
trigger: {tag_added: go}
steps:
  - add_tag: vip
  - remove_tag: old
"""


def test_tags_by_cli_engine_and_store_give_the_same_history(
    workspace: Workspace, clock: FixedClock
) -> None:
    """Per way, contact ``x`` has no tag and ``y`` has both: each gets vip and loses old;
    only the real changes are logged; the contact row is left alone."""
    ws = workspace
    groups = {way: people(ws, way, 2) for way in ("cli", "engine", "store")}
    for _x, y in groups.values():
        ws.store.add_tag([y], "vip", at=T0 - 2 * D, source="test")
        ws.store.add_tag([y], "old", at=T0 - 2 * D, source="test")
    (ws.path / "flows" / "tagger.yaml").write_text(TAGGER, encoding="utf-8")
    ws.flows.enable("tagger", now=T0 - D)
    ws.store.add_tag(groups["engine"], "go", at=T0 - D, source="test")
    clock.set(T0)
    ws.flows.tick(T0)
    refs = [f"#{i}" for i in groups["cli"]]
    assert ws.tags.add("vip", contact_refs=refs).changed == [groups["cli"][0]]
    assert ws.tags.remove("old", contact_refs=refs).changed == [groups["cli"][1]]
    ws.store.add_tag(groups["store"], "vip", at=T0, source="api")
    ws.store.remove_tag(groups["store"], "old", at=T0, source="api")

    def history(ids: list[int]) -> list[Any]:
        return [
            (r["tag_history"], r["updated_at"])
            for r in rows(ws, ids)
            for r["tag_history"] in [[h for h in r["tag_history"] if h[0] != "go"]]
        ]

    expected = [
        ([("vip", "added", T0)], BEFORE),
        (
            [("old", "added", T0 - 2 * D), ("old", "removed", T0), ("vip", "added", T0 - 2 * D)],
            BEFORE,
        ),
    ]
    assert (
        history(groups["cli"]) == history(groups["engine"]) == history(groups["store"]) == expected
    )
    assert ws.store.tags_of(groups["engine"][0]) == ["go", "vip"]
    assert ws.store.tags_of(groups["engine"][1]) == ["go", "vip"]


KINDS = ["email_opened", "email_clicked", "page_view", "product_view", "sales_call", "purchase"]
EVENT = st.tuples(
    st.sampled_from(KINDS),
    st.integers(min_value=0, max_value=30 * 86400),  # seconds before T0
    st.booleans(),  # machine
    st.integers(min_value=1, max_value=50_000),  # cents
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    events=st.lists(EVENT, min_size=4, max_size=16),
    cuts=st.lists(st.integers(min_value=1, max_value=15), min_size=1, max_size=3),
    ways=st.lists(st.booleans(), min_size=4, max_size=4),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_attributes_are_the_latest_of_the_events_seen(
    workspace: Workspace,
    tmp_path_factory: Any,
    events: list[tuple[str, int, bool, int]],
    cuts: list[int],
    ways: list[bool],
    seed: int,
) -> None:
    """Events and orders in random order, in random batches, each batch by file import or
    by the event API: the attributes are the aggregates of everything seen."""
    ws = workspace
    prefix = f"h{next(_serial)}-"
    (cid,) = people(ws, prefix, 1)
    activity = [
        (
            0,
            kind,
            timedelta(seconds=secs),
            {"order_id": f"o{i}", "amount": f"{cents / 100:.2f}"}
            if kind == "purchase"
            else {"machine": machine},
        )
        for i, (kind, secs, machine, cents) in enumerate(events)
    ]
    random.Random(seed).shuffle(activity)
    bounds = sorted({0, len(activity), *(min(c, len(activity)) for c in cuts)})
    for n, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        if ways[n % len(ways)]:
            folder = tmp_path_factory.mktemp("import")
            import_events(ws, folder / "events.csv", prefix, activity[lo:hi])
        else:
            api_events(ws, prefix, activity[lo:hi])

    def latest(kinds: set[str], human: bool) -> datetime | None:
        times = [
            T0 - timedelta(seconds=s) for k, s, m, _c in events if k in kinds and not (human and m)
        ]
        return max(times, default=None)

    bought = [(T0 - timedelta(seconds=s), c) for k, s, _m, c in events if k == "purchase"]
    (got,) = rows(ws, [cid])
    assert got["last_email_opened"] == latest({"email_opened"}, True)
    assert got["last_email_link_clicked"] == latest({"email_clicked"}, True)
    assert got["last_seen"] == latest({"page_view", "product_view", "cart_add"}, False)
    assert got["orders_count"] == len(bought)
    assert got["revenue_total"] == sum((Decimal(c) / 100 for _t, c in bought), Decimal("0.00"))
    assert got["first_purchase_at"] == min((t for t, _c in bought), default=None)
    assert got["last_purchase_at"] == max((t for t, _c in bought), default=None)


def test_an_event_ahead_of_the_clock_counts_as_seen_now(workspace: Workspace) -> None:
    """A visit stamped two hours ahead (a skewed sender's clock) moves ``last_seen`` to the
    time it is applied, never into the future; a later visit still moves it on."""
    ws = workspace
    (cid,) = people(ws, f"f{next(_serial)}-", 1)
    with ws.engine.begin() as conn:
        activity.apply_events(conn, [(cid, "page_view", T0 + 2 * H, False)], now=T0)
    (got,) = rows(ws, [cid])
    assert got["last_seen"] == T0
    with ws.engine.begin() as conn:
        activity.apply_events(conn, [(cid, "page_view", T0 + 3 * H, False)], now=T0 + 4 * H)
    (got,) = rows(ws, [cid])
    assert got["last_seen"] == T0 + 3 * H


def test_concurrent_writers_change_and_log_once(workspace: Workspace) -> None:
    """Two transactions make the same changes at once: each change happens and is logged
    once, and both orders count (PostgreSQL; SQLite has one writer at a time)."""
    ws = workspace
    if ws.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time")
    (cid,) = people(ws, "x", 1)
    first = ws.engine.connect()
    tx = first.begin()
    assert activity.add_tags(first, [cid], "vip", source="one", at=T0) == [cid]
    assert activity.set_consent(first, [cid], "email", False, source="one", at=T0, now=T0) == [cid]
    activity.apply_orders(first, [(cid, T0 - D, Decimal("5"))], now=T0)
    second: dict[str, Any] = {}

    def meanwhile() -> None:  # blocks on the first transaction's row locks until it commits
        with ws.engine.begin() as conn:
            second["tags"] = activity.add_tags(conn, [cid], "vip", source="two", at=T0)
            second["consent"] = activity.set_consent(
                conn, [cid], "email", False, source="two", at=T0, now=T0
            )
            activity.apply_orders(conn, [(cid, T0 - 2 * D, Decimal("7"))], now=T0)

    thread = threading.Thread(target=meanwhile)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive()  # waiting for the first writer
    tx.commit()
    first.close()
    thread.join(10)
    assert second == {"tags": [], "consent": []}
    (got,) = rows(ws, [cid])
    assert got["tag_history"] == [("vip", "added", T0)]
    assert got["consent_log"] == [("email", False, T0)]
    assert (got["orders_count"], got["revenue_total"]) == (2, Decimal("12.00"))
    assert (got["first_purchase_at"], got["last_purchase_at"]) == (T0 - 2 * D, T0 - D)


def test_stored_events_move_the_attributes_as_the_same_rows_do(workspace: Workspace) -> None:
    """SQLite: the events of a transaction applied where they are stored (by id) move each
    contact exactly as the same events given as rows: the latest per attribute, machine
    opens and clicks left out, a time ahead of the clock taken as now, ``updated_at`` only
    where something moved."""
    ws = workspace
    if ws.engine.dialect.name != "sqlite":
        pytest.skip("the events of a transaction are known by id on SQLite only")
    from winback.delivery.records import EVENT_COLUMNS
    from winback.store.schema import events as events_table

    by_rows, stored, untouched = people(ws, f"s{next(_serial)}-", 3)
    kinds = [
        ("page_view", -3 * H, False),
        ("cart_add", 2 * H, False),  # ahead of the clock: seen now
        ("email_opened", -2 * H, False),
        ("email_opened", -1 * H, True),  # a privacy proxy: moves nothing
        ("email_clicked", -4 * H, False),
        ("email_clicked", -H / 2, True),
        ("product_view", -5 * H, True),  # a bot's visit still counts as seen
        ("custom_thing", -H / 4, False),
    ]
    with ws.engine.begin() as conn:
        before = conn.execute(select(func.coalesce(func.max(events_table.c.id), 0))).scalar_one()
        for cid in (by_rows, stored):
            conn.execute(
                events_table.insert(),
                [
                    dict(
                        zip(
                            EVENT_COLUMNS,
                            (f"k{cid}-{n}", cid, kind, T0 + at, None, None, machine),
                            strict=True,
                        )
                    )
                    for n, (kind, at, machine) in enumerate(kinds)
                ],
            )
        activity.apply_events(
            conn, [(by_rows, kind, T0 + at, machine) for kind, at, machine in kinds], now=T0
        )
        changed = activity.apply_stored_events(
            conn, after=before + len(kinds), now=T0
        )  # the second contact's events only
    assert changed == 3  # one row per attribute that moved
    got_rows, got_stored, got_untouched = rows(ws, [by_rows, stored, untouched])
    assert got_stored == got_rows
    c = contacts.c
    with ws.engine.connect() as conn:
        moved = conn.execute(
            select(c.last_seen, c.last_email_opened, c.last_email_link_clicked, c.updated_at).where(
                c.id == stored
            )
        ).one()
        untouched_at = conn.execute(select(c.updated_at).where(c.id == untouched)).scalar_one()
    assert tuple(moved) == (T0, T0 - 2 * H, T0 - 4 * H, T0)
    assert untouched_at != T0 and got_untouched["last_seen"] is None


def test_stored_orders_advance_the_contacts_as_the_same_rows_do(workspace: Workspace) -> None:
    """The orders of a transaction applied where they are stored (by id) advance each contact
    exactly as their counted purchases given as rows: cancelled and fully refunded orders
    left out, a partial refund at its net amount, the first purchase moved back, the last
    only forward, ``updated_at`` stamped; a contact without new orders left alone."""
    from winback.store.schema import orders as orders_table

    ws = workspace
    by_rows, stored, untouched = people(ws, f"o{next(_serial)}-", 3)
    tag = next(_serial)
    # (days before T0, amount, status, refunded); each round is one transaction.
    rounds = [
        (T0 - 2 * D, [(10, "20.00", "paid", "0"), (12, "5.00", "paid", "0")]),
        (
            T0,
            [
                (11, "10.10", "paid", "3.37"),  # partial refund: counts 6.73
                (20, "7.00", "paid", "0"),  # before the first purchase: moves it back
                (3, "9.00", "cancelled", "0"),  # counts nowhere (a later last purchase)
                (4, "8.00", "paid", "8.00"),  # fully refunded: counts nowhere
                (2, "0.00", "paid", "0"),  # a free order counts
            ],
        ),
        (T0, [(15, "1.99", "paid", "0")]),  # nothing moves but the counts
    ]
    changed = []
    for n, (now, batch) in enumerate(rounds):
        with ws.engine.begin() as conn:
            before = conn.execute(
                select(func.coalesce(func.max(orders_table.c.id), 0))
            ).scalar_one()
            for cid in (stored, by_rows):
                conn.execute(
                    orders_table.insert(),
                    [
                        {
                            "order_id": f"t{tag}-{n}-{k}-{cid}",
                            "contact_id": cid,
                            "ordered_at": T0 - days * D,
                            "amount": Decimal(amount),
                            "currency": "EUR",
                            "status": status,
                            "refunded": Decimal(refunded),
                        }
                        for k, (days, amount, status, refunded) in enumerate(batch)
                    ],
                )
                if cid == stored:  # the stored contact's orders come first: above ``before``
                    changed.append(
                        activity.apply_orders(conn, activity.StoredOrders(after=before), now=now)
                    )
            activity.apply_orders(
                conn,
                [
                    (by_rows, T0 - days * D, Decimal(amount) - Decimal(refunded))
                    for days, amount, status, refunded in batch
                    if status == "paid" and (refunded == "0" or Decimal(refunded) < Decimal(amount))
                ],
                now=now,
            )
    assert changed == [1, 1, 1]
    got_rows, got_stored, got_untouched = rows(ws, [by_rows, stored, untouched])
    assert got_stored == got_rows
    assert got_stored["orders_count"] == 6
    assert got_stored["revenue_total"] == Decimal("40.72")
    assert got_stored["first_purchase_at"] == T0 - 20 * D
    assert got_stored["last_purchase_at"] == T0 - 2 * D
    assert got_stored["updated_at"] == T0
    assert got_untouched["orders_count"] == 0
