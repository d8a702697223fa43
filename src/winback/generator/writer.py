"""CSV output in the canonical import format, formatted column-wise with NumPy byte-string
operations (lookup tables for timestamps, SKUs and campaign names) rather than row by row.

A chunk is formatted into *pieces* (byte strings) plus the index of the first piece of each
line; most files have one piece per line, orders have a head, one piece per basket item and
a tail. Dirty rows are whole lines inserted before a given line (see ``dirty``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, BinaryIO, Protocol, cast

import numpy as np
from numpy.typing import NDArray

from winback.generator.engagement import EVENT_TYPES, LANDING, PAGES
from winback.generator.model import SECONDS_PER_DAY, Period
from winback.generator.population import CATEGORIES
from winback.generator.purchases import COUPONS, SKUS_PER_CATEGORY, Baskets

Bytes = NDArray[np.bytes_]

CONTACT_COLUMNS = (
    "customer_id", "email", "phone", "first_name", "last_name", "birthday", "timezone", "locale",
    "email_consent", "sms_consent", "push_consent", "created_at", "loyalty_tier", "acquisition_channel",
)  # fmt: skip
ORDER_COLUMNS = ("order_id", "customer_id", "ordered_at", "amount", "currency", "items", "coupon")
EVENT_COLUMNS = ("event_id", "customer_id", "type", "occurred_at", "properties")
CURRENCY = "EUR"
PAD_DAYS = 2


def cat(*parts: Bytes | bytes) -> Bytes:
    """Element-wise concatenation of byte-string arrays and constants."""
    out: Bytes = np.asarray(parts[0], dtype=np.bytes_) if isinstance(parts[0], bytes) else parts[0]
    for part in parts[1:]:
        out = np.strings.add(out, part)
    return out


def numbers(values: NDArray[np.int64]) -> Bytes:
    return values.astype(np.bytes_)


def sku_codes() -> list[str]:
    """``APP-0012`` style codes, index ``category * SKUS_PER_CATEGORY + sku``."""
    return [f"{c[:3].upper()}-{s:04d}" for c in CATEGORIES for s in range(SKUS_PER_CATEGORY)]


class Formatter:
    """Lookup tables for one period."""

    def __init__(self, period: Period, campaign_names: list[str]) -> None:
        self.period = period
        first = period.start - timedelta(days=PAD_DAYS)
        n = period.days + 2 * PAD_DAYS + 40
        days = np.arange(
            np.datetime64(first.isoformat(), "D"),
            np.datetime64((first + timedelta(days=n)).isoformat(), "D"),
        )
        self.day_text = cat(cast(Bytes, np.datetime_as_string(days).astype(np.bytes_)), b"T")
        seconds = np.arange(SECONDS_PER_DAY).astype("datetime64[s]")
        clock = np.strings.slice(np.datetime_as_string(seconds, unit="s").astype(np.bytes_), 11, 19)
        self.clock_text = cat(cast(Bytes, clock), b"+00:00")
        self.origin = period.start_epoch - PAD_DAYS * SECONDS_PER_DAY
        self.cents_text = np.array([b"%02d" % i for i in range(100)])
        codes = sku_codes()
        cats = [c for c in CATEGORIES for _ in range(SKUS_PER_CATEGORY)]
        self.item_head = np.array(
            [
                f'{{""sku"":""{s}"",""category"":""{c}"",""qty"":'.encode()
                for s, c in zip(codes, cats, strict=True)
            ]
        )
        self.product_props = np.array(
            [
                f'"{{""sku"":""{s}"",""category"":""{c}""}}"'.encode()
                for s, c in zip(codes, cats, strict=True)
            ]
        )
        self.campaign_text = np.array([n.encode() for n in campaign_names] or [b""])
        self.type_text = np.array([t.encode() for t in EVENT_TYPES])
        self.page_props = np.array([f'"{{""url"":""{p}""}}"'.encode() for p in PAGES])
        self.coupon_text = np.array([c.encode() for c in COUPONS])

    def timestamps(self, epoch: NDArray[np.int64]) -> Bytes:
        s = np.maximum(epoch - self.origin, 0)
        return cat(self.day_text[s // SECONDS_PER_DAY], self.clock_text[s % SECONDS_PER_DAY])

    def amounts(self, cents: NDArray[np.int64]) -> Bytes:
        return cat(numbers(cents // 100), b".", self.cents_text[cents % 100])

    def orders(
        self, first_id: int, customer_ids: Bytes, at: NDArray[np.int64], cents: NDArray[np.int64],
        coupon: NDArray[np.int64], baskets: Baskets,
    ) -> tuple[Bytes, NDArray[np.int64]]:  # fmt: skip
        n = len(at)
        ids = np.strings.zfill(numbers(np.arange(first_id, first_id + n, dtype=np.int64)), 9)
        head = cat(b"O", ids, b",", customer_ids, b",", self.timestamps(at), b",", self.amounts(cents),
                   f',{CURRENCY},"['.encode())  # fmt: skip
        k = baskets.per_order
        item_start = np.cumsum(k) - k
        leading = np.ones(len(baskets.order), dtype=bool)
        leading[item_start] = False
        qty_text = np.array([b"", b'1,""price"":', b'2,""price"":'])
        item = cat(self.item_head[baskets.category * SKUS_PER_CATEGORY + baskets.sku],
                   qty_text[baskets.qty], self.amounts(baskets.unit_cents), b"}")  # fmt: skip
        item = np.where(leading, cat(b",", item), item)
        tail = cat(b']",', self.coupon_text[coupon], b"\n")
        line_start = np.arange(n, dtype=np.int64) * 2 + item_start
        width = max(head.dtype.itemsize, item.dtype.itemsize + 1, tail.dtype.itemsize)
        pieces = np.empty(2 * n + len(item), dtype=f"S{width}")
        pieces[line_start] = head
        pieces[line_start + k + 1] = tail
        pieces[np.repeat(line_start + 1, k) + np.arange(len(item)) - np.repeat(item_start, k)] = (
            item
        )
        return pieces, line_start

    def events(
        self, first_id: int, customer_ids: Bytes, type_: NDArray[np.int64], at: NDArray[np.int64],
        campaign: NDArray[np.int64], machine: NDArray[np.bool_], hard: NDArray[np.bool_],
        page: NDArray[np.int64], category: NDArray[np.int64], sku: NDArray[np.int64],
        customer_numbers: Bytes,
    ) -> Bytes:  # fmt: skip
        m = len(at)
        ids = np.strings.zfill(numbers(np.arange(first_id, first_id + m, dtype=np.int64)), 10)
        props = np.zeros(m, dtype="S160")
        email = type_ <= 5
        if email.any():
            c = campaign[email]
            extra = np.full(int(email.sum()), b'}"', dtype="S40")
            extra[machine[email]] = b',""machine"":true}"'
            bounce = type_[email] == 4
            extra[bounce] = np.where(
                hard[email][bounce], b',""bounce"":""hard""}"', b',""bounce"":""soft""}"'
            )
            props[email] = cat(b'"{""campaign"":""', self.campaign_text[c], b'"",""message_id"":""',
                               numbers(c), b".", customer_numbers[email], b'@mail.shop.example""', extra)  # fmt: skip
        landing = page == LANDING
        plain = (page >= 0) & ~landing
        props[plain] = self.page_props[page[plain]]
        if landing.any():
            props[landing] = cat(b'"{""url"":""/landing/', self.campaign_text[campaign[landing]],
                                 b'"",""utm_campaign"":""', self.campaign_text[campaign[landing]], b'""}"')  # fmt: skip
        product = category >= 0
        props[product] = self.product_props[category[product] * SKUS_PER_CATEGORY + sku[product]]
        return cat(b"E", ids, b",", customer_ids, b",", self.type_text[type_], b",", self.timestamps(at),
                   b",", props, b"\n")  # fmt: skip


@dataclass
class LineCounter:
    """Lines written so far to one file (the header is line 1)."""

    lines: int = 1


class RowWriter(Protocol):
    """What ``csv.writer`` returns."""

    def writerow(self, row: Any, /) -> Any: ...


def write_pieces(fh: BinaryIO, pieces: Bytes) -> None:
    fh.write(b"".join(pieces.tolist()))


def csv_field(value: str) -> str:
    if any(ch in value for ch in ',"\n\r'):
        return '"' + value.replace('"', '""') + '"'
    return value


def header(columns: tuple[str, ...]) -> bytes:
    return (",".join(columns) + "\n").encode()
