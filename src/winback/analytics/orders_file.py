"""A small, fast reader of order files for ``winback analyze --orders FILE`` (no workspace).

Two formats are recognised from the first line:

- the canonical orders CSV, with a header naming at least ``customer_id``, ``ordered_at`` and
  ``amount`` (the full header is ``order_id,customer_id,ordered_at,amount,currency,items,
  coupon``); ``ordered_at`` is an ISO 8601 date or instant (instants with an offset are
  converted to UTC, naive ones are taken as UTC);
- the CDNOW whitespace format of Fader and Hardie: ``customer_id [sample_id] YYYYMMDD
  number_of_cds dollar_value``, with or without a header line.

Bad rows raise :class:`BadOrdersFile` naming the file, line, field, value and what was
expected.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np

from winback.analytics.summary import Transactions
from winback.errors import UnreadableFile, WinbackError

EPOCH = date(1970, 1, 1)
REQUIRED = ("customer_id", "ordered_at", "amount")


class BadOrdersFile(WinbackError):
    """A row of an orders file cannot be read."""


@dataclass(frozen=True)
class OrdersFile:
    """Transactions read from a file, with the shop's customer ids (``customer_ids[code]``)."""

    transactions: Transactions
    customer_ids: np.ndarray
    format: str


def day_number(d: date) -> int:
    return (d - EPOCH).days


def read_orders(path: Path | str) -> OrdersFile:
    path = Path(path)
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise UnreadableFile(f"{path}: cannot read it ({exc})") from None
    if "," in first:
        return _read_csv(path)
    return _read_cdnow(path)


def _bad(path: Path, line: int, field: str, value: str, expected: str) -> BadOrdersFile:
    return BadOrdersFile(f"{path}, line {line}: field {field} = {value!r}: expected {expected}")


def _parse_day(text: str) -> int:
    if len(text) == 10:
        return day_number(date.fromisoformat(text))
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return day_number(moment.date())


def _read_csv(path: Path) -> OrdersFile:
    customers: list[str] = []
    days: list[int] = []
    amounts: list[float] = []
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip().lower() for h in next(reader)]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise BadOrdersFile(
                f"{path}, line 1: the header lacks {', '.join(missing)} (expected "
                "order_id,customer_id,ordered_at,amount,currency,items,coupon)"
            )
        ic, it, ia = (header.index(c) for c in REQUIRED)
        width = max(ic, it, ia)
        cache: dict[str, int] = {}
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) <= width:
                raise _bad(path, line, "row", ",".join(row), f"at least {width + 1} fields")
            cust, when, amount = row[ic], row[it], row[ia]
            if not cust:
                raise _bad(path, line, "customer_id", cust, "a customer id")
            day = cache.get(when)
            if day is None:
                try:
                    day = _parse_day(when.strip())
                except ValueError:
                    raise _bad(
                        path, line, "ordered_at", when, "an ISO 8601 date or date-time"
                    ) from None
                if len(cache) < 100_000:
                    cache[when] = day
            try:
                value = float(amount)
            except ValueError:
                raise _bad(path, line, "amount", amount, "a number") from None
            customers.append(cust)
            days.append(day)
            amounts.append(value)
    return _build(customers, days, amounts, "csv")


def _read_cdnow(path: Path) -> OrdersFile:
    customers: list[str] = []
    days: list[int] = []
    amounts: list[float] = []
    cache: dict[str, int] = {}
    with path.open(encoding="utf-8") as fh:
        for line, text in enumerate(fh, start=1):
            parts = text.split()
            if not parts:
                continue
            if line == 1 and not parts[0].isdigit():
                continue  # header
            if len(parts) not in (4, 5):
                raise _bad(
                    path, line, "row", text.strip(),
                    "customer_id [sample_id] YYYYMMDD number_of_cds dollar_value",
                )  # fmt: skip
            raw = parts[-3]
            day = cache.get(raw)
            if day is None:
                try:
                    day = day_number(date(int(raw[:4]), int(raw[4:6]), int(raw[6:8])))
                except ValueError:
                    raise _bad(path, line, "date", raw, "a date YYYYMMDD") from None
                cache[raw] = day
            try:
                value = float(parts[-1])
            except ValueError:
                raise _bad(path, line, "dollar_value", parts[-1], "a number") from None
            customers.append(parts[0])
            days.append(day)
            amounts.append(value)
    return _build(customers, days, amounts, "cdnow")


def _build(customers: list[str], days: list[int], amounts: list[float], fmt: str) -> OrdersFile:
    ids, codes = np.unique(np.asarray(customers, dtype=object).astype(str), return_inverse=True)
    tx = Transactions(
        customer=codes.astype(np.int64),
        day=np.asarray(days, dtype=np.int64),
        amount=np.asarray(amounts, dtype=np.float64),
    )
    return OrdersFile(tx, ids, fmt)
