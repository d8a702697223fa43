"""Reject files: every row an import could not use, with line, field, value and reason.

Every CSV winback writes is formula-safe: a cell that a spreadsheet would run as a formula
(starting with ``= + - @``, tab or carriage return) is prefixed with a single quote.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import IO, Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
HEADER = ("line", "field", "value", "reason")


def formula_safe(cell: Any) -> str:
    """The cell as text that spreadsheets show instead of evaluating."""
    value = "" if cell is None else str(cell)
    if value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def reject_path(source: Path) -> Path:
    return source.with_name(source.name + ".rejects.csv")


class RejectWriter:
    """Writes ``<file>.rejects.csv`` lazily (only when there is a reject) and streams rows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._handle: IO[str] | None = None
        self._writer: Any = None
        path.unlink(missing_ok=True)  # a stale file from an earlier run would mislead

    def add(self, line: int, field: str, value: str, reason: str) -> None:
        if self._writer is None:
            self._handle = self.path.open("w", encoding="utf-8", newline="")
            self._writer = csv.writer(self._handle)
            self._writer.writerow(HEADER)
        self._writer.writerow(
            (line, formula_safe(field), formula_safe(value), formula_safe(reason))
        )
        self.count += 1

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    @property
    def written(self) -> Path | None:
        return self.path if self.count else None
