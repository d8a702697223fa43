from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def winback(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "winback.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_init_then_config_and_upgrade(tmp_path: Path) -> None:
    made = winback("init", "shop", "--timezone", "Europe/Rome", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    shown = winback("config", "--json", "--workspace", "shop", cwd=tmp_path)
    data = json.loads(shown.stdout)
    assert data["timezone"] == "Europe/Rome"
    assert data["secret_key"] == "********"
    again = winback("db", "upgrade", cwd=tmp_path / "shop")
    assert again.returncode == 0 and "up to date" in again.stdout


def test_missing_workspace_is_a_clear_error(tmp_path: Path) -> None:
    result = winback("config", cwd=tmp_path)
    assert result.returncode == 2
    assert "no winback workspace" in result.stderr and "winback init" in result.stderr


def test_init_refuses_an_existing_workspace(tmp_path: Path) -> None:
    assert winback("init", "shop", cwd=tmp_path).returncode == 0
    again = winback("init", "shop", cwd=tmp_path)
    assert again.returncode == 2 and "already a winback workspace" in again.stderr
