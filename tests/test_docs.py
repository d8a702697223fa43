"""Reference docs generated from the code must be current."""

from __future__ import annotations

from pathlib import Path

import pytest

from winback.cli.reference import cli_reference

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_cli_reference_is_current() -> None:
    assert (DOCS / "cli.md").read_text(encoding="utf-8") == cli_reference(), (
        "docs/cli.md is stale: run `.venv/bin/python -m winback.cli.reference > docs/cli.md`"
    )


def test_readme_starts_with_the_two_setup_commands() -> None:
    readme = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    first_block = readme.split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make demo", "make test"]


def test_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's Python API example, run as written on a small generated shop."""
    import winback
    from winback.generator import generate_shop

    readme = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    snippet = readme.split("```python", 1)[1].split("```", 1)[0]
    shop = generate_shop(tmp_path / "shop", customers=300, months=12, seed=3)
    winback.init(tmp_path / "myshop", environ={}).close()
    (tmp_path / "orders.csv").write_bytes((shop.out_dir / "orders.csv").read_bytes())
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md", "exec"), {})  # our own documentation
    with winback.open(tmp_path / "myshop", environ={}) as ws:
        assert ws.store.count_contacts() > 0
        assert ws.segments.list()
