"""Field parsers for imported files.

Every parser takes the raw cell (a string from CSV, or a native value from JSON Lines or
Parquet) and returns the typed value, ``None`` for an empty cell, or raises
:class:`FieldError` with a reason a person can act on. Parsers never crash on garbage.

Timestamps are ISO 8601. One without an offset is read in the workspace's time zone
(setting ``timezone``); a bare date is midnight in that zone. Everything is returned in UTC.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

#: Largest amount that fits ``Numeric(18, 2)``.
MAX_AMOUNT = Decimal("9999999999999999.99")

TRUE_WORDS = frozenset({"1", "true", "t", "yes", "y", "on"})
FALSE_WORDS = frozenset({"0", "false", "f", "no", "n", "off"})

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class FieldError(ValueError):
    """A cell that cannot be read as the type its column needs."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


class ItemsJson(str):
    """An order's items as JSON text written by this program's own encoder (a preset's
    grouped line items): known to be a JSON list, so the orders parser need not decode it."""

    __slots__ = ()


def text(value: Any, *, max_length: int = 255) -> str | None:
    """A text cell: stripped, at most ``max_length`` characters, valid Unicode."""
    if is_empty(value):
        return None
    if not isinstance(value, str):
        if isinstance(value, bool | int | float | Decimal):
            value = str(value)
        else:
            raise FieldError(f"expected text, found {type(value).__name__}")
    value = value.strip()
    if _has_surrogates(value):
        raise FieldError("contains bytes that are neither UTF-8 nor cp1252 (the encodings tried)")
    if len(value) > max_length:
        raise FieldError(f"longer than {max_length} characters")
    result: str | None = value
    return result


def _has_surrogates(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def timestamp(value: Any, tz: tzinfo) -> datetime | None:
    """An ISO 8601 instant, returned aware in UTC. Without an offset it is read in ``tz``."""
    if is_empty(value):
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        raw = value.strip()
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            raise FieldError(
                "not an ISO 8601 timestamp (expected e.g. 2024-03-01T14:30:00+01:00 "
                "or 2024-03-01 14:30:00)"
            ) from None
        if len(raw) < 8:  # fromisoformat accepts compact forms such as '2024'; we don't
            raise FieldError("not an ISO 8601 timestamp (too short)")
    else:
        raise FieldError(f"expected an ISO 8601 timestamp, found {type(value).__name__}")
    if not 1900 <= parsed.year <= 2200:
        raise FieldError("year outside 1900..2200")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        raise FieldError("timestamp out of range") from None


def day(value: Any) -> date | None:
    """A calendar date, ISO 8601 ``YYYY-MM-DD`` (birthdays)."""
    if is_empty(value):
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise FieldError(f"expected a date YYYY-MM-DD, found {type(value).__name__}")
    try:
        parsed = date.fromisoformat(value.strip())
    except ValueError:
        raise FieldError("not a date (expected YYYY-MM-DD)") from None
    if parsed.year < 1850:
        raise FieldError("year before 1850")
    return parsed


def decimal(value: Any) -> Decimal | None:
    """A money amount with ``.`` as decimal separator."""
    if is_empty(value):
        return None
    if isinstance(value, bool):
        raise FieldError("expected a number, found true/false")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FieldError("not a finite number")
        value = repr(value)
    if isinstance(value, int | Decimal):
        amount = Decimal(value)
    elif isinstance(value, str):
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:
            hint = " (use . as the decimal separator)" if "," in value else ""
            raise FieldError(f"not a number{hint}") from None
    else:
        raise FieldError(f"expected a number, found {type(value).__name__}")
    if not amount.is_finite():
        raise FieldError("not a finite number")
    if abs(amount) > MAX_AMOUNT:
        raise FieldError(f"larger than {MAX_AMOUNT}")
    return amount


def boolean(value: Any) -> bool | None:
    """yes/no, true/false, 1/0, y/n, t/f, on/off (any case)."""
    if is_empty(value):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise FieldError("not a yes/no value (expected yes/no, true/false or 1/0)")


def json_object(value: Any) -> dict[str, Any] | None:
    """A JSON object (event properties)."""
    if is_empty(value):
        return None
    if isinstance(value, dict):
        return value
    if not isinstance(value, str):
        raise FieldError(f"expected a JSON object, found {type(value).__name__}")
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError):
        raise FieldError('not valid JSON (expected an object such as {"key": 1})') from None
    if not isinstance(parsed, dict):
        raise FieldError(f"expected a JSON object, found a JSON {type(parsed).__name__}")
    return parsed


def items(value: Any) -> list[Any] | dict[str, Any] | None:
    """Order items: a JSON array (or object)."""
    if is_empty(value):
        return None
    if isinstance(value, list | dict):
        return value
    if not isinstance(value, str):
        raise FieldError(f"expected a JSON array, found {type(value).__name__}")
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError):
        raise FieldError('not valid JSON (expected an array such as [{"sku": "A1"}])') from None
    if not isinstance(parsed, list | dict):
        raise FieldError(f"expected a JSON array, found a JSON {type(parsed).__name__}")
    return parsed


def email(value: Any) -> str | None:
    """An email address, trimmed and lower-cased."""
    address = text(value, max_length=320)
    if address is None:
        return None
    if not _EMAIL.match(address):
        raise FieldError("not an email address")
    return address.lower()


def currency(value: Any) -> str | None:
    code = text(value, max_length=16)
    if code is None:
        return None
    code = code.upper()
    if not _CURRENCY.match(code):
        raise FieldError("not an ISO 4217 currency code (expected three letters such as EUR)")
    return code


def zone(value: Any) -> str | None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = text(value, max_length=64)
    if name is None:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise FieldError("unknown time zone (expected an IANA name such as Europe/Rome)") from None
    return name
