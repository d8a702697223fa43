"""Mapping beyond headers: value maps, row filters, the file's date format, decimal commas,
its delimiter and its time zone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from winback.errors import InvalidMapping
from winback.ingest.transform import Options, decimal_text, parse_value_map, parse_where
from winback.store.schema import contacts, events, orders
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


def test_an_excel_resave_with_semicolons_decimal_commas_and_day_first_dates(
    workspace: Workspace, tmp_path: Path
) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(
        "Order;Client;Date;Total;Stato\n"
        "o1;c1;01/12/2024 10:30;31,00;paid\n"
        "o2;c1;02/12/2024 09:00;1.234,56;paid\n"
        "o3;c2;03/12/2024 18:00;5,5;test\n"
        "o4;c2;13/13/2024 18:00;7,00;paid\n",
        "utf-8",
    )
    done = winback(
        workspace,
        "import",
        "orders",
        str(path),
        "--map",
        "order_id=Order",
        "--map",
        "customer_id=Client",
        "--map",
        "ordered_at=Date",
        "--map",
        "amount=Total",
        "--map",
        "status=Stato",
        "--where",
        "Stato!=test",
        "--date-format",
        "%d/%m/%Y %H:%M",
        "--timezone",
        "Europe/Rome",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["imported"], report["rejected"], report["filtered"]) == (2, 1, 1)
    with workspace.engine.connect() as conn:
        got = dict(conn.execute(select(orders.c.order_id, orders.c.amount)).all())
        at = conn.execute(select(orders.c.ordered_at).where(orders.c.order_id == "o1")).scalar_one()
    assert {k: Decimal(str(v)) for k, v in got.items()} == {
        "o1": Decimal("31.00"),
        "o2": Decimal("1234.56"),
    }
    assert at == datetime(2024, 12, 1, 9, 30, tzinfo=UTC)  # 10:30 in Rome
    rejects = (tmp_path / "orders.csv.rejects.csv").read_text("utf-8")
    assert "does not match --date-format" in rejects and rejects.startswith("line")


def test_value_maps_turn_custom_events_into_email_events(
    workspace: Workspace, tmp_path: Path
) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "customer_id,type,occurred_at\n"
        "c1,open,2024-03-01T10:00:00Z\n"
        "c1,Click,2024-03-01T10:05:00Z\n"
        "c1,visit,2024-03-01T10:06:00Z\n",
        "utf-8",
    )
    options = Options(
        values=parse_value_map(["type:open=email_opened", "type:click=email_clicked"])
    )
    workspace.imports.events(path, options=options, progress=None)
    with workspace.engine.connect() as conn:
        types = sorted(conn.execute(select(events.c.type)).scalars())
        opened = conn.execute(select(contacts.c.last_email_opened)).scalar_one()
    assert types == ["email_clicked", "email_opened", "visit"]
    assert opened == datetime(2024, 3, 1, 10, tzinfo=UTC)


def test_bad_options_are_named(workspace: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "o.csv"
    path.write_text("order_id,customer_id,ordered_at,amount\no1,c1,2024-01-01,1\n", "utf-8")
    with pytest.raises(InvalidMapping, match="--where country"):
        workspace.imports.orders(path, options=Options(where=parse_where(["country=IT"])))
    with pytest.raises(InvalidMapping, match="--timezone Mars/Base"):
        workspace.imports.orders(path, options=Options(timezone="Mars/Base"))
    with pytest.raises(InvalidMapping, match="field:from=to"):
        parse_value_map(["type=open"])


def test_decimal_commas() -> None:
    assert decimal_text("31,00") == "31.00"
    assert decimal_text("-1.234,5") == "-1234.5"
    assert decimal_text("1,234") == "1,234"  # a thousands comma is not guessed
    assert decimal_text("12.50") == "12.50"


def test_phone_numbers_are_stored_in_e164_and_invalid_ones_reported(
    workspace: Workspace, tmp_path: Path
) -> None:
    workspace.settings = workspace.settings.model_copy(update={"phone_region": "IT"})
    path = tmp_path / "people.csv"
    path.write_text(
        "customer_id,phone\nc1,'+39 328 123 4567\nc2,328.123.4568\nc3,0044 20 7946 0958\nc4,12\n",
        "utf-8",
    )
    report = workspace.imports.contacts(path, progress=None)
    assert (report.imported, report.rejected, report.phones_invalid) == (4, 0, 1)
    assert report.invalid_phones[0]["line"] == 5
    with workspace.engine.connect() as conn:
        phones = dict(conn.execute(select(contacts.c.customer_id, contacts.c.phone)).all())
    assert phones == {
        "c1": "+393281234567",
        "c2": "+393281234568",
        "c3": "+442079460958",
        "c4": None,
    }
