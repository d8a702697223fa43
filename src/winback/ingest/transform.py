"""Mapping beyond headers: values rewritten, rows filtered, dates and decimals read in the
file's own format, before the canonical parser sees them.

:class:`Options` holds what the user said (``--map-value``, ``--where``,
``--date-format``, ``--decimal-comma``, ``--delimiter``, ``--timezone``);
:class:`Transformed` applies the value rewrites to a reader's
records. Fields are named canonically and found in the file as the import finds them (a
``--map`` entry, else the header, case-insensitively). Filtered rows are counted, not
imported, not rejected.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from winback.errors import InvalidMapping
from winback.ingest.readers import Reader, Record

#: Canonical fields holding a time or a date (``--date-format`` applies to these).
TIME_FIELDS = ("ordered_at", "occurred_at", "created_at", "birthday")
#: Canonical fields holding an amount (decimal commas apply to these).
AMOUNT_FIELDS = ("amount", "refunded")
#: ``31,00``, ``1.234,56``, ``-0,5``: a decimal comma (one or two decimals, optional dots
#: between groups of three digits), never a thousands comma such as ``1,234``.
_DECIMAL_COMMA = re.compile(r"^-?\d{1,3}(?:\.\d{3})*,\d{1,2}$|^-?\d+,\d{1,2}$")
_WHERE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_ ]*?)\s*(!=|=)\s*(.*)$")


@dataclass
class Condition:
    field: str
    equal: bool
    values: frozenset[str]  # compared case-insensitively; ``a|b`` means either

    def holds(self, value: str) -> bool:
        return (value.strip().lower() in self.values) == self.equal


@dataclass
class Options:
    """How to read a file's values (all optional)."""

    values: dict[str, dict[str, str]] = field(default_factory=dict)  # field -> from -> to
    where: list[Condition] = field(default_factory=list)
    date_format: str | None = None
    decimal_comma: bool = False
    delimiter: str | None = None  # CSV delimiter (default: sniffed from the header line)
    timezone: str | None = None  # of times without an offset (default: the setting)

    @property
    def rewrites(self) -> bool:
        """Whether records need rewriting (delimiter and time zone act elsewhere)."""
        return bool(self.values or self.where or self.date_format or self.decimal_comma)


def parse_value_map(pairs: list[str]) -> dict[str, dict[str, str]]:
    """``["type:open=email_opened", ...]`` as ``{"type": {"open": "email_opened"}}``."""
    found: dict[str, dict[str, str]] = {}
    for pair in pairs:
        name, sep, rest = pair.partition(":")
        before, eq, after = rest.partition("=")
        if not sep or not eq or not name.strip() or not before.strip():
            raise InvalidMapping(
                f"--map-value {pair!r}: expected field:from=to, e.g. --map-value type:open=email_opened"
            )
        found.setdefault(name.strip(), {})[before.strip().lower()] = after.strip()
    return found


def parse_where(texts: list[str]) -> list[Condition]:
    """``["status=paid|completed", "country!=US"]`` as conditions (all must hold)."""
    found = []
    for text in texts:
        m = _WHERE.match(text)
        if m is None:
            raise InvalidMapping(
                f"--where {text!r}: expected field=value or field!=value (values separated by |)"
            )
        values = frozenset(v.strip().lower() for v in m.group(3).split("|"))
        found.append(Condition(m.group(1).strip(), m.group(2) == "=", values))
    return found


def decimal_text(text: str) -> str:
    """``31,00`` -> ``31.00``, ``1.234,56`` -> ``1234.56``; anything else unchanged."""
    stripped = text.strip()
    if "," in stripped and _DECIMAL_COMMA.match(stripped):
        return stripped.replace(".", "").replace(",", ".")
    return text


class Transformed:
    """A reader whose records go through :class:`Options` (see the module docstring)."""

    def __init__(
        self,
        reader: Reader,
        options: Options,
        mapping: Mapping[str, str],
        kind_fields: tuple[str, ...],
    ) -> None:
        self.reader = reader
        self.path: Path = reader.path
        self.size = reader.size
        self.columns = reader.columns
        self.description = reader.description
        self.options = options
        self.filtered = 0
        folded = {c.strip().lower(): i for i, c in reversed(list(enumerate(self.columns)))}

        def where_is(name: str, flag: str) -> int:
            header = mapping.get(name, name)
            i = folded.get(header.strip().lower())
            if i is None:
                raise InvalidMapping(
                    f"{flag} {name}: {reader.path.name} has no column {header!r} "
                    f"(its columns: {', '.join(self.columns)})"
                )
            return i

        self.value_maps = [
            (where_is(name, "--map-value"), table) for name, table in options.values.items()
        ]
        self.conditions = [(where_is(c.field, "--where"), c) for c in options.where]
        present = [
            (name, i)
            for name in kind_fields
            if (i := folded.get(mapping.get(name, name).strip().lower())) is not None
        ]
        self.dates = (
            [(name, i) for name, i in present if name in TIME_FIELDS] if options.date_format else []
        )
        self.amounts = [i for name, i in present if name in AMOUNT_FIELDS]

    def records(self) -> Iterator[Record]:
        for record in self.reader.records():
            if record.problem is not None:
                yield record
                continue
            v = record.values
            if not all(
                _text(v, i) is not None and c.holds(_text(v, i) or "") for i, c in self.conditions
            ):
                self.filtered += 1
                continue
            values = list(v)
            for i, table in self.value_maps:
                text = _text(values, i)
                if text is not None and text.strip().lower() in table:
                    values[i] = table[text.strip().lower()]
            problem = self._dates(values)
            if problem is not None:
                yield Record(record.line, [], problem)
                continue
            for i in self.amounts:
                text = _text(values, i)
                if text and (self.options.decimal_comma or "," in text):
                    values[i] = decimal_text(text)
            yield Record(record.line, values)

    def _dates(self, values: list[Any]) -> str | None:
        fmt = self.options.date_format
        assert fmt is not None or not self.dates
        for name, i in self.dates:
            text = _text(values, i)
            if not text or not text.strip():
                continue
            try:
                values[i] = datetime.strptime(text.strip(), fmt or "").isoformat()
            except ValueError:
                return f"{name} {text!r} does not match --date-format {fmt}"
        return None

    def bytes_read(self) -> int:
        return self.reader.bytes_read()

    def close(self) -> None:
        self.reader.close()


def _text(values: list[Any], i: int) -> str | None:
    if i >= len(values) or values[i] is None:
        return None
    return str(values[i])
