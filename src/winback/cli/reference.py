"""Generates docs/cli.md from the command tree, so the reference cannot drift from the code.

``python -m winback.cli.reference > docs/cli.md``; ``tests/test_docs.py`` checks it is current.
"""

from __future__ import annotations

from typing import Any

import typer

from winback.cli import app


def _is_group(cmd: Any) -> bool:
    return hasattr(cmd, "list_commands")


def _walk(cmd: Any, path: list[str]) -> list[tuple[list[str], Any]]:
    found = [(path, cmd)]
    if _is_group(cmd):
        ctx = _context(cmd, path)
        for name in sorted(cmd.list_commands(ctx)):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                found.extend(_walk(sub, [*path, name]))
    return found


def _context(cmd: Any, path: list[str]) -> Any:
    return cmd.context_class(cmd, info_name=" ".join(path))


def _usage(cmd: Any, path: list[str]) -> str:
    return str(cmd.get_usage(_context(cmd, path))).removeprefix("Usage: ")


def cli_reference() -> str:
    root = typer.main.get_command(app)
    out = [
        "# Command-line reference",
        "",
        "Generated from the code by `python -m winback.cli.reference`; do not edit by hand.",
        "Every command takes `--workspace PATH` (or `WINBACK_HOME`, or the current directory).",
        "",
    ]
    for path, cmd in _walk(root, ["winback"]):
        if _is_group(cmd) and len(path) > 1:
            out += [f"## `{' '.join(path)}`", "", (cmd.help or "").strip(), ""]
            continue
        if len(path) == 1:
            continue
        out += [f"### `{' '.join(path)}`", "", (cmd.help or "").strip(), ""]
        out += ["```", _usage(cmd, path), "```", ""]
        rows = []
        for param in cmd.params:
            if param.param_type_name == "option":
                names = ", ".join(f"`{n}`" for n in param.opts)
                default = ""
                if param.default not in (None, False, (), []) and not callable(param.default):
                    default = f" (default: `{param.default}`)"
                rows.append(f"- {names}: {(param.help or '').strip()}{default}")
            elif param.param_type_name == "argument":
                rows.append(f"- `{param.name.upper() if param.name else '?'}` (argument)")
        if rows:
            out += [*rows, ""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(cli_reference(), end="")
