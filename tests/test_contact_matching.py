"""One contact per address: rows matched by email, contacts sharing an address merged
(on import and by `winback contacts merge`), `contacts show` by email."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, func, insert, select

from winback.store.schema import consent_log, contact_tags, contacts, events, orders, tag_history
from winback.workspace import Workspace


def winback(ws: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WINBACK_DATABASE_URL": ws.settings.database_url or "", "COLUMNS": "400"}
    return subprocess.run(
        [sys.executable, "-m", "winback.cli", *args, "--workspace", str(ws.path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def count(ws: Workspace, table: Table, **where: object) -> int:
    query = select(func.count()).select_from(table)
    for name, value in where.items():
        query = query.where(table.c[name] == value)
    with ws.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def test_orders_with_only_an_email_attach_to_that_contact(
    workspace: Workspace, tmp_path: Path
) -> None:
    people = tmp_path / "people.csv"
    people.write_text("customer_id,email\nc1,Ann@Example.com\nc2,bob@example.com\n", "utf-8")
    workspace.imports.contacts(people, progress=None)
    sales = tmp_path / "sales.csv"
    sales.write_text(
        "order_id,email,ordered_at,amount\n"
        "o1, ANN@example.COM ,2024-01-01,10\n"
        "o2,bob@example.com,2024-01-02,20\n"
        "o3,new@example.com,2024-01-03,30\n"
        "o4,,2024-01-04,40\n",
        "utf-8",
    )
    report = workspace.imports.orders(sales, progress=None)
    assert (report.imported, report.rejected, report.contacts_created) == (3, 1, 1)
    with workspace.engine.connect() as conn:
        got = dict(
            conn.execute(
                select(contacts.c.customer_id, contacts.c.revenue_total).order_by(
                    contacts.c.customer_id
                )
            ).all()
        )
    assert {k: Decimal(str(v)) for k, v in got.items()} == {
        "c1": Decimal("10"),
        "c2": Decimal("20"),
        "new@example.com": Decimal("30"),
    }
    rejects = (tmp_path / "sales.csv.rejects.csv").read_text("utf-8")
    assert "needs a customer_id or an email" in rejects


def _two_annas(ws: Workspace, tmp_path: Path) -> None:
    """Two contacts with one address (as an id-keyed import makes them), each with history."""
    people = tmp_path / "people.csv"
    people.write_text(
        "customer_id,email,first_name,phone,email_consent\n"
        "a1,ann@example.com,Ann,,yes\n"
        "a2,ANN@example.com,,+393281234567,no\n",
        "utf-8",
    )
    ws.imports.contacts(people, progress=None)
    sales = tmp_path / "sales.csv"
    sales.write_text(
        "order_id,customer_id,ordered_at,amount\no1,a1,2024-01-01,10\no2,a2,2024-02-01,15\n",
        "utf-8",
    )
    ws.imports.orders(sales, progress=None)
    ws.tags.add("vip", contact_refs=["a2"])
    with ws.engine.begin() as conn:
        a2 = conn.execute(select(contacts.c.id).where(contacts.c.customer_id == "a2")).scalar_one()
        conn.execute(
            insert(events).values(
                event_key="e1",
                contact_id=a2,
                type="page_view",
                occurred_at=ws.clock.now(),
                machine=False,
            )
        )


@pytest.mark.slow
def test_contacts_merge_keeps_history_consent_log_and_tags(
    workspace: Workspace, tmp_path: Path
) -> None:
    _two_annas(workspace, tmp_path)
    assert count(workspace, contacts) == 2
    log_before = count(workspace, consent_log)
    dry = winback(workspace, "contacts", "merge", "--dry-run", "--json")
    assert json.loads(dry.stdout) == {"shared_addresses": ["ann@example.com"]}
    done = winback(workspace, "contacts", "merge", "--json")
    assert done.returncode == 0, done.stderr
    merged = json.loads(done.stdout)["merged"]
    assert [(m["survivor"], m["merged"]) for m in merged] == [("a1", ["a2"])]
    with workspace.engine.connect() as conn:
        ann = conn.execute(select(contacts)).one()
    assert (ann.customer_id, ann.first_name, ann.phone) == ("a1", "Ann", "+393281234567")
    assert (ann.orders_count, Decimal(str(ann.revenue_total))) == (2, Decimal("25.00"))
    assert ann.email_consent is False  # revoked on one of them: revoked
    assert count(workspace, orders, contact_id=ann.id) == 2
    assert count(workspace, events, contact_id=ann.id) == 1
    assert count(workspace, consent_log) == log_before  # the log moved, nothing lost
    assert count(workspace, consent_log, contact_id=ann.id) == log_before
    assert count(workspace, contact_tags, contact_id=ann.id, tag="vip") == 1
    assert count(workspace, tag_history, contact_id=ann.id) == 1
    again = winback(workspace, "contacts", "merge", "--json")
    assert json.loads(again.stdout) == {"merged": []}


def test_an_import_matched_by_email_merges_and_reports(
    workspace: Workspace, tmp_path: Path
) -> None:
    _two_annas(workspace, tmp_path)
    more = tmp_path / "more.csv"
    more.write_text("email,last_name\nAnn@Example.com,Rossi\n", "utf-8")
    report = workspace.imports.contacts(more, progress=None)  # no customer_id: by email
    assert [(m["survivor"], m["merged"]) for m in report.merged] == [("a1", ["a2"])]
    assert count(workspace, contacts) == 1
    profile = workspace.contacts.profile("ANN@example.com")  # show accepts an address
    assert profile["customer_id"] == "a1"
    assert profile["attributes"]["last_name"] == "Rossi"
    shown = winback(workspace, "contacts", "show", "ann@example.com", "--json")
    assert json.loads(shown.stdout)["customer_id"] == "a1"


def _orders_by_address() -> Any:
    """An orders kind matched by address, as a file with an email and no customer id."""
    from winback.ingest.matching import EmailMatched
    from winback.ingest.orders import Orders

    return EmailMatched(Orders())


def test_the_parser_process_finds_stored_addresses_and_the_writer_uses_them(
    sqlite_workspace: Workspace, tmp_path: Path
) -> None:
    """SQLite, orders keyed by address: the parser process sends the contact ids of the
    addresses the store has (the oldest contact of an address, never an erased one) with
    its batches; an address first seen in this import still lands on one contact."""
    from winback.ingest import importer

    ws = sqlite_workspace.replace(
        settings=sqlite_workspace.settings.model_copy(update={"import_batch_size": 2})
    )
    people = tmp_path / "people.csv"
    people.write_text(
        "customer_id,email\na1,ann@example.com\na2,ANN@example.com\ngone,gone@example.com\n",
        "utf-8",
    )
    ws.imports.contacts(people, progress=None)
    with ws.engine.connect() as conn:
        ids = dict(conn.execute(select(contacts.c.customer_id, contacts.c.id)).all())
    with ws.engine.begin() as conn:
        conn.execute(
            contacts.update()
            .where(contacts.c.customer_id == "gone")
            .values(erased_at=ws.clock.now())
        )
    resolved: list[Any] = []
    trusted: list[bool] = []  # whether the writer took what the parser process found

    class Recorded(type(_orders_by_address())):  # type: ignore[misc]
        def write(self, conn: Any, batch: list[Any], ctx: Any) -> Any:
            sent = ctx.extra.get("resolved_apart")
            resolved.append(None if sent is None else (dict(sent[0]), list(sent[1])))
            result = super().write(conn, batch, ctx)
            trusted.append(ctx.store_version is not None and ctx.store_version.version is not None)
            return result

    from winback.ingest.orders import Orders

    kind = Recorded(Orders())
    sales = tmp_path / "sales.csv"
    sales.write_text(
        "order_id,email,ordered_at,amount\n"
        "o1,Ann@Example.com,2024-01-01,10\n"
        "o2,new@example.com,2024-01-02,20\n"
        "o3,gone@example.com,2024-01-03,30\n"
        "o4,ann@example.com,2024-01-04,40\n"
        + "".join(f"o{i},new@example.com,2024-02-01,1\n" for i in range(5, 13)),
        "utf-8",
    )
    report = importer.run(ws.engine, ws.settings, ws.clock, kind, sales)
    assert (report.imported, report.rejected) == (12, 0)
    assert resolved[0] == ({"ann@example.com": ids["a1"]}, ["new@example.com"])
    assert resolved[1] == ({"ann@example.com": ids["a1"]}, ["gone@example.com"])
    assert trusted and all(trusted)  # no other connection wrote: used for every batch
    with ws.engine.connect() as conn:
        owners = dict(
            conn.execute(
                select(orders.c.order_id, contacts.c.customer_id).join(
                    contacts, contacts.c.id == orders.c.contact_id
                )
            ).all()
        )
    assert owners["o1"] == owners["o4"] == "a1"
    assert owners["o2"] == "new@example.com"
    assert {owners[f"o{i}"] for i in range(5, 13)} == {"new@example.com"}
    assert owners["o3"] == "gone@example.com"  # not the erased contact
    assert count(ws, contacts, email="new@example.com") == 1


def test_the_writer_ignores_the_parser_process_after_another_write(
    sqlite_workspace: Workspace, tmp_path: Path
) -> None:
    """What the parser process found is used while no other connection has written to the
    store since the import began; after such a write (here: the contact erased) the writer
    looks every address up itself, as an import without the parser process does."""
    import sqlite3

    from winback.ingest.bulk import Dialect
    from winback.ingest.importer import Context, StoreVersion, sqlite_file
    from winback.ingest.readers import record
    from winback.ingest.report import ImportReport

    ws = sqlite_workspace
    people = tmp_path / "people.csv"
    people.write_text("customer_id,email\na1,ann@example.com\n", "utf-8")
    ws.imports.contacts(people, progress=None)
    with ws.engine.connect() as conn:
        a1 = conn.execute(select(contacts.c.id)).scalar_one()
    ctx = Context(
        dialect=Dialect("sqlite"),
        tz=ws.settings.tz,
        currency="EUR",
        import_id=0,
        now=ws.clock.now(),
        source="test",
        report=ImportReport(kind="orders", source="test"),
        store_path=sqlite_file(ws.engine),
    )
    kind = _orders_by_address()
    columns = ["order_id", "email", "ordered_at", "amount"]
    kind.bind(columns, {c: i for i, c in enumerate(columns)}, ctx)
    assert kind.resolve_apart is not None
    batch = [kind.parse(record(2, ["o1", "ann@example.com", "2024-01-01", "10"]))]
    with ws.engine.connect() as conn:
        ctx.store_version = StoreVersion(conn)
    found = kind.resolve_apart(batch)
    assert found == ({"ann@example.com": a1}, [])

    ctx.extra["resolved_apart"] = ({"ann@example.com": 999_999}, [])  # taken as sent
    with ws.engine.begin() as conn:
        kind.resolve(conn, batch, ctx)
    assert ctx.extra.pop("contact_ids") == {"ann@example.com": 999_999}

    other = sqlite3.connect(str(ctx.store_path))
    with other:
        other.execute("UPDATE contacts SET erased_at = '2024-01-01', email = NULL")
    other.close()
    ctx.extra["resolved_apart"] = found
    with ws.engine.begin() as conn:
        kind.resolve(conn, batch, ctx)
        ids = ctx.extra.pop("contact_ids")
    assert a1 not in ids.values() and set(ids) == {"ann@example.com"}
    ctx.extra["resolved_apart"] = found  # and for good: later batches too
    with ws.engine.begin() as conn:
        kind.resolve(conn, batch, ctx)
        assert ctx.extra.pop("contact_ids")["ann@example.com"] == ids["ann@example.com"]
