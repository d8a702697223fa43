"""`make demo` runs end to end (small sizes here; the real demo uses 20,000 customers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

import winback
from winback.cli import demo
from winback.store.schema import contacts, outbox


@pytest.mark.slow
def test_demo_steps_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "demo-workspace"
    demo.main(["--customers", "150", "--months", "4", "--dir", str(folder)])
    demo.main(["--customers", "120", "--months", "3", "--dir", str(folder)])  # recreated
    out = capsys.readouterr().out
    for step in (
        "1. Workspace",
        "2. Generate a shop",
        "3. Import",
        "4. The customer base",
        "5. Analysis",
        "6. Reactivation flow, 30 simulated days",
        "7. Reactivation flow, delivered by SMTP",
    ):
        assert step in out
    with winback.open(folder, environ={}) as ws:
        assert ws.store.count_contacts() == 120
        with ws.engine.connect() as conn:
            sent = conn.execute(
                select(func.count()).select_from(outbox).where(outbox.c.status == "sent")
            ).scalar_one()
            analysed = conn.execute(
                select(func.count())
                .select_from(contacts)
                .where(contacts.c.rfm_segment.is_not(None))
            ).scalar_one()
    assert "no purchase in 90 days" in out
    assert (folder / "report.html").read_text(encoding="utf-8").count("<svg") >= 3
    assert analysed > 0
    # Every email the flow sent arrived at the demo's SMTP server, once.
    assert sent > 0 and len(list((folder / "mailbox").glob("*.eml"))) == sent
