"""ws.analytics on both databases: read orders from the store, write the contact attributes
and RFM snapshots, show movement between snapshots."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from winback.analytics.orders_file import read_orders
from winback.analytics.rfm import SEGMENTS
from winback.clock import FixedClock
from winback.data import CDNOW_SAMPLE
from winback.store.schema import contacts, orders, rfm_snapshots
from winback.workspace import Workspace

EPOCH = date(1970, 1, 1)


def load_cdnow(ws: Workspace) -> dict[str, int]:
    f = read_orders(CDNOW_SAMPLE)
    tx = f.transactions
    at = datetime(1997, 1, 1, tzinfo=UTC)
    with ws.engine.begin() as conn:
        ids = ws.store.ensure_contacts(f.customer_ids.tolist(), at=at, conn=conn)
        rows = [
            {
                "order_id": f"o{i}",
                "contact_id": ids[str(f.customer_ids[c])],
                "ordered_at": datetime.combine(
                    EPOCH + timedelta(days=int(d)), datetime.min.time(), UTC
                )
                + timedelta(hours=12),
                "amount": round(float(a), 2),
                "currency": "USD",
            }
            for i, (c, d, a) in enumerate(zip(tx.customer, tx.day, tx.amount, strict=True))
        ]
        conn.execute(insert(orders), rows)
    return ids


@pytest.mark.slow
def test_analyze_round_trip(workspace: Workspace) -> None:
    ids = load_cdnow(workspace)
    clock = FixedClock(datetime(1997, 9, 30, 18, tzinfo=UTC))
    workspace = workspace.replace(clock=clock)
    fit = workspace.analytics.fit("bgnbd", calibration_end=date(1997, 9, 30))
    assert round(fit["params"]["r"], 3) == 0.243 and round(fit["log_likelihood"], 1) == -9582.4
    assert "holdout" not in fit
    clock.set(datetime(1998, 6, 30, 18, tzinfo=UTC))
    fit = workspace.analytics.fit("bgnbd", calibration_end=date(1997, 9, 30))
    assert round(fit["params"]["alpha"], 2) == 4.41
    assert fit["holdout"]["actual_total"] > 0
    clock.set(datetime(1998, 1, 31, 9, tzinfo=UTC))
    first = workspace.analytics.analyze()
    assert first.report["movement"] is None
    clock.set(datetime(1998, 6, 30, 9, tzinfo=UTC))
    second = workspace.analytics.analyze()
    with workspace.engine.connect() as conn:
        row = (
            conn.execute(
                select(contacts).where(contacts.c.id == ids["00004"])  # CDNOW customer 00004
            )
            .mappings()
            .one()
        )
        assert row["rfm_segment"] in SEGMENTS
        assert 1 <= row["rfm_r"] <= 5 and 0 <= row["p_alive"] <= 1
        assert row["next_order_expected_at"].tzinfo is not None
        assert row["cluster_label"] and row["analyzed_at"] == clock.now()
        assert row["clv"] > 0 and row["expected_spend"] > 0
        counts: dict[Any, int] = dict(
            conn.execute(
                select(rfm_snapshots.c.snapshot_date, func.count()).group_by(
                    rfm_snapshots.c.snapshot_date
                )
            ).all()
        )
        dist: dict[Any, int] = dict(
            conn.execute(
                select(contacts.c.rfm_segment, func.count()).group_by(contacts.c.rfm_segment)
            ).all()
        )
    assert counts == {date(1998, 1, 31): 2357, date(1998, 6, 30): 2357}
    assert sum(dist.values()) == 2357 and None not in dist
    movement = second.report["movement"]
    assert movement["from_date"] == date(1998, 1, 31)
    assert sum(t["customers"] for t in movement["transitions"]) == 2357
    assert any(t["from"] != t["to"] for t in movement["transitions"])
    # Same day again: the snapshot is replaced, not doubled.
    workspace.analytics.analyze(holdout=False)
    with workspace.engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(rfm_snapshots)).scalar_one()
    assert n == 2 * 2357


def test_predict_writes_model_columns(workspace: Workspace) -> None:
    at = datetime(2025, 6, 1, tzinfo=UTC)
    with workspace.engine.begin() as conn:
        ids = workspace.store.ensure_contacts([f"c{i}" for i in range(40)], at=at, conn=conn)
        rows = []
        for i in range(40):
            for k in range(1 + i % 5):
                rows.append(
                    {
                        "order_id": f"o{i}-{k}",
                        "contact_id": ids[f"c{i}"],
                        "ordered_at": at + timedelta(days=3 * i + 11 * k),
                        "amount": 10 + i + k,
                        "currency": "USD",
                    }
                )
        conn.execute(insert(orders), rows)
    out = workspace.analytics.predict()
    assert out["customers"] == 40
    with workspace.engine.connect() as conn:
        got = conn.execute(select(contacts.c.p_alive, contacts.c.clv, contacts.c.rfm_segment)).all()
    assert all(p is not None and 0 <= p <= 1 for p, _, _ in got)
    assert all(seg is None for _, _, seg in got)  # predict leaves RFM alone
