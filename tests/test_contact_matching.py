"""One contact per address: rows matched by email, contacts sharing an address merged
(on import and by `winback contacts merge`), `contacts show` by email."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

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
