"""Orders imports written in commit units of several batches (PostgreSQL), against the
guarantees of the per-batch path: dedup on re-import, repeats within the file rejected with
their line (in line order), unknown customers created, exact contact attributes, and a unit
that fails rolled back whole. Runs on both databases (SQLite ignores the unit setting)."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from winback.ingest import bulk
from winback.store.schema import contacts, orders
from winback.workspace import Workspace

HEADER = "order_id,customer_id,ordered_at,amount,currency,items,coupon\n"


def units(ws: Workspace, batch: int, commit: int) -> Workspace:
    """The workspace importing in batches of ``batch`` rows, committed every ``commit``."""
    update = {"import_batch_size": batch, "import_commit_rows": commit}
    return ws.replace(settings=ws.settings.model_copy(update=update))


def rejects(path: Path) -> list[tuple[int, str, str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return [
            (int(r["line"]), r["field"], r["value"], r["reason"]) for r in csv.DictReader(handle)
        ]


def aggregates(ws: Workspace) -> dict[str, tuple[object, ...]]:
    with ws.engine.connect() as conn:
        rows = conn.execute(
            select(
                contacts.c.customer_id,
                contacts.c.orders_count,
                contacts.c.revenue_total,
                contacts.c.first_purchase_at,
                contacts.c.last_purchase_at,
            )
        ).all()
    return {r[0]: tuple(r[1:]) for r in rows}


def from_orders(ws: Workspace) -> dict[str, tuple[object, ...]]:
    with ws.engine.connect() as conn:
        rows = conn.execute(
            select(
                contacts.c.customer_id,
                func.count(orders.c.id),
                func.coalesce(func.sum(orders.c.amount), 0),
                func.min(orders.c.ordered_at),
                func.max(orders.c.ordered_at),
            )
            .select_from(contacts.outerjoin(orders, orders.c.contact_id == contacts.c.id))
            .group_by(contacts.c.customer_id)
        ).all()
    out: dict[str, tuple[object, ...]] = {}
    for cid, n, total, first, last in rows:
        if isinstance(first, str):  # SQLite aggregates come back as stored text
            first = datetime.fromisoformat(first).replace(tzinfo=UTC)
            last = datetime.fromisoformat(last).replace(tzinfo=UTC)
        out[cid] = (n, Decimal(str(total)).quantize(Decimal("0.01")), first, last)
    return out


def test_several_units_dedup_repeats_and_exact_attributes(
    workspace: Workspace, tmp_path: Path
) -> None:
    workspace = units(workspace, batch=3, commit=7)  # units of 3 batches (9 staged rows), 40 rows
    base = datetime(2024, 1, 1, tzinfo=UTC)
    lines = []
    for i in range(34):  # lines 2..35: 34 orders of 5 customers, times out of order
        at = base + timedelta(days=(i * 7) % 23, hours=i)
        lines.append(f"o{i},k{i % 5},{at.isoformat()},{i}.25,EUR,,\n")
    lines.append("o3,k3,2024-01-01T00:00:00Z,9,EUR,,\n")  # line 36: repeat of line 5 (unit 1)
    lines.append("o30,k0,2024-01-01T00:00:00Z,9,EUR,,\n")  # 37: repeat of line 32, same unit
    lines.append("o40,k1,not a time,1,EUR,,\n")  # 38: bad time
    lines.append("o41,new,2024-02-01T00:00:00Z,2.50,EUR,,\n")  # 39: unknown customer
    lines.append("o41,new,2024-02-01T00:00:00Z,2.50,EUR,,\n")  # 40: repeat, same batch
    lines.append("o35,k0,2025-01-01T00:00:00Z,1,EUR,,\n")  # 41
    path = tmp_path / "orders.csv"
    path.write_text(HEADER + "".join(lines), encoding="utf-8")
    seen: list[int] = []
    report = workspace.imports.orders(path, progress=lambda done, total: seen.append(done))
    assert (report.read, report.imported, report.duplicates) == (40, 36, 0)
    assert report.contacts_created == 6
    assert [(r[0], r[1]) for r in rejects(tmp_path / "orders.csv.rejects.csv")] == [
        (36, "order_id"),
        (37, "order_id"),
        (38, "ordered_at"),
        (40, "order_id"),
    ]
    got = {r[0]: r[3] for r in rejects(tmp_path / "orders.csv.rejects.csv")}
    assert got[36].endswith("already on an earlier line")
    assert got[37].endswith("line 32") or got[37].endswith("an earlier line")
    assert got[40].endswith("line 39")
    assert len(seen) >= 5 and seen == sorted(seen)
    expected = from_orders(workspace)
    assert aggregates(workspace) == expected
    assert expected["k0"][0] == 8 and expected["new"] == (
        1,
        Decimal("2.50"),
        datetime(2024, 2, 1, tzinfo=UTC),
        datetime(2024, 2, 1, tzinfo=UTC),
    )
    with workspace.engine.connect() as conn:
        amount = conn.execute(select(orders.c.amount).where(orders.c.order_id == "o3")).scalar()
    assert amount == Decimal("3.25")  # the first line of a repeated order wins

    again = workspace.imports.orders(path)  # re-import: nothing new, nothing moves
    assert again.imported == 0 and again.duplicates + again.rejected == 40
    assert aggregates(workspace) == expected
    rejected = [r[0] for r in rejects(tmp_path / "orders.csv.rejects.csv")]
    assert rejected == sorted(rejected) and {38, 40} <= set(rejected) <= {36, 37, 38, 40}


def test_a_failed_unit_is_rolled_back_whole(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if workspace.engine.dialect.name != "postgresql":
        pytest.skip("commit units are PostgreSQL's")
    workspace = units(workspace, batch=2, commit=4)
    path = tmp_path / "orders.csv"
    path.write_text(
        HEADER + "".join(f"o{i},c{i % 3},2024-03-0{1 + i % 9}T00:00:00Z,1,,,\n" for i in range(10)),
        encoding="utf-8",
    )
    calls = []
    real = bulk.create_missing_contacts

    def failing_second(*args: object) -> int:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("server went away")
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(bulk, "create_missing_contacts", failing_second)
    with pytest.raises(RuntimeError):
        workspace.imports.orders(path)
    with workspace.engine.connect() as conn:
        stored = set(conn.execute(select(orders.c.order_id)).scalars())
    assert stored == {"o0", "o1", "o2", "o3"}  # the first unit only, none of the second
    assert aggregates(workspace) == {
        k: v for k, v in from_orders(workspace).items() if k in {"c0", "c1", "c2"}
    }
    monkeypatch.setattr(bulk, "create_missing_contacts", real)
    report = workspace.imports.orders(path)  # resuming imports exactly the rest
    assert (report.imported, report.duplicates) == (6, 4)
    assert aggregates(workspace) == from_orders(workspace)


def test_a_file_overlapping_an_earlier_import(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Units where some orders are already stored take the classifying path; units where
    all are new the plain insert: both give the same counts and exact attributes."""
    workspace = units(workspace, batch=2, commit=4)
    classified: list[int] = []
    real = bulk.pg_insert_orders

    def counting(*args: object) -> object:
        classified.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(bulk, "pg_insert_orders", counting)
    first = tmp_path / "a.csv"
    first.write_text(
        HEADER + "".join(f"o{i},c{i % 4},2024-05-{1 + i:02d}T00:00:00Z,{i},,,\n" for i in range(6)),
        encoding="utf-8",
    )
    workspace.imports.orders(first)
    assert classified == []  # all new: plain inserts only
    second = tmp_path / "b.csv"  # o4, o5 again (first unit), then 8 new orders
    second.write_text(
        HEADER
        + "".join(f"o{i},c{i % 4},2024-05-{1 + i:02d}T00:00:00Z,{i},,,\n" for i in range(4, 14)),
        encoding="utf-8",
    )
    report = workspace.imports.orders(second)
    assert (report.imported, report.duplicates, report.rejected) == (8, 2, 0)
    postgres = workspace.engine.dialect.name == "postgresql"
    assert len(classified) == (1 if postgres else 0)  # only the unit holding o4, o5
    expected = from_orders(workspace)
    assert aggregates(workspace) == expected
    assert expected["c1"][:2] == (4, Decimal("28.00"))  # o1 o5 o9 o13
