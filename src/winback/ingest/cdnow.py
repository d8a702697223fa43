"""The CDNOW data set shipped with winback, loaded as contacts and orders.

Each purchase row becomes an order with a deterministic id ``cdnow-<customer>-<date>-<n>``
(``n`` counts the customer's rows on that day, so the sample and the master file give the
same ids), dated at UTC midnight, in USD, with the number of CDs as its item quantity.
Customers keep their original (master file) id, so the sample's 2,357 customers are a subset
of the master's 23,570.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from winback.data import CDNOW_MASTER, CDNOW_SAMPLE
from winback.ingest.readers import Record

COLUMNS = ["order_id", "customer_id", "ordered_at", "amount", "currency", "items"]


class CdnowReader:
    """Reads CDNOW_master.txt or CDNOW_sample.txt as canonical order records."""

    def __init__(self, sample: bool = False) -> None:
        self.path: Path = CDNOW_SAMPLE if sample else CDNOW_MASTER
        self.sample = sample
        self.size = self.path.stat().st_size
        self.columns = list(COLUMNS)
        self.description = f"CDNOW {'sample' if sample else 'master'} file"
        self._handle = self.path.open("r", encoding="ascii")
        self._pos = 0

    def bytes_read(self) -> int:
        return self._pos

    def records(self) -> Iterator[Record]:
        last: tuple[str, str] | None = None
        n = 0
        for number, line in enumerate(self._handle, start=1):
            self._pos += len(line)
            parts = line.split()
            if not parts or not parts[0].isdigit():
                continue  # header or blank line
            if self.sample:
                if len(parts) != 5:
                    yield Record(number, [line.strip()], "expected 5 fields")
                    continue
                customer, _, day, cds, dollars = parts
            else:
                if len(parts) != 4:
                    yield Record(number, [line.strip()], "expected 4 fields")
                    continue
                customer, day, cds, dollars = parts
            n = n + 1 if last == (customer, day) else 1
            last = (customer, day)
            ordered_at = f"{day[:4]}-{day[4:6]}-{day[6:8]}T00:00:00+00:00"
            items = json.dumps([{"sku": "CD", "quantity": int(cds)}])
            yield Record(
                number, [f"cdnow-{customer}-{day}-{n}", customer, ordered_at, dollars, "USD", items]
            )

    def close(self) -> None:
        self._handle.close()
