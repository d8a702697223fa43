"""`winback segments export`: members with consent per channel, purchases, RFM segment,
P(alive) and CLV, formula-safe."""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from tests.conftest import T0
from tests.shopdata import add_contact, add_order
from winback.segments.service import EXPORT_COLUMNS
from winback.store.schema import contacts
from winback.workspace import Workspace

D = timedelta(days=1)


def test_export_carries_consent_purchases_and_analytics(
    workspace: Workspace, tmp_path: Path
) -> None:
    a = add_contact(workspace, "a", email="a@example.com", email_consent=True, sms_consent=False)
    add_contact(workspace, "-b", first_name="=cmd()")
    add_order(workspace, a, T0 - 10 * D, 25.5)
    add_order(workspace, a, T0 - 3 * D, 10.0)
    with workspace.engine.begin() as conn:
        conn.execute(
            update(contacts)
            .where(contacts.c.id == a)
            .values(rfm_segment="Champions", p_alive=0.8123456789, clv=-3.5, analyzed_at=T0)
        )
    folder = workspace.path / "segments"
    folder.mkdir(exist_ok=True)
    (folder / "all.yaml").write_text(
        "name: Everyone\nattribute: customer_id\nhas_any_value: true\n"
    )
    workspace.segments.refresh()
    out = tmp_path / "everyone.csv"
    assert workspace.segments.export("Everyone", out) == 2
    with out.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == EXPORT_COLUMNS
        rows = {r["customer_id"]: r for r in reader}
    row = rows["a"]
    assert (row["email_consent"], row["sms_consent"], row["push_consent"]) == ("true", "false", "")
    assert row["orders_count"] == "2" and float(row["revenue_total"]) == 35.5
    assert row["last_purchase_at"].startswith((T0 - 3 * D).date().isoformat())
    assert row["rfm_segment"] == "Champions"
    assert row["p_alive"] == "0.812346" and row["clv"] == "-3.5"
    other = rows["'-b"]
    assert (
        other["first_name"] == "'=cmd()" and other["p_alive"] == "" and other["orders_count"] == "0"
    )
