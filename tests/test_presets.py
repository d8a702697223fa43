"""Import presets on fixtures written from each platform's documented export layout. Each
test checks contacts, counted orders and revenue against figures worked out by hand from
the fixture (in the comments), not by the code under test."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from winback.errors import InvalidMapping
from winback.store.schema import contact_tags, contacts, events, orders
from winback.summary import base_summary
from winback.workspace import Workspace


def summary_of(ws: Workspace) -> dict[str, object]:
    return base_summary(ws.engine, now=ws.clock.now(), days=ws.settings.dormant_days)


FIXTURES = Path(__file__).parent / "fixtures" / "presets"


def copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copy(FIXTURES / name, target)
    return target


def people(ws: Workspace) -> dict[str, tuple[object, ...]]:
    """email -> (customer_id, orders_count, revenue_total)."""
    with ws.engine.connect() as conn:
        rows = conn.execute(
            select(
                contacts.c.email,
                contacts.c.customer_id,
                contacts.c.orders_count,
                contacts.c.revenue_total,
            )
        ).all()
    return {r[0]: (r[1], r[2], Decimal(str(r[3])).quantize(Decimal("0.01"))) for r in rows}


def test_shopify_customers_then_orders(workspace: Workspace, tmp_path: Path) -> None:
    report = workspace.imports.contacts(
        copy("shopify_customers.csv", tmp_path), preset="shopify", progress=None
    )
    assert (report.imported, report.rejected) == (3, 0)
    with workspace.engine.connect() as conn:
        anna = conn.execute(select(contacts).where(contacts.c.customer_id == "7001")).one()
    assert anna.email == "anna.rossi@example.com"
    assert anna.phone == "+393281234567"  # the export's leading apostrophe is gone
    assert (anna.email_consent, anna.sms_consent) == (True, True)
    with workspace.engine.connect() as conn:
        tagged = sorted(
            conn.execute(
                select(contact_tags.c.tag).where(contact_tags.c.contact_id == anna.id)
            ).scalars()
        )
    assert tagged == ["newsletter", "vip"]
    assert report.tags_added == 3  # Anna's two, Carla's one

    report = workspace.imports.orders(
        copy("shopify_orders.csv", tmp_path), preset="shopify", progress=None
    )
    # 11 rows: 8 orders (#1001 two line-item rows, #1008 three).
    assert (report.read, report.imported, report.rejected) == (8, 8, 0)
    # Counted: #1001 120.00, #1003 80.00 - 30.00 refunded, #1004 40.00, #1008 35.00.
    # Not counted: #1002 refunded, #1005 voided, #1006 cancelled, #1007 pending.
    assert people(workspace) == {
        "anna.rossi@example.com": ("7001", 2, Decimal("170.00")),
        "bob@example.com": ("7002", 0, Decimal("0.00")),
        "carla@example.com": ("7003", 1, Decimal("35.00")),
        "dave@example.com": ("dave@example.com", 1, Decimal("40.00")),  # no customer row
    }
    summary = summary_of(workspace)
    assert (summary["orders"], Decimal(str(summary["revenue"]))) == (4, Decimal("245.00"))
    with workspace.engine.connect() as conn:
        stored = {
            r.order_id: r
            for r in conn.execute(
                select(orders.c.order_id, orders.c["items"], orders.c.coupon, orders.c.status)
            )
        }
        first = conn.execute(
            select(orders.c.ordered_at).where(orders.c.order_id == "5550001")
        ).scalar_one()
    assert [i["sku"] for i in stored["5550001"].items] == ["MUG-B", "POS-1"]
    assert [i["quantity"] for i in stored["5550008"].items] == [1, 2, 1]
    assert stored["5550001"].coupon == "WELCOME10"
    assert {k: v.status for k, v in stored.items() if v.status != "paid"} == {
        "5550002": "refunded",
        "5550005": "cancelled",
        "5550006": "cancelled",
        "5550007": "pending",
    }
    assert first == datetime(2024, 3, 1, 9, 15, tzinfo=UTC)  # "+0100" read as the offset


def test_woocommerce_orders_guests_by_billing_email(workspace: Workspace, tmp_path: Path) -> None:
    report = workspace.imports.orders(
        copy("woocommerce_orders.csv", tmp_path), preset="woocommerce", progress=None
    )
    assert (report.imported, report.rejected) == (7, 0)
    # Guests (customer_id 0) are told apart by billing email, case-insensitively:
    # guest1: 502 45.00 + 504 60.00 - 20.00 = 85.00; guest2: 503 refunded, 506 20.00.
    # Customer 12: 501 99.90 (505 cancelled); customer 13: 507 on-hold (not counted).
    assert people(workspace) == {
        "anna@example.com": ("12", 1, Decimal("99.90")),
        "guest1@example.com": ("guest1@example.com", 2, Decimal("85.00")),
        "guest2@example.com": ("guest2@example.com", 1, Decimal("20.00")),
        "bob@example.com": ("13", 0, Decimal("0.00")),
    }
    summary = summary_of(workspace)
    assert (summary["orders"], Decimal(str(summary["revenue"]))) == (4, Decimal("204.90"))
    with workspace.engine.connect() as conn:
        row = conn.execute(
            select(orders.c["items"], orders.c.coupon).where(orders.c.order_id == "501")
        ).one()
    assert [(i["sku"], i["quantity"]) for i in row.items] == [("MUG-1", 2), ("LAMP-1", 1)]
    assert row.coupon == "save5"


def test_shopify_legacy_customer_export(workspace: Workspace, tmp_path: Path) -> None:
    """The export before the 2024 layout: no Customer ID, ``Accepts Marketing``, address
    columns without ``Default Address``; contacts are keyed by email, and the orders
    export joins them by email."""
    report = workspace.imports.contacts(
        copy("shopify_customers_legacy.csv", tmp_path), preset="shopify", progress=None
    )
    assert (report.imported, report.rejected, report.tags_added) == (2, 0, 2)
    with workspace.engine.connect() as conn:
        anna = conn.execute(
            select(contacts).where(contacts.c.email == "anna.rossi@example.com")
        ).one()
    assert (anna.phone, anna.email_consent, anna.sms_consent) == ("+393281234567", True, None)
    workspace.imports.orders(copy("shopify_orders.csv", tmp_path), preset="shopify")
    # Counted orders (worked out from shopify_orders.csv): Anna #1001 120.00 and #1003
    # 80.00 - 30.00; Carla #1008 35.00; Dave #1004 40.00; Bob's #1002 is refunded.
    assert people(workspace) == {
        "anna.rossi@example.com": ("anna.rossi@example.com", 2, Decimal("170.00")),
        "bob@example.com": ("bob@example.com", 0, Decimal("0.00")),
        "carla@example.com": ("carla@example.com", 1, Decimal("35.00")),
        "dave@example.com": ("dave@example.com", 1, Decimal("40.00")),
    }


def test_woocommerce_rest_api_orders(workspace: Workspace, tmp_path: Path) -> None:
    """Customers and orders as ``GET /wp-json/wc/v3/customers`` and ``/orders`` give them,
    one per line."""
    known = workspace.imports.contacts(
        copy("woocommerce_customers_api.jsonl", tmp_path), preset="woocommerce", progress=None
    )
    assert (known.imported, known.rejected) == (2, 0)
    with workspace.engine.connect() as conn:
        anna = conn.execute(select(contacts).where(contacts.c.customer_id == "12")).one()
    assert (anna.email, anna.phone) == ("anna@example.com", "+393281234567")  # billing.phone
    assert anna.created_at == datetime(2023, 5, 1, 10, tzinfo=UTC)  # date_created_gmt
    report = workspace.imports.orders(
        copy("woocommerce_orders_api.jsonl", tmp_path), preset="woocommerce", progress=None
    )
    assert (report.imported, report.rejected) == (6, 0)
    # Counted: 601 99.90 (customer 12); 602 45.00 and 604 60.00 - 15.00 - 5.00 (guest1,
    # two spellings of one address). Not counted: 603 refunded, 605 cancelled, 606 on-hold.
    assert people(workspace) == {
        "anna@example.com": ("12", 1, Decimal("99.90")),
        "guest1@example.com": ("guest1@example.com", 2, Decimal("85.00")),
        "guest2@example.com": ("guest2@example.com", 0, Decimal("0.00")),
        "bob@example.com": ("13", 0, Decimal("0.00")),
    }
    summary = summary_of(workspace)
    assert (summary["orders"], Decimal(str(summary["revenue"]))) == (3, Decimal("184.90"))
    with workspace.engine.connect() as conn:
        first = conn.execute(
            select(
                orders.c.ordered_at, orders.c["items"], orders.c.coupon, orders.c.refunded
            ).where(orders.c.order_id == "601")
        ).one()
        refunded = conn.execute(
            select(orders.c.refunded).where(orders.c.order_id == "604")
        ).scalar_one()
    assert first.ordered_at == datetime(2024, 2, 1, 9, tzinfo=UTC)  # date_created_gmt
    assert [(i["sku"], i["quantity"]) for i in first.items] == [("MUG-1", 2), ("LAMP-1", 1)]
    assert first.coupon == "save5"
    assert Decimal(str(refunded)) == Decimal("20.00")


def _events(ws: Workspace) -> dict[str, int]:
    with ws.engine.connect() as conn:
        return dict(conn.execute(select(events.c.type, func.count()).group_by(events.c.type)).all())


def test_mailchimp_activity_maps_actions_to_email_events(
    workspace: Workspace, tmp_path: Path
) -> None:
    """The email-activity report (open, click, bounce: the API's three actions) and the
    unsubscribed report, as the Marketing API names their fields."""
    report = workspace.imports.events(
        copy("mailchimp_activity.csv", tmp_path), preset="mailchimp", progress=None
    )
    # Six actions: Anna opens twice and clicks once, Carla opens, Bob and Dora bounce.
    assert (report.imported, report.rejected) == (6, 0)
    unsubscribed = workspace.imports.events(
        copy("mailchimp_unsubscribes.csv", tmp_path), preset="mailchimp", progress=None
    )
    assert (unsubscribed.imported, unsubscribed.rejected) == (1, 0)
    assert _events(workspace) == {
        "email_opened": 3,
        "email_clicked": 1,
        "email_bounced": 2,
        "email_unsubscribed": 1,
    }
    with workspace.engine.connect() as conn:
        rows = {
            r.email: r
            for r in conn.execute(
                select(
                    contacts.c.email,
                    contacts.c.last_email_opened,
                    contacts.c.last_email_link_clicked,
                    contacts.c.email_consent,
                )
            )
        }
        bounces = dict(
            conn.execute(
                select(contacts.c.email, events.c.properties)
                .join(contacts, contacts.c.id == events.c.contact_id)
                .where(events.c.type == "email_bounced")
            ).all()
        )
    assert set(rows) == {
        "anna@example.com",
        "bob@example.com",
        "carla@example.com",
        "dora@example.com",
    }
    assert rows["anna@example.com"].last_email_opened == datetime(2024, 3, 5, 8, tzinfo=UTC)
    assert rows["anna@example.com"].last_email_link_clicked == datetime(
        2024, 3, 2, 10, 5, tzinfo=UTC
    )
    assert rows["carla@example.com"].email_consent is False
    assert {k: v["bounce_type"] for k, v in bounces.items()} == {
        "bob@example.com": "hard",
        "dora@example.com": "soft",
    }


def test_mailchimp_audience_export_files(workspace: Workspace, tmp_path: Path) -> None:
    """The audience export's subscribed, unsubscribed and cleaned files set consent; a
    nonsubscribed file states none."""
    files = ("mailchimp_subscribed.csv", "mailchimp_unsubscribed.csv", "mailchimp_cleaned.csv")
    for name in files:
        report = workspace.imports.contacts(copy(name, tmp_path), preset="mailchimp")
        assert report.rejected == 0
    never = tmp_path / "nonsubscribed_members_export_3f2a.csv"
    never.write_text(
        (FIXTURES / "mailchimp_subscribed.csv").read_text().splitlines()[0]
        + "\nnina@example.com,Nina,,,,1,,,,,,,,,,IT,,2023-05-01 10:00:00,9,n1,,\n"
    )
    workspace.imports.contacts(never, preset="mailchimp")
    with workspace.engine.connect() as conn:
        consent = dict(conn.execute(select(contacts.c.email, contacts.c.email_consent)).all())
        phone = conn.execute(
            select(contacts.c.phone).where(contacts.c.email == "anna@example.com")
        ).scalar_one()
    assert consent == {
        "anna@example.com": True,
        "bob@example.com": True,
        "carla@example.com": False,
        "dora@example.com": False,
        "nina@example.com": None,
    }
    assert phone == "+393281234567"


def test_klaviyo_events_machine_opens_and_custom_metrics(
    workspace: Workspace, tmp_path: Path
) -> None:
    report = workspace.imports.events(
        copy("klaviyo_events.csv", tmp_path), preset="klaviyo", progress=None
    )
    assert (report.imported, report.rejected) == (6, 0)
    assert _events(workspace) == {
        "email_opened": 2,
        "email_clicked": 1,
        "email_unsubscribed": 1,
        "viewed_product": 1,
        "email_bounced": 1,
    }
    with workspace.engine.connect() as conn:
        rows = {
            r.email: r
            for r in conn.execute(
                select(
                    contacts.c.email,
                    contacts.c.last_email_opened,
                    contacts.c.last_email_link_clicked,
                    contacts.c.email_consent,
                )
            )
        }
        keys = set(conn.execute(select(events.c.event_key)).scalars())
    assert len(rows) == 4
    # The Mail Privacy Protection open of 9 March is stored but moves nothing.
    assert rows["anna@example.com"].last_email_opened == datetime(2024, 3, 2, 10, tzinfo=UTC)
    assert rows["bob@example.com"].last_email_link_clicked == datetime(2024, 3, 2, 11, tzinfo=UTC)
    assert rows["carla@example.com"].email_consent is False
    assert "klaviyo:4Abc1" in keys
    with workspace.engine.connect() as conn:
        unsubscribed_at = conn.execute(
            select(events.c.occurred_at).where(events.c.type == "email_unsubscribed")
        ).scalar_one()
    # Its row has no datetime: the Unix timestamp 1709553600.
    assert unsubscribed_at == datetime(2024, 3, 4, 12, tzinfo=UTC)
    again = workspace.imports.events(
        copy("klaviyo_events.csv", tmp_path), preset="klaviyo", progress=None
    )
    assert (again.imported, again.duplicates) == (0, 6)


def test_a_preset_without_that_export_is_refused(workspace: Workspace, tmp_path: Path) -> None:
    with pytest.raises(InvalidMapping, match="this preset reads: contacts, events"):
        workspace.imports.orders(copy("mailchimp_activity.csv", tmp_path), preset="mailchimp")
    with pytest.raises(InvalidMapping, match="unknown"):
        workspace.imports.orders(copy("mailchimp_activity.csv", tmp_path), preset="magento")


def test_items_are_json(tmp_path: Path) -> None:
    from winback.ingest.presets.woocommerce import _items

    assert json.loads(_items("name:A|sku:X|quantity:2;name:B|quantity:x")) == [
        {"name": "A", "sku": "X", "quantity": 2},
        {"name": "B", "quantity": "x"},
    ]


def test_contact_exports_of_woocommerce_mailchimp_and_klaviyo(
    workspace: Workspace, tmp_path: Path
) -> None:
    woo = workspace.imports.contacts(
        copy("woocommerce_customers.csv", tmp_path), preset="woocommerce", progress=None
    )
    assert (woo.imported, woo.rejected) == (2, 0)
    unsub = workspace.imports.contacts(
        copy("mailchimp_unsubscribed.csv", tmp_path), preset="mailchimp", progress=None
    )
    assert (unsub.imported, unsub.rejected) == (1, 0)
    klaviyo = workspace.imports.contacts(
        copy("klaviyo_profiles.csv", tmp_path), preset="klaviyo", progress=None
    )
    assert klaviyo.rejected == 0
    with workspace.engine.connect() as conn:
        rows = {
            r.email: r
            for r in conn.execute(
                select(
                    contacts.c.email,
                    contacts.c.customer_id,
                    contacts.c.phone,
                    contacts.c.email_consent,
                    contacts.c.sms_consent,
                )
            )
        }
    # Five people: Anna (WooCommerce 12, then Klaviyo's profile matched by address), Bob,
    # Carla (a Mailchimp unsubscribe), Dave and Erin (Klaviyo).
    assert sorted(rows) == [
        "anna@example.com",
        "bob@example.com",
        "carla@example.com",
        "dave@example.com",
        "erin@example.com",
    ]
    assert rows["erin@example.com"].email_consent is False  # SUBSCRIBED but suppressed
    assert (rows["anna@example.com"].customer_id, rows["anna@example.com"].phone) == (
        "12",
        "+393281234567",
    )
    assert rows["anna@example.com"].email_consent is False  # Klaviyo: UNSUBSCRIBED
    assert rows["carla@example.com"].email_consent is False  # the unsubscribed export
    assert (rows["dave@example.com"].email_consent, rows["dave@example.com"].sms_consent) == (
        True,
        False,
    )
    assert rows["dave@example.com"].phone == "+442079460958"


def test_shopify_line_items_group_whatever_the_row_shape(tmp_path: Path) -> None:
    """Further rows of an order: a full row, a short row (trailing cells cut, as some
    spreadsheets save them), a row without item cells (nothing added), a non-text cell (read
    cell by cell); the next order's row starts a new order."""
    from winback.ingest.fields import ItemsJson
    from winback.ingest.presets import Columns
    from winback.ingest.presets.shopify import orders as shopify_orders
    from winback.ingest.readers import Record

    header = ["Name", "Email", "Financial Status", "Created at", "Total", "Lineitem quantity",
              "Lineitem name", "Lineitem price", "Lineitem sku", "Id"]  # fmt: skip
    first = ["#1", "a@example.com", "paid", "2024-01-02 10:00:00 +0000", "30.00", "1", "Mug",
             "10.00", "M-1", "11"]  # fmt: skip
    rows: list[list[Any]] = [
        first,
        ["#1", "", "", "", "", "2", "Plate", "5.00", "P-1", ""],
        ["#1", "", "", "", "", "1", "Cup", "5.00", "C-1"],  # short: no Id cell
        ["#1", "", "", "", "", "", "", "", "", ""],  # no line item
        ["#1", "", "", "", "", 3, "Bowl", "", "", ""],  # a number, as a spreadsheet gives it
        [
            "#2",
            "b@example.com",
            "refunded",
            "2024-01-03 10:00:00 +0000",
            "9.00",
            "1",
            "Mug",
            "9.00",
            "M-1",
            "12",
        ],  # fmt: skip
    ]
    columns, grouped = shopify_orders(
        Columns(header, tmp_path / "orders.csv", "shopify"),
        iter([Record(i + 2, list(r)) for i, r in enumerate(rows)]),
    )
    got = list(grouped)
    assert [(r.line, r.values[0], r.values[7]) for r in got] == [(2, "11", "paid"),
                                                                  (7, "12", "refunded")]  # fmt: skip
    items = got[0].values[columns.index("items")]
    assert isinstance(items, ItemsJson)
    assert json.loads(items) == [
        {"name": "Mug", "sku": "M-1", "quantity": 1, "price": "10.00"},
        {"name": "Plate", "sku": "P-1", "quantity": 2, "price": "5.00"},
        {"name": "Cup", "sku": "C-1", "quantity": 1, "price": "5.00"},
        {"name": "Bowl", "quantity": 3},
    ]


SHOPIFY_ORDERS_HEADER = (
    "Name,Email,Financial Status,Currency,Total,Created at,Lineitem quantity,Lineitem name,"
    "Lineitem price,Lineitem sku,Refunded Amount,Id\n"
)


def shopify_export(path: Path, orders_: list[tuple[int, str, str, int, int]]) -> Path:
    """A Shopify orders export of ``(number, email, status, cents, refunded cents)``: two
    line-item rows per order (the second one repeating only the name and the email)."""
    lines = [SHOPIFY_ORDERS_HEADER]
    for number, email, status, cents, refunded in orders_:
        total, back = f"{cents // 100}.{cents % 100:02d}", f"{refunded // 100}.{refunded % 100:02d}"
        at = f"2024-02-{1 + number % 27:02d} 10:00:00 +0000"
        lines.append(
            f"#{number},{email},{status},EUR,{total},{at},1,Mug,{total},MUG,{back},{number}\n"
        )
        lines.append(f"#{number},{email},,,,{at},1,Gift wrap,0.00,WRAP,,\n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


def counted_by_email(
    orders_: list[tuple[int, str, str, int, int]],
) -> dict[str, tuple[int, Decimal]]:
    """Per address: counted orders (paid or partially refunded, net above zero) and net
    revenue, worked out from the export's rows."""
    out: dict[str, tuple[int, Decimal]] = {}
    for _number, email, status, cents, refunded in orders_:
        n, total = out.get(email, (0, Decimal("0.00")))
        if status in ("paid", "partially_refunded") and cents > refunded:
            n, total = n + 1, total + Decimal(cents - refunded) / 100
        out[email] = (n, total)
    return out


@pytest.mark.parametrize("batch", [6, 50])
def test_shopify_orders_again_with_refunds_and_repeats(
    workspace: Workspace, tmp_path: Path, batch: int
) -> None:
    """Orders matched by address are written as they come (PostgreSQL copies them straight
    into ``orders``); an order already stored, whether by an earlier import or earlier in
    the same file, still counts once: a repeat later in the file is rejected naming it, a
    re-import with a refund updates the order and its contact's figures."""
    workspace.settings = workspace.settings.model_copy(
        update={"import_batch_size": batch, "import_commit_rows": 2 * batch}
    )
    emails = [f"buyer{i}@example.com" for i in range(4)]
    first = [(1000 + n, emails[n % 4], "paid", 1000 + 100 * n, 0) for n in range(30)]
    repeat = first[3]  # again at the end of the file: a repeat within the file
    report = workspace.imports.orders(
        shopify_export(tmp_path / "orders.csv", [*first, repeat]), preset="shopify"
    )
    assert (report.imported, report.duplicates, report.rejected) == (30, 0, 1)
    assert {e: v[1:] for e, v in people(workspace).items()} == counted_by_email(first)

    second = [*first, *[(2000 + n, emails[n % 4], "paid", 500, 0) for n in range(5)]]
    second[7] = (1007, emails[3], "refunded", 1700, 1700)
    second[8] = (1008, emails[0], "partially_refunded", 1800, 300)
    report = workspace.imports.orders(
        shopify_export(tmp_path / "again.csv", second), preset="shopify"
    )
    assert (report.imported, report.duplicates, report.rejected) == (5, 30, 0)
    assert report.orders_updated == 2
    assert {e: v[1:] for e, v in people(workspace).items()} == counted_by_email(second)
