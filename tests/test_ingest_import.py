"""File import on SQLite and PostgreSQL: broken files, dedup, incremental attributes,
machine opens, unknown customers, sniffing, mapping."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from tests.conftest import T0
from winback.clock import FixedClock
from winback.errors import InvalidMapping, MissingColumns, NothingImported, UnreadableFile
from winback.ingest.importer import FIRST_BATCH
from winback.store.schema import consent_log, contacts, events, imports, orders
from winback.workspace import Workspace

HEADER = "order_id,customer_id,ordered_at,amount,currency,items,coupon\n"


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def rejects_of(path: Path) -> dict[int, dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return {int(r["line"]): r for r in csv.DictReader(handle)}


def order_ids(ws: Workspace) -> set[str]:
    with ws.engine.connect() as conn:
        return set(conn.execute(select(orders.c.order_id)).scalars())


def small_batches(ws: Workspace, size: int = 3) -> Workspace:
    """The workspace importing in batches of ``size`` rows."""
    return ws.replace(settings=ws.settings.model_copy(update={"import_batch_size": size}))


def test_broken_file_keeps_every_good_row_and_reports_every_bad_one(
    workspace: Workspace, tmp_path: Path
) -> None:
    workspace = small_batches(workspace, 4)
    lines = [
        HEADER.encode(),
        b"o1,c1,2024-01-05T10:00:00Z,10.50,EUR,,\n",  # 2 good
        b"o2,c2,2024-13-45,5.00,EUR,,\n",  # 3 bad date
        b"o3,c1,2024-01-06T10:00:00+02:00,abc,EUR,,\n",  # 4 non-numeric amount
        b",c3,2024-01-07,5,EUR,,\n",  # 5 missing order id
        b"o4,,2024-01-07,5,EUR,,\n",  # 6 missing customer id
        b"o5,c\xe9,2024-01-07,5,EUR,,\n",  # 7 good: a cp1252 line in a UTF-8 file
        b"o6,c4,2024-01-08,5,EUR,,,extra\n",  # 8 extra column
        b"o7,c4,2024-01-08\n",  # 9 missing columns
        b'o8,c5,2024-01-09,7.25,EUR,,"=HYPERLINK(""http://x"",""y"")"\n',  # 10 good
        b"o1,c1,2024-01-05T10:00:00Z,10.50,EUR,,\n",  # 11 duplicate order in the file
        'o9,cé,2024-01-10,3.5,EUR,"[{""sku"": ""A""}]",\n'.encode(),  # 12 good
        b"o10,c6,2024-01-11,=1+2,EUR,,\n",  # 13 formula-looking amount
        b"o12,c\x81,2024-01-12,5,EUR,,\n",  # 14 a byte neither UTF-8 nor cp1252
        b"o11,c7,2024-01-1",  # 15 truncated last line
    ]
    path = write(tmp_path / "orders.csv", b"".join(lines))
    report = workspace.imports.orders(path)
    assert order_ids(workspace) == {"o1", "o5", "o8", "o9"}
    assert (report.read, report.imported, report.duplicates) == (14, 4, 0)
    assert "1 lines not valid UTF-8 read as cp1252: 7" in report.file_format
    assert report.rejected == 10 and report.reject_file == tmp_path / "orders.csv.rejects.csv"
    got = rejects_of(report.reject_file)
    expected_fields = {
        3: "ordered_at",
        4: "amount",
        5: "order_id",
        6: "customer_id",
        8: "(row)",
        9: "(row)",
        11: "order_id",
        13: "amount",
        14: "customer_id",
        15: "(row)",
    }
    assert {line: r["field"] for line, r in got.items()} == expected_fields
    assert all(r["reason"] for r in got.values())
    assert got[3]["value"] == "2024-13-45" and "ISO 8601" in got[3]["reason"]
    assert got[4]["value"] == "abc" and "number" in got[4]["reason"]
    assert "missing" in got[5]["reason"]
    assert got[14]["value"] == "c\\x81" and "neither UTF-8 nor cp1252" in got[14]["reason"]
    assert "expected 7 fields" in got[8]["reason"] and "found 8" in got[8]["reason"]
    assert "duplicate order_id" in got[11]["reason"]
    assert got[13]["value"] == "'=1+2"  # the reject file is formula-safe
    with workspace.engine.connect() as conn:
        coupon = conn.execute(select(orders.c.coupon).where(orders.c.order_id == "o8")).scalar()
        recorded = conn.execute(select(imports)).mappings().one()
    assert coupon == '=HYPERLINK("http://x","y")'  # kept as data
    assert recorded["rows_read"] == 14 and recorded["rows_rejected"] == 10
    assert recorded["rows_imported"] == 4 and recorded["finished_at"] is not None


def test_reimport_imports_nothing_new(workspace: Workspace, tmp_path: Path) -> None:
    workspace = small_batches(workspace)
    path = write(
        tmp_path / "orders.csv",
        HEADER + "".join(f"o{i},c{i % 3},2024-02-0{i}T08:00:00Z,{i}.00,,,\n" for i in range(1, 8)),
    )
    first = workspace.imports.orders(path)
    before = workspace.store.get_contact("c1")
    again = workspace.imports.orders(path)
    assert (first.imported, first.duplicates) == (7, 0)
    assert (again.imported, again.duplicates, again.rejected) == (0, 7, 0)
    after = workspace.store.get_contact("c1")
    assert after["orders_count"] == before["orders_count"] == 3
    assert after["revenue_total"] == before["revenue_total"] == Decimal("12.00")
    ev = write(
        tmp_path / "events.csv",
        "customer_id,type,occurred_at,properties\n"
        'c1,page_view,2024-03-01T10:00:00Z,"{""url"": ""/""}"\n'
        "c2,email_opened,2024-03-02T10:00:00Z,\n",
    )
    assert workspace.imports.events(ev).imported == 2
    repeat = workspace.imports.events(ev)  # no event_id: deduplicated by content hash
    assert (repeat.imported, repeat.duplicates) == (0, 2)


def test_duplicate_orders_across_batches_are_rejected(workspace: Workspace, tmp_path: Path) -> None:
    workspace = small_batches(workspace, 2)
    path = write(
        tmp_path / "orders.csv",
        HEADER
        + "a,c1,2024-01-01,1,,,\nb,c1,2024-01-02,1,,,\nc,c1,2024-01-03,1,,,\na,c1,2024-01-01,1,,,\n",
    )
    report = workspace.imports.orders(path)
    assert (report.imported, report.duplicates, report.rejected) == (3, 0, 1)
    assert rejects_of(tmp_path / "orders.csv.rejects.csv")[5]["field"] == "order_id"
    assert workspace.store.get_contact("c1")["orders_count"] == 3


def _events_file(path: Path) -> Path:
    rows = [
        ("e1", "c1", "email_opened", "2024-03-01T10:00:00Z", {"message_id": "m1"}),
        ("e2", "c1", "email_opened", "2024-03-05T10:00:00Z", {"machine": True}),
        ("e3", "c1", "email_clicked", "2024-03-02T10:00:00Z", {}),
        ("e4", "c2", "page_view", "2024-03-03T10:00:00", {"url": "/a"}),
        ("e5", "c2", "product_view", "2024-03-04T10:00:00Z", {}),
        ("e6", "c2", "cart_add", "2024-03-01T10:00:00Z", {}),
        (
            "e7",
            "c3",
            "purchase",
            "2024-03-06T10:00:00Z",
            {"order_id": "p1", "amount": "20.5", "currency": "eur", "coupon": "X"},
        ),
        ("e8", "c3", "email_unsubscribed", "2024-03-07T10:00:00Z", {}),
        ("e9", "c4", "email_opened", "2024-03-08T10:00:00Z", {"machine": "yes"}),
        ("e10", "c2", "page_view", "2024-02-01T10:00:00Z", {}),
        ("e11", "c1", "email_opened", "2024-02-01T10:00:00Z", {}),
        ("e12", "c3", "purchase", "2024-01-06T10:00:00Z", {"amount": 5}),
    ]
    with path.open("w", encoding="utf-8", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["event_id", "customer_id", "type", "occurred_at", "properties"])
        for event_id, cid, kind, at, props in rows:
            out.writerow([event_id, cid, kind, at, json.dumps(props)])
    return path


def _from_scratch(ws: Workspace) -> dict[str, dict[str, Any]]:
    """The standard attributes recomputed from all stored rows (what increments must match)."""
    with ws.engine.connect() as conn:
        purchases = conn.execute(
            select(
                contacts.c.customer_id,
                func.count(orders.c.id),
                func.sum(orders.c.amount),
                func.min(orders.c.ordered_at),
                func.max(orders.c.ordered_at),
            )
            .join(orders, orders.c.contact_id == contacts.c.id)
            .group_by(contacts.c.customer_id)
        ).all()

        def latest(types: tuple[str, ...]) -> dict[str, datetime]:
            rows = conn.execute(
                select(contacts.c.customer_id, func.max(events.c.occurred_at))
                .join(events, events.c.contact_id == contacts.c.id)
                .where(events.c.type.in_(types), events.c.machine.is_(False))
                .group_by(contacts.c.customer_id)
            ).all()
            return {cid: at for cid, at in rows}

        opened = latest(("email_opened",))
        clicked = latest(("email_clicked",))
        seen = latest(("page_view", "product_view", "cart_add"))
        everyone = conn.execute(select(contacts.c.customer_id)).scalars().all()
    from winback.store.types import UTCDateTime

    def utc(value: Any) -> Any:
        return UTCDateTime().process_result_value(value, ws.engine.dialect) if value else None

    bought = {
        cid: (n, Decimal(total).quantize(Decimal("0.01")), utc(lo), utc(hi))
        for cid, n, total, lo, hi in purchases
    }
    return {
        cid: {
            "orders_count": bought.get(cid, (0,))[0],
            "revenue_total": bought[cid][1] if cid in bought else Decimal("0.00"),
            "first_purchase_at": bought[cid][2] if cid in bought else None,
            "last_purchase_at": bought[cid][3] if cid in bought else None,
            "last_email_opened": utc(opened.get(cid)),
            "last_email_link_clicked": utc(clicked.get(cid)),
            "last_seen": utc(seen.get(cid)),
        }
        for cid in everyone
    }


def _stored(ws: Workspace) -> dict[str, dict[str, Any]]:
    names = (
        "orders_count",
        "revenue_total",
        "first_purchase_at",
        "last_purchase_at",
        "last_email_opened",
        "last_email_link_clicked",
        "last_seen",
    )
    with ws.engine.connect() as conn:
        rows = conn.execute(select(contacts.c.customer_id, *(contacts.c[n] for n in names))).all()
    return {r[0]: dict(zip(names, r[1:], strict=True)) for r in rows}


def test_incremental_attributes_match_a_from_scratch_aggregate(
    workspace: Workspace, tmp_path: Path
) -> None:
    workspace = small_batches(workspace, 2)
    workspace.imports.events(_events_file(tmp_path / "events.csv"))
    more = write(
        tmp_path / "orders.csv",
        HEADER
        + "q1,c1,2024-01-01T00:00:00Z,3.10,,,\nq2,c3,2023-12-31T23:00:00-02:00,4,,,\n"
        + "q3,c3,2024-04-01,1.25,,,\nq4,c9,2024-04-02,2,,,\n",
    )
    workspace.imports.orders(more)
    workspace.imports.orders(more)  # re-import changes nothing
    expected = _from_scratch(workspace)
    assert _stored(workspace) == expected
    c3 = expected["c3"]
    assert c3["orders_count"] == 4 and c3["revenue_total"] == Decimal("30.75")
    assert c3["first_purchase_at"] == datetime(2024, 1, 1, 1, tzinfo=UTC)


def test_attributes_and_updated_at_across_batches_and_imports(
    workspace: Workspace, tmp_path: Path
) -> None:
    """Batches only write the attribute columns that change: a later batch with older orders
    leaves last_purchase_at alone, moves first_purchase_at back, and still counts; a second
    import (clock moved on) stamps updated_at again."""
    workspace = small_batches(workspace, 2)
    first = write(
        tmp_path / "a.csv",
        HEADER
        + "a1,k1,2024-05-01T00:00:00Z,10,,,\na2,k2,2024-05-02T00:00:00Z,1,,,\n"
        + "a3,k1,2024-01-01T00:00:00Z,2.50,,,\na4,k1,2024-06-01T00:00:00Z,1,,,\n"
        + "a5,k1,2024-03-01T00:00:00+00:00,0.25,,,\n",
    )
    t0 = workspace.clock.now()
    workspace.imports.orders(first)
    k1 = _stored(workspace)["k1"]
    assert k1["orders_count"] == 4 and k1["revenue_total"] == Decimal("13.75")
    assert k1["first_purchase_at"] == datetime(2024, 1, 1, tzinfo=UTC)
    assert k1["last_purchase_at"] == datetime(2024, 6, 1, tzinfo=UTC)
    with workspace.engine.connect() as conn:
        stamps = dict(conn.execute(select(contacts.c.customer_id, contacts.c.updated_at)).all())
    assert stamps["k1"] == t0 and stamps["k2"] == t0
    workspace.clock.advance(timedelta(hours=1))  # type: ignore[attr-defined]
    second = write(tmp_path / "b.csv", HEADER + "b1,k2,2023-01-01T00:00:00Z,4,,,\n")
    workspace.imports.orders(second)
    assert _stored(workspace) == _from_scratch(workspace)
    with workspace.engine.connect() as conn:
        stamps = dict(conn.execute(select(contacts.c.customer_id, contacts.c.updated_at)).all())
    assert stamps["k2"] == t0 + timedelta(hours=1) and stamps["k1"] == t0


def test_machine_opens_do_not_count_as_engagement(workspace: Workspace, tmp_path: Path) -> None:
    workspace.imports.events(_events_file(tmp_path / "events.csv"))
    c1 = workspace.store.get_contact("c1")
    assert c1["last_email_opened"] == datetime(
        2024, 3, 1, 10, tzinfo=UTC
    )  # not the 03-05 machine open
    assert workspace.store.get_contact("c4")["last_email_opened"] is None
    with workspace.engine.connect() as conn:
        flags = dict(conn.execute(select(events.c.event_key, events.c.machine)).all())
        message = conn.execute(
            select(events.c.message_id).where(events.c.event_key == "e1")
        ).scalar()
    assert flags["e2"] is True and flags["e9"] is True and flags["e1"] is False
    assert message == "m1"


def test_purchase_events_become_orders_and_unsubscribes_revoke_consent(
    workspace: Workspace, tmp_path: Path
) -> None:
    contacts_file = write(
        tmp_path / "contacts.csv", "customer_id,email,email_consent\nc3,c3@example.com,yes\n"
    )
    clock = workspace.clock
    assert isinstance(clock, FixedClock)
    clock.set(datetime(2024, 1, 1, tzinfo=UTC))  # consent stated before the unsubscribe
    workspace.imports.contacts(contacts_file)
    clock.set(T0)
    report = workspace.imports.events(_events_file(tmp_path / "events.csv"))
    assert report.imported == 12 and report.consent_changes == 1
    with workspace.engine.connect() as conn:
        p1 = conn.execute(select(orders).where(orders.c.order_id == "p1")).mappings().one()
        log = conn.execute(
            select(consent_log.c.granted, consent_log.c.source).order_by(consent_log.c.id)
        ).all()
        purchase_events = conn.execute(
            select(func.count()).select_from(events).where(events.c.type == "purchase")
        ).scalar()
    assert p1["amount"] == Decimal("20.50") and p1["currency"] == "EUR" and p1["coupon"] == "X"
    assert purchase_events == 0
    assert workspace.store.get_contact("c3")["email_consent"] is False
    assert log == [(True, "import:contacts.csv"), (False, "import:events.csv")]
    assert len(order_ids(workspace)) == 2  # p1 and e12 (which has no order_id: the event id)


def test_unknown_customers_are_created(workspace: Workspace, tmp_path: Path) -> None:
    path = write(tmp_path / "orders.csv", HEADER + "o1,new1,2024-05-01T12:00:00Z,9.99,,,\n")
    report = workspace.imports.orders(path)
    assert report.contacts_created == 1
    created = workspace.store.get_contact("new1")
    assert created["created_at"] == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert created["orders_count"] == 1 and created["attributes"] == {}


def test_contacts_upsert_consent_log_and_custom_attributes(
    workspace: Workspace, tmp_path: Path
) -> None:
    path = write(
        tmp_path / "contacts.csv",
        "customer_id;email;first_name;birthday;timezone;email_consent;sms_consent;loyalty tier\n"
        "c1;ann@example.com;Ann;1990-02-03;Europe/Rome;yes;no;gold\n"
        "c2;bob@example.com;Bob;;;1;;\n"
        "c3;not-an-email;Cy;;;;;\n",
    )
    first = workspace.imports.contacts(path)
    assert (first.read, first.imported, first.rejected) == (3, 2, 1)
    ann = workspace.store.get_contact("c1")
    assert ann["attributes"] == {"loyalty tier": "gold"} and ann["timezone"] == "Europe/Rome"
    assert ann["email_consent"] is True and ann["sms_consent"] is False
    assert str(ann["birthday"]) == "1990-02-03"
    again = workspace.imports.contacts(path)
    assert (again.imported, again.duplicates) == (0, 2)
    change = write(tmp_path / "change.csv", "customer_id,email_consent,first_name\nc1,no,\n")
    changed = workspace.imports.contacts(change)
    assert changed.contacts_updated == 1
    ann = workspace.store.get_contact("c1")
    assert ann["email_consent"] is False and ann["first_name"] == "Ann"  # empty cells keep values
    with workspace.engine.connect() as conn:
        log = conn.execute(
            select(consent_log.c.channel, consent_log.c.granted)
            .where(consent_log.c.contact_id == ann["id"])
            .order_by(consent_log.c.id)
        ).all()
    assert log == [("email", True), ("sms", False), ("email", False)]


def test_mapping_their_headers(workspace: Workspace, tmp_path: Path) -> None:
    path = write(
        tmp_path / "export.csv", "Order No,Customer,Date,Total\nA-1,K9,2024-01-01 10:00,12.00\n"
    )
    with pytest.raises(MissingColumns, match="--map order_id="):
        workspace.imports.orders(path)
    mapping = {
        "order_id": "Order No",
        "customer_id": "Customer",
        "ordered_at": "Date",
        "amount": "Total",
    }
    assert workspace.imports.orders(path, mapping=mapping).imported == 1
    assert workspace.store.get_contact("K9")["revenue_total"] == Decimal("12.00")
    with pytest.raises(InvalidMapping, match="no column 'Nope'"):
        workspace.imports.orders(path, mapping={**mapping, "amount": "Nope"})
    with pytest.raises(InvalidMapping, match="not a orders column|is not a"):
        workspace.imports.orders(path, mapping={"price": "Total"})


@pytest.mark.parametrize(
    ("encoding", "delimiter"),
    [("utf-8-sig", ","), ("cp1252", ";"), ("latin-1", "\t"), ("utf-8", "|")],
)
def test_encoding_and_delimiter_are_sniffed(
    sqlite_workspace: Workspace, tmp_path: Path, encoding: str, delimiter: str
) -> None:
    rows = [["customer_id", "first_name", "city"], ["c1", "Renée", "Genève"], ["c2", "Zoë", "Köln"]]
    body = "\n".join(delimiter.join(r) for r in rows) + "\n"
    path = write(tmp_path / "contacts.csv", body.encode(encoding))
    report = sqlite_workspace.imports.contacts(path)
    assert report.imported == 2 and report.rejected == 0
    zoe = sqlite_workspace.store.get_contact("c2")
    assert zoe["first_name"] == "Zoë" and zoe["attributes"] == {"city": "Köln"}


def test_json_lines_and_parquet(workspace: Workspace, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = tmp_path / "contacts.jsonl"
    jsonl.write_text(
        '{"customer_id": "j1", "email": "j@example.com", "vip": true}\n'
        '{"customer_id": "j2", "score": 7}\n'
        '{"customer_id": "j3", "email": \n',
        encoding="utf-8",
    )
    report = workspace.imports.contacts(jsonl)
    assert (report.imported, report.rejected) == (2, 1)
    assert workspace.store.get_contact("j1")["attributes"] == {"vip": True}
    assert workspace.store.get_contact("j2")["attributes"] == {"score": 7}
    table = pa.table(
        {
            "order_id": ["p1", "p2"],
            "customer_id": ["j1", "j2"],
            "ordered_at": [datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)],
            "amount": [10.5, 3.0],
        }
    )
    pq.write_table(table, tmp_path / "orders.parquet")
    assert workspace.imports.orders(tmp_path / "orders.parquet").imported == 2
    assert workspace.store.get_contact("j1")["revenue_total"] == Decimal("10.50")


def test_unreadable_and_empty_files_fail_clearly(
    sqlite_workspace: Workspace, tmp_path: Path
) -> None:
    with pytest.raises(UnreadableFile, match="no such file"):
        sqlite_workspace.imports.orders(tmp_path / "missing.csv")
    with pytest.raises(UnreadableFile, match="empty"):
        sqlite_workspace.imports.orders(write(tmp_path / "empty.csv", ""))
    with pytest.raises(NothingImported, match="no data rows"):
        sqlite_workspace.imports.orders(write(tmp_path / "header.csv", HEADER))
    bad = write(tmp_path / "bad.csv", HEADER + "o1,c1,yesterday,1,,,\n")
    with pytest.raises(NothingImported, match="rejects.csv"):
        sqlite_workspace.imports.orders(bad)
    assert (tmp_path / "bad.csv.rejects.csv").exists()


def test_progress_reports_bytes(sqlite_workspace: Workspace, tmp_path: Path) -> None:
    sqlite_workspace = small_batches(sqlite_workspace, 10)
    path = write(
        tmp_path / "orders.csv",
        HEADER + "".join(f"o{i},c{i},2024-01-01,1,,,\n" for i in range(100)),
    )
    seen: list[tuple[int, int]] = []
    sqlite_workspace.imports.orders(path, progress=lambda done, total: seen.append((done, total)))
    size = path.stat().st_size
    assert seen[-1] == (size, size) and len(seen) >= 2
    assert all(total == size and 0 <= done <= size for done, total in seen)


def test_writing_starts_after_the_first_small_batch(
    sqlite_workspace: Workspace, tmp_path: Path
) -> None:
    """With the default batch size a 7,000-row file is still written in batches of 2,000,
    4,000 and 1,000 rows (one progress report each, then the end), so the writer does not
    wait for the whole file to be parsed."""
    assert FIRST_BATCH == 2_000 and sqlite_workspace.settings.import_batch_size >= 7_000
    path = write(
        tmp_path / "orders.csv",
        HEADER + "".join(f"o{i},c{i % 500},2024-01-01,1,,,\n" for i in range(7_000)),
    )
    seen: list[int] = []
    report = sqlite_workspace.imports.orders(path, progress=lambda done, total: seen.append(done))
    assert report.imported == 7_000 and len(order_ids(sqlite_workspace)) == 7_000
    assert len(seen) == 4 and seen[0] < seen[1] < seen[2] == seen[3] == path.stat().st_size


def test_sqlite_timestamps_use_the_fixed_width_format(
    sqlite_workspace: Workspace, tmp_path: Path
) -> None:
    path = write(tmp_path / "orders.csv", HEADER + "o1,c1,2024-01-05T10:00:00+01:00,1,,,\n")
    sqlite_workspace.imports.orders(path)
    with sqlite_workspace.engine.connect() as conn:
        raw = conn.execute(text("SELECT ordered_at FROM orders")).scalar()
        last = conn.execute(text("SELECT last_purchase_at FROM contacts")).scalar()
    assert raw == last == "2024-01-05 09:00:00.000000"


def test_cdnow_sample(workspace: Workspace) -> None:
    report = workspace.imports.cdnow(sample=True)
    assert (report.imported, report.rejected, report.contacts_created) == (6919, 0, 2357)
    assert workspace.store.count_contacts() == 2357
    with workspace.engine.connect() as conn:
        total = conn.execute(select(func.sum(orders.c.amount))).scalar_one()
        first = (
            conn.execute(select(orders).where(orders.c.order_id == "cdnow-00004-19970101-1"))
            .mappings()
            .one()
        )
    assert total is not None and Decimal(total).quantize(Decimal("0.01")) == Decimal("244091.94")
    assert first["ordered_at"] == datetime(1997, 1, 1, tzinfo=UTC) and first["currency"] == "USD"
    assert workspace.imports.cdnow(sample=True).duplicates == 6919


def test_parquet_without_pyarrow_names_the_extra(
    sqlite_workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if the extra were not installed
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    path = write(tmp_path / "orders.parquet", b"PAR1")
    with pytest.raises(UnreadableFile, match=r"winback\[parquet\]"):
        sqlite_workspace.imports.orders(path)


def test_reject_file_is_in_line_order(sqlite_workspace: Workspace, tmp_path: Path) -> None:
    path = write(
        tmp_path / "orders.csv",
        HEADER
        + "a,c1,2024-01-01,1,,,\nb,c1,bad,1,,,\na,c1,2024-01-01,1,,,\nc,c1,2024-01-01,x,,,\n",
    )
    sqlite_workspace.imports.orders(path)
    assert list(rejects_of(tmp_path / "orders.csv.rejects.csv")) == [3, 4, 5]


class _PidOrders:
    """An orders kind that stamps each row with the id of the process that parsed it, and
    fails on a row whose order id is ``boom``."""

    name = "orders"
    canonical: tuple[str, ...] = ("order_id", "customer_id", "ordered_at", "amount")
    required: tuple[str, ...] = ("order_id",)
    parse_apart = True

    def __init__(self) -> None:
        self.written: list[tuple[str, int]] = []

    def bind(self, columns: list[str], index: dict[str, int], ctx: Any) -> None:
        self.at = index["order_id"]

    def parse(self, record: Any) -> Any:
        import os

        if record.values[self.at] == "boom":
            raise ValueError(f"cannot parse line {record.line}")
        return (record.line, record.values[self.at], os.getpid())

    def write(self, conn: Any, batch: list[Any], ctx: Any) -> Any:
        from winback.ingest.importer import BatchResult

        self.written.extend((order_id, pid) for _line, order_id, pid in batch)
        return BatchResult(imported=len(batch))


def test_orders_are_parsed_in_a_parser_process_and_its_errors_reach_the_caller(
    sqlite_workspace: Workspace, tmp_path: Path
) -> None:
    """Orders are parsed in a forked process (``parse_apart``), every row reaches the writer
    in file order, and an error raised while parsing is raised by the import itself."""
    import os

    from winback.ingest import importer

    ws = sqlite_workspace
    path = write(
        tmp_path / "orders.csv",
        HEADER + "".join(f"o{i},c{i},2024-01-01,1,,,\n" for i in range(5_000)),
    )
    kind = _PidOrders()
    report = importer.run(ws.engine, ws.settings, ws.clock, kind, path)
    assert report.imported == 5_000 and report.read == 5_000
    assert [o for o, _pid in kind.written] == [f"o{i}" for i in range(5_000)]
    pids = {pid for _o, pid in kind.written}
    assert len(pids) == 1 and os.getpid() not in pids

    broken = write(
        tmp_path / "broken.csv", HEADER + "o1,c1,2024-01-01,1,,,\nboom,c1,2024-01-01,1,,,\n"
    )
    with pytest.raises(ValueError, match="cannot parse line 3"):
        importer.run(ws.engine, ws.settings, ws.clock, _PidOrders(), broken)


def test_a_filtered_import_reports_the_rows_its_parser_process_filtered(
    sqlite_workspace: Workspace, tmp_path: Path
) -> None:
    """``--where`` filters in the parser process; the count comes back to the report."""
    from winback.ingest.transform import Options, parse_where

    path = write(
        tmp_path / "orders.csv",
        "order_id,customer_id,ordered_at,amount,status\n"
        + "".join(
            f"o{i},c{i},2024-01-01,1,{'paid' if i % 3 else 'pending'}\n" for i in range(3_000)
        ),
    )
    report = sqlite_workspace.imports.orders(
        path, options=Options(where=parse_where(["status=paid"]))
    )
    assert report.imported == 2_000 and report.filtered == 1_000


class _FailingWriter(_PidOrders):
    """Fails while writing its second batch."""

    def write(self, conn: Any, batch: list[Any], ctx: Any) -> Any:
        if self.written:
            raise RuntimeError("the store refused the batch")
        return super().write(conn, batch, ctx)


def test_a_failed_write_stops_the_parser_process(
    sqlite_workspace: Workspace, tmp_path: Path
) -> None:
    """When writing fails the import raises that error and leaves no parser process behind
    (the child, blocked on its next batch, is stopped)."""
    import multiprocessing

    from winback.ingest import importer

    ws = sqlite_workspace
    path = write(
        tmp_path / "orders.csv",
        HEADER + "".join(f"o{i},c{i},2024-01-01,1,,,\n" for i in range(20_000)),
    )
    kind = _FailingWriter()
    with pytest.raises(RuntimeError, match="the store refused the batch"):
        importer.run(ws.engine, ws.settings, ws.clock, kind, path)
    assert len(kind.written) == importer.FIRST_BATCH  # the first batch only
    assert multiprocessing.active_children() == []


def test_a_sqlite_import_writes_on_one_connection_with_its_cache_and_one_checkpoint(
    sqlite_workspace: Workspace, tmp_path: Path
) -> None:
    """Every batch commits on one held connection with the import's page cache
    (``import_cache_mb``) and the raised WAL autocheckpoint (no checkpoint after each
    batch); afterwards the connection has its settings back and the WAL has been copied
    into the database file."""
    from sqlalchemy import event

    from winback.store.slices import PASS_WAL_PAGES

    ws = small_batches(sqlite_workspace, 10)
    ws = ws.replace(settings=ws.settings.model_copy(update={"import_cache_mb": 48}))
    path = write(
        tmp_path / "orders.csv",
        HEADER + "".join(f"o{i},c{i % 7},2024-01-01,1,,,\n" for i in range(95)),
    )
    seen: list[tuple[int, int, int]] = []

    def on_commit(conn: Any) -> None:
        raw = conn.connection.driver_connection
        seen.append(
            (
                id(raw),
                raw.execute("PRAGMA cache_size").fetchone()[0],
                raw.execute("PRAGMA wal_autocheckpoint").fetchone()[0],
            )
        )

    event.listen(ws.engine, "commit", on_commit)
    try:
        report = ws.imports.orders(path)
    finally:
        event.remove(ws.engine, "commit", on_commit)
    assert report.imported == 95
    batches = [s for s in seen if s[1:] == (-48 * 1024, PASS_WAL_PAGES)]
    assert len(batches) >= 10 and len({s[0] for s in batches}) == 1
    with ws.engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        assert raw.execute("PRAGMA cache_size").fetchone()[0] == -65536
        assert raw.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
        busy, log, done = raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0 and log == done
