"""The ``winback`` command: a thin layer over :mod:`winback` (the Python API).

Each command group lives in its own module and registers itself on :data:`app`; this module
only wires them and translates core exceptions into clear messages and exit codes.
"""

from __future__ import annotations

import sys
import traceback

from rich.markup import escape

# Command modules register their commands on import.
from winback.cli import analyze as _analyze  # noqa: F401
from winback.cli import delivery as _delivery  # noqa: F401
from winback.cli import feedback_loop as _feedback_loop  # noqa: F401
from winback.cli import flows as _flows  # noqa: F401
from winback.cli import generate as _generate  # noqa: F401
from winback.cli import imports as _imports  # noqa: F401
from winback.cli import results as _results  # noqa: F401
from winback.cli import run as _run  # noqa: F401
from winback.cli import segments as _segments  # noqa: F401  (also tags, contacts)
from winback.cli import summary as _summary  # noqa: F401
from winback.cli import users as _users  # noqa: F401
from winback.cli import workspace as _workspace  # noqa: F401
from winback.cli._app import app, console, err_console
from winback.errors import WinbackError
from winback.masking import mask_text

__all__ = ["app", "console", "main"]


def main() -> None:
    """Run the command; a core error is one masked line (exit 2), any other exception a
    masked traceback (exit 1): secrets never reach the terminal."""
    try:
        app()
    except WinbackError as exc:
        err_console.print(f"[bold red]error:[/] {escape(mask_text(str(exc)))}", highlight=False)
        sys.exit(2)
    except Exception:
        sys.stderr.write(mask_text(traceback.format_exc()))
        sys.exit(1)
