"""Order status and refunds: only counted purchases (paid, not fully refunded; partial
refunds at net) feed the contacts' purchase attributes, the base summary and the analytics
transactions, and a later import that changes an order's status or refund updates the stored
order and recounts its contact. Both databases, per-batch and commit-unit paths."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from winback.store.schema import contacts, orders
from winback.summary import base_summary
from winback.workspace import Workspace


def summary_of(ws: Workspace) -> dict[str, object]:
    return base_summary(ws.engine, now=ws.clock.now(), days=ws.settings.dormant_days)


HEADER = "order_id,customer_id,ordered_at,amount,status,refunded\n"
#: (order, customer, day of January 2024, amount, status, refunded)
FIRST = [
    ("o1", "ann", 3, "100.00", "paid", ""),
    ("o2", "ann", 9, "40.00", "paid", "15.00"),  # partial refund: counts 25.00
    ("o3", "ann", 20, "60.00", "cancelled", ""),  # not counted
    ("o4", "bob", 5, "80.00", "refunded", "80.00"),  # fully refunded: not counted
    ("o5", "bob", 6, "30.00", "paid", "30.00"),  # paid but refunded in full: not counted
    ("o6", "cat", 2, "10.00", "", ""),  # empty status: paid
    ("o7", "cat", 4, "20.00", "PENDING", ""),  # not counted
]


def write(
    path: Path, rows: list[tuple[str, str, int, str, str, str]], header: str = HEADER
) -> Path:
    with path.open("w", encoding="utf-8") as f:
        f.write(header)
        for order_id, customer, day, amount, status, refunded in rows:
            at = datetime(2024, 1, day, 12, tzinfo=UTC).isoformat()
            f.write(f"{order_id},{customer},{at},{amount},{status},{refunded}\n")
    return path


def expected(rows: list[tuple[str, str, int, str, str, str]]) -> dict[str, tuple[object, ...]]:
    """Per customer: counted orders, net revenue, first and last counted purchase day."""
    out: dict[str, list[object]] = {}
    for _order, customer, day, amount, status, refunded in rows:
        out.setdefault(customer, [0, Decimal("0.00"), None, None])
        net = Decimal(amount) - Decimal(refunded or "0")
        if (status or "paid").lower() != "paid" or (refunded and net <= 0):
            continue
        agg = out[customer]
        agg[0] = int(str(agg[0])) + 1
        agg[1] = Decimal(str(agg[1])) + net
        agg[2] = day if agg[2] is None else min(int(str(agg[2])), day)
        agg[3] = day if agg[3] is None else max(int(str(agg[3])), day)
    return {k: tuple(v) for k, v in out.items()}


def stored(ws: Workspace) -> dict[str, tuple[object, ...]]:
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
    return {
        r[0]: (
            r[1],
            Decimal(str(r[2])).quantize(Decimal("0.01")),
            None if r[3] is None else r[3].day,
            None if r[4] is None else r[4].day,
        )
        for r in rows
    }


def units(ws: Workspace, batch: int, commit: int) -> None:
    ws.settings = ws.settings.model_copy(
        update={"import_batch_size": batch, "import_commit_rows": commit}
    )


@pytest.mark.parametrize("batch", [2, 50])
def test_only_counted_purchases_feed_contacts_summary_and_analytics(
    workspace: Workspace, tmp_path: Path, batch: int
) -> None:
    units(workspace, batch=batch, commit=4)
    report = workspace.imports.orders(write(tmp_path / "o.csv", FIRST), progress=None)
    assert report.imported == 7
    assert stored(workspace) == expected(FIRST)
    assert stored(workspace)["ann"] == (2, Decimal("125.00"), 3, 9)
    summary = summary_of(workspace)
    assert summary["orders"] == 3
    assert Decimal(str(summary["revenue"])) == Decimal("135.00")
    t = workspace.analytics.transactions()
    assert sorted(t.amount.tolist()) == [10.0, 25.0, 100.0]
    with workspace.engine.connect() as conn:
        status = dict(conn.execute(select(orders.c.order_id, orders.c.status)).all())
    assert status["o6"] == "paid" and status["o7"] == "pending"


@pytest.mark.parametrize("batch", [2, 50])
def test_a_refund_or_cancellation_imported_later_updates_order_and_contact(
    workspace: Workspace, tmp_path: Path, batch: int
) -> None:
    units(workspace, batch=batch, commit=4)
    workspace.imports.orders(write(tmp_path / "a.csv", FIRST), progress=None)
    later = [
        ("o1", "ann", 3, "100.00", "refunded", "100.00"),  # refunded in full
        ("o2", "ann", 9, "40.00", "paid", "15.00"),  # unchanged
        ("o3", "ann", 20, "60.00", "paid", ""),  # reinstated
        ("o5", "bob", 6, "30.00", "paid", "10.00"),  # part of the refund reversed
        ("o6", "cat", 2, "10.00", "cancelled", ""),
        ("o8", "cat", 7, "5.00", "paid", ""),  # new
    ]
    report = workspace.imports.orders(write(tmp_path / "b.csv", later), progress=None)
    assert (report.imported, report.duplicates, report.orders_updated) == (1, 5, 4)
    final = {r[0]: r for r in FIRST} | {r[0]: r for r in later}
    assert stored(workspace) == expected(list(final.values()))
    assert stored(workspace)["ann"] == (2, Decimal("85.00"), 9, 20)
    assert stored(workspace)["cat"][:2] == (1, Decimal("5.00"))
    with workspace.engine.connect() as conn:
        got = conn.execute(
            select(orders.c.status, orders.c.refunded).where(orders.c.order_id == "o1")
        ).one()
    assert (got[0], Decimal(str(got[1]))) == ("refunded", Decimal("100.00"))
    summary = summary_of(workspace)
    assert Decimal(str(summary["revenue"])) == Decimal("135.00") - 100 + 60 + 20 - 10 + 5


def test_a_file_without_status_leaves_stored_refunds_alone(
    workspace: Workspace, tmp_path: Path
) -> None:
    workspace.imports.orders(write(tmp_path / "a.csv", FIRST), progress=None)
    before = stored(workspace)
    plain = tmp_path / "plain.csv"
    plain.write_text(
        "order_id,customer_id,ordered_at,amount\n"
        + "".join(f"{o},{c},2024-01-{d:02d}T12:00:00Z,{a}\n" for o, c, d, a, _s, _r in FIRST),
        encoding="utf-8",
    )
    report = workspace.imports.orders(plain, progress=None)
    assert (report.duplicates, report.orders_updated) == (7, 0)
    assert stored(workspace) == before


def test_a_bad_status_or_refund_is_rejected_with_its_field(
    workspace: Workspace, tmp_path: Path
) -> None:
    rows = [
        ("o1", "ann", 3, "100.00", "shipped", ""),
        ("o2", "ann", 4, "10.00", "paid", "-1"),
        ("o3", "ann", 5, "10.00", "paid", ""),
    ]
    path = write(tmp_path / "bad.csv", rows)
    report = workspace.imports.orders(path, progress=None)
    assert (report.imported, report.rejected) == (1, 2)
    text = (tmp_path / "bad.csv.rejects.csv").read_text(encoding="utf-8")
    assert '2,status,shipped,"unknown order status' in text
    assert "3,refunded,'-1,a refunded amount cannot be negative" in text
