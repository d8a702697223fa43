"""`winback import ...` and `winback summary` as a user runs them (subprocess, exit codes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import T0
from winback.summary import base_summary
from winback.workspace import Workspace

HEADER = "order_id,customer_id,ordered_at,amount,currency,items,coupon\n"


def winback(ws: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WINBACK_DATABASE_URL": ws.settings.database_url or "", "COLUMNS": "400"}
    return subprocess.run(
        [sys.executable, "-m", "winback.cli", *args, "--workspace", str(ws.path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_import_orders_json_exit_codes_and_map(workspace: Workspace, tmp_path: Path) -> None:
    good = tmp_path / "orders.csv"
    good.write_text(HEADER + "o1,c1,2024-01-01,5,,,\no2,c2,2024-01-02,x,,,\n", encoding="utf-8")
    done = winback(workspace, "import", "orders", str(good), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["imported"], report["rejected"]) == (1, 1)
    assert report["reject_file"] == str(good) + ".rejects.csv"

    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "o9,c9,never,5,,,\n", encoding="utf-8")
    failed = winback(workspace, "import", "orders", str(bad), "-q")
    assert failed.returncode == 2
    assert "none of the 1 rows" in failed.stderr and "bad.csv.rejects.csv" in failed.stderr

    missing = winback(workspace, "import", "events", str(tmp_path / "nope.csv"))
    assert missing.returncode == 2 and "no such file" in missing.stderr

    theirs = tmp_path / "export.csv"
    theirs.write_text("Id,Cust,When,Total\nz1,c1,2024-02-01,7\n", encoding="utf-8")
    unmapped = winback(workspace, "import", "orders", str(theirs), "-q")
    assert unmapped.returncode == 2 and "--map order_id=" in unmapped.stderr
    mapped = winback(
        workspace, "import", "orders", str(theirs), "--json",
        "--map", "order_id=Id", "--map", "customer_id=Cust",
        "--map", "ordered_at=When", "--map", "amount=Total",
    )  # fmt: skip
    assert mapped.returncode == 0, mapped.stderr
    assert json.loads(mapped.stdout)["imported"] == 1


@pytest.mark.slow
def test_cdnow_sample_then_summary(workspace: Workspace) -> None:
    done = winback(workspace, "import", "cdnow", "--sample")
    assert done.returncode == 0, done.stderr
    assert "6,919" in done.stdout and "2,357" in done.stdout
    summary = winback(workspace, "summary", "--json")
    assert summary.returncode == 0, summary.stderr
    data = json.loads(summary.stdout)
    assert (data["customers"], data["orders"], data["customers_with_orders"]) == (2357, 6919, 2357)
    assert data["revenue"] == 244091.94


def test_base_summary_shares(workspace: Workspace, tmp_path: Path) -> None:
    def day(days_ago: float) -> str:
        return (T0 - timedelta(days=days_ago)).isoformat()

    (tmp_path / "contacts.csv").write_text(
        "customer_id,email_consent,sms_consent\nc1,yes,\nc2,no,\nc3,,yes\nc4,,\nc5,,\nc6,,\n",
        encoding="utf-8",
    )
    (tmp_path / "orders.csv").write_text(
        HEADER + f"o1,c1,{day(10)},10,,,\no2,c2,{day(200)},5.5,,,\n", encoding="utf-8"
    )
    (tmp_path / "events.csv").write_text(
        "customer_id,type,occurred_at,properties\n"
        f"c3,email_opened,{day(5)},\n"
        f'c4,email_opened,{day(5)},"{{""machine"": true}}"\n'
        f"c5,page_view,{day(1)},\n"
        f"c6,email_clicked,{day(100)},\n",
        encoding="utf-8",
    )
    for kind in ("contacts", "orders", "events"):
        getattr(workspace.imports, kind)(tmp_path / f"{kind}.csv")
    data = base_summary(
        workspace.engine, now=workspace.clock.now(), days=workspace.settings.dormant_days
    )
    assert (data["customers"], data["customers_with_orders"], data["orders"]) == (6, 2, 2)
    assert data["revenue"] == Decimal("15.50")
    assert data["share_no_purchase"] == round(5 / 6, 4)
    assert data["share_no_open"] == round(5 / 6, 4)  # the machine open does not count
    assert data["share_no_click"] == 1.0
    assert data["share_no_visit"] == round(5 / 6, 4)
    assert data["share_not_active"] == 0.5
    assert data["consent_rate"] == {"email": round(1 / 6, 4), "sms": round(1 / 6, 4), "push": 0.0}
