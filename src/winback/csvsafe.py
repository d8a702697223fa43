"""CSV cells safe to open in a spreadsheet (OWASP "CSV injection").

Every CSV winback writes (reject files, segment exports) passes its cells through
:func:`safe_cell`: text that a spreadsheet would run as a formula, starting with ``= + - @``,
a tab or a carriage return, is prefixed with a single quote so it is shown, not evaluated.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """The value as a CSV cell: ``None`` empty, instants in ISO 8601, formula-looking text
    quoted; numbers stay numbers."""
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def formula_safe(cell: Any) -> str:
    """The cell as text that spreadsheets show instead of evaluating (numbers included: a
    reject file reports values as they were written)."""
    value = safe_cell(cell)
    return value if isinstance(value, str) else str(safe_cell(str(value)))
