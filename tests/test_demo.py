"""`make demo` runs end to end (small sizes here; the real demo uses 20,000 customers)."""

from __future__ import annotations

from pathlib import Path

import pytest

import winback
from winback import demo


def test_demo_steps_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "demo-workspace"
    demo.main(["--customers", "150", "--months", "4", "--dir", str(folder)])
    demo.main(["--customers", "120", "--months", "3", "--dir", str(folder)])  # recreated
    out = capsys.readouterr().out
    for step in ("1. Workspace", "2. Generate a shop", "3. Import", "4. The customer base"):
        assert step in out
    with winback.open(folder, environ={}) as ws:
        assert ws.store.count_contacts() == 120
    assert "no purchase in 90 days" in out
