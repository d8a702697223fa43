"""Presets: a platform's export read as our canonical columns.

``winback import contacts|orders|events FILE --preset NAME`` reads the file as the platform
exports it. A preset is a translation of the file's records into canonical records (same
line numbers, so rejects still name the file's line): it picks the platform's columns,
converts its values (statuses, consent words, time formats, leading apostrophes), groups
rows that belong together (Shopify's line-item rows) and says how rows find their contact
(:mod:`winback.ingest.matching`). The canonical import then validates and writes the rows
exactly as it does for any file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from winback.errors import InvalidMapping, MissingColumns
from winback.ingest.readers import Reader, Record

#: ``(columns of the file, records) -> (canonical columns, canonical records)``.
Translate = Callable[["Columns", Iterator[Record]], tuple[list[str], Iterator[Record]]]


class Columns:
    """The file's header, looked up by any of a column's known names (case-insensitive)."""

    def __init__(self, names: list[str], path: Path, preset: str) -> None:
        self.names = names
        self.path = path
        self.preset = preset
        self.folded: dict[str, int] = {}
        for i, name in enumerate(names):
            self.folded.setdefault(name.strip().lower(), i)

    def find(self, *names: str) -> int | None:
        for name in names:
            i = self.folded.get(name.lower())
            if i is not None:
                return i
        return None

    def need(self, *names: str) -> int:
        i = self.find(*names)
        if i is None:
            raise MissingColumns(
                f"{self.path}: not a {self.preset} export as expected: no {names[0]!r} column "
                f"(found: {', '.join(self.names)})"
            )
        return i


def cell(values: list[Any], i: int | None) -> str:
    """The text of a cell (empty when the column is absent or the row is short)."""
    if i is None:
        return ""
    try:
        value = values[i]
    except IndexError:
        return ""
    if type(value) is str:
        return value.strip()
    return "" if value is None else str(value).strip()


class Translated:
    """A reader over another reader's records, translated by a preset."""

    def __init__(self, reader: Reader, preset: str, kind: str, translate: Translate, match: str):
        self.reader = reader
        self.path = reader.path
        self.size = reader.size
        self.match = match
        self.description = f"{reader.description}, {preset} {kind} export"
        header = Columns(reader.columns, reader.path, preset)
        self.columns, self._records = translate(header, reader.records())

    def records(self) -> Iterator[Record]:
        return self._records

    def bytes_read(self) -> int:
        return self.reader.bytes_read()

    def close(self) -> None:
        self.reader.close()


def _table() -> dict[tuple[str, str], tuple[Translate, str]]:
    from winback.ingest.presets import klaviyo, mailchimp, shopify, woocommerce

    return {
        ("shopify", "contacts"): (shopify.customers, "email"),
        ("shopify", "orders"): (shopify.orders, "email"),
        ("woocommerce", "contacts"): (woocommerce.customers, "id"),
        ("woocommerce", "orders"): (woocommerce.orders, "id"),
        ("mailchimp", "contacts"): (mailchimp.audience, "email"),
        ("mailchimp", "events"): (mailchimp.activity, "email"),
        ("klaviyo", "contacts"): (klaviyo.profiles, "email"),
        ("klaviyo", "events"): (klaviyo.events, "email"),
    }


PRESETS = ("shopify", "woocommerce", "mailchimp", "klaviyo")


def translate(preset: str, kind: str, reader: Reader) -> Translated:
    """``reader`` read as ``preset``'s export of ``kind``."""
    table = _table()
    if preset not in PRESETS:
        raise InvalidMapping(f"--preset {preset}: unknown (expected one of: {', '.join(PRESETS)})")
    found = table.get((preset, kind))
    if found is None:
        kinds = [k for p, k in table if p == preset]
        raise InvalidMapping(
            f"--preset {preset}: no {kind} export (this preset reads: {', '.join(kinds)})"
        )
    translate_fn, match = found
    return Translated(reader, preset, kind, translate_fn, match)


__all__ = ["PRESETS", "Columns", "Translated", "cell", "translate"]
