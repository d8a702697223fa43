"""`make demo` runs end to end (small sizes here; the real demo uses 20,000 customers)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

import winback
from winback import accounts
from winback.cli import demo
from winback.store.schema import contacts, outbox


@pytest.mark.slow
def test_demo_steps_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "demo-workspace"
    monkeypatch.delenv(demo.PASSWORD_VARIABLE, raising=False)
    demo.main(["--customers", "150", "--months", "4", "--dir", str(folder)])
    first = capsys.readouterr().out
    # The generated password is printed once, with the user name and where to open it.
    [generated] = re.findall(r"password\s+(\S+)\s+\(shown only now\)", first)
    assert "http://127.0.0.1:8000/" in first and "user name  demo" in first
    assert f"winback serve --workspace {folder}" in first
    with winback.open(folder, environ={}) as ws:
        at = datetime.now(UTC)
        assert accounts.authenticate(ws.engine, "demo", generated, at=at) is not None
    monkeypatch.setenv(demo.PASSWORD_VARIABLE, "chosen by the person who runs it")
    demo.main(["--customers", "120", "--months", "3", "--dir", str(folder)])  # recreated
    out = capsys.readouterr().out
    assert "chosen by the person" not in out and "shown only now" not in out
    for step in (
        "1. Workspace",
        "2. Generate a shop",
        "3. Import",
        "4. The customer base",
        "5. Analysis",
        "6. Reactivation flow, 30 simulated days",
        "7. Reactivation flow, delivered by SMTP",
        "8. The dashboard",
    ):
        assert step in out
    with winback.open(folder, environ={}) as ws:
        assert ws.store.count_contacts() == 120
        assert accounts.authenticate(ws.engine, "demo", generated, at=datetime.now(UTC)) is None
        chosen = accounts.authenticate(
            ws.engine, "demo", "chosen by the person who runs it", at=datetime.now(UTC)
        )
        assert chosen is not None
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
