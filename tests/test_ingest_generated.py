"""Importing a generated shop: every good row imported, every dirty row reported where the
generator's manifest (dirty_rows.csv) says it is."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from sqlalchemy import func, select

from winback.generator import generate_shop
from winback.store.schema import events, orders
from winback.workspace import Workspace


def test_generated_shop_imports_exactly_the_good_rows(workspace: Workspace, tmp_path: Path) -> None:
    shop = generate_shop(tmp_path / "shop", customers=300, months=6, seed=3, dirty_share=0.03)
    reports = {
        kind: getattr(workspace.imports, kind)(shop.out_dir / f"{kind}.csv")
        for kind in ("contacts", "orders", "events")
    }
    assert reports["contacts"].imported == shop.customers
    assert reports["orders"].imported == shop.orders
    assert reports["events"].imported == shop.events
    with workspace.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(orders)).scalar() == shop.orders
        assert conn.execute(select(func.count()).select_from(events)).scalar() == shop.events
    expected: dict[str, set[tuple[int, str]]] = defaultdict(set)
    kept: list[dict[str, str]] = []
    with shop.dirty_rows_path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["expect"] in ("reject", "duplicate"):
                expected[row["file"]].add((int(row["line"]), row["field"]))
            else:
                kept.append(row)
    for kind, report in reports.items():
        got: set[tuple[int, str]] = set()
        if report.reject_file:
            with report.reject_file.open(encoding="utf-8", newline="") as handle:
                got = {(int(r["line"]), r["field"]) for r in csv.DictReader(handle)}
        assert got == expected[f"{kind}.csv"], kind
        assert report.read == report.imported + report.duplicates + report.rejected
    for row in kept:  # messy emails are normalised, formula-looking names kept as text
        line = int(row["line"])
        with (shop.out_dir / "contacts.csv").open(encoding="utf-8", newline="") as handle:
            record = next(r for i, r in enumerate(csv.DictReader(handle), start=2) if i == line)
        stored = workspace.store.get_contact(record["customer_id"].strip())
        if row["expect"] == "normalise":
            assert stored["email"] == record["email"].strip().lower()
        else:
            assert stored["first_name"] == record["first_name"].strip()
