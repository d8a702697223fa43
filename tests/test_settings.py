from __future__ import annotations

from pathlib import Path

import pytest

from winback.config import Settings, load_settings, settings_table_markdown
from winback.errors import InvalidSetting, NoWorkspace
from winback.workspace import find, init

DOCS = Path(__file__).resolve().parents[1] / "docs" / "settings.md"


def test_every_setting_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for name in Settings.model_fields:
        assert f"`{name}`" in text, f"setting {name} is missing from docs/settings.md"
    assert settings_table_markdown() in text, "docs/settings.md is stale: python -m winback.config"


def test_environment_overrides_file(tmp_path: Path) -> None:
    (tmp_path / "winback.toml").write_text('dormant_days = 60\ntimezone = "Europe/Rome"\n')
    s = load_settings(tmp_path, {"WINBACK_DORMANT_DAYS": "120"})
    assert s.dormant_days == 120 and s.timezone == "Europe/Rome"


def test_bad_values_are_named(tmp_path: Path) -> None:
    (tmp_path / "winback.toml").write_text('timezone = "Mars/Olympus"\n')
    with pytest.raises(InvalidSetting, match="timezone = 'Mars/Olympus'.*IANA"):
        load_settings(tmp_path, {})
    (tmp_path / "winback.toml").write_text("dormant_dayz = 3\n")
    with pytest.raises(InvalidSetting, match="dormant_dayz.*unknown setting"):
        load_settings(tmp_path, {})
    with pytest.raises(InvalidSetting, match="WINBACK_DORMANT_DAYS='soon'.*whole number"):
        load_settings(None, {"WINBACK_DORMANT_DAYS": "soon"})


def test_workspace_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    init(a, environ={}).close()
    init(b, environ={}).close()
    assert find(a, {"WINBACK_HOME": str(b)}) == a
    assert find(None, {"WINBACK_HOME": str(b)}) == b
    monkeypatch.chdir(a)
    assert find(None, {}).resolve() == a.resolve()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NoWorkspace, match="winback init"):
        find(None, {})


def test_init_writes_secret_and_folders(tmp_path: Path) -> None:
    ws = init(tmp_path / "shop", environ={})
    ws.close()
    assert ws.settings.secret_key and len(ws.settings.secret_key) >= 32
    for name in ("segments", "flows", "templates"):
        assert (tmp_path / "shop" / name).is_dir()
    assert (tmp_path / "shop" / "winback.db").exists()
    other = init(tmp_path / "shop2", environ={})
    other.close()
    assert other.settings.secret_key != ws.settings.secret_key
