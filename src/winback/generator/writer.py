"""CSV output in the canonical import format, formatted column-wise with NumPy.

A chunk of rows is laid out as a byte matrix: each field is a fixed-width block of bytes
(a lookup in a small table of timestamps, SKUs or campaign names, or digits computed with
integer arithmetic), padded with NUL bytes; removing every NUL byte in one pass leaves the
CSV text. Fields never contain NUL, so this is exact, and no Python code runs per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from winback.generator.engagement import EVENT_TYPES, LANDING, PAGES, Events
from winback.generator.model import SECONDS_PER_DAY, Period
from winback.generator.population import CATEGORIES
from winback.generator.purchases import COUPONS, SKUS_PER_CATEGORY, Baskets

U8 = np.uint8
Block = NDArray[np.uint8]

CONTACT_COLUMNS = (
    "customer_id", "email", "phone", "first_name", "last_name", "birthday", "timezone", "locale",
    "email_consent", "sms_consent", "push_consent", "created_at", "loyalty_tier", "acquisition_channel",
)  # fmt: skip
ORDER_COLUMNS = ("order_id", "customer_id", "ordered_at", "amount", "currency", "items", "coupon")
EVENT_COLUMNS = ("event_id", "customer_id", "type", "occurred_at", "properties")
CURRENCY = "EUR"
PAD_DAYS = 2
MAIL_DOMAIN = "mail.shop.example"


@dataclass(frozen=True)
class Text:
    """Formatted lines: ``data[offsets[j]:offsets[j + 1]]`` is line ``j`` (with its newline)."""

    data: bytes
    offsets: NDArray[np.int64]

    @property
    def lines(self) -> int:
        return len(self.offsets) - 1

    def line(self, j: int) -> bytes:
        return self.data[self.offsets[j] : self.offsets[j + 1]]

    @classmethod
    def from_lines(cls, lines: list[bytes]) -> Text:
        lengths = np.fromiter((len(x) for x in lines), dtype=np.int64, count=len(lines))
        return cls(b"".join(lines), np.concatenate([[0], np.cumsum(lengths)]))


def table(values: list[bytes]) -> NDArray[np.bytes_]:
    return np.array(values or [b""], dtype=np.bytes_)


def pick(tab: NDArray[np.bytes_], idx: NDArray[np.int64]) -> Block:
    """Rows of a byte-string table as a NUL-padded block."""
    out = np.ascontiguousarray(tab[idx])
    return out.view(U8).reshape(len(idx), tab.dtype.itemsize)


def const(m: int, value: bytes) -> Block:
    return np.broadcast_to(np.frombuffer(value, dtype=U8), (m, len(value)))


def digits(x: NDArray[np.int64], width: int, *, zero_pad: bool = False) -> Block:
    """Decimal digits of non-negative integers; without ``zero_pad`` leading zeros are NUL."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    out = ((x[:, None] // powers) % 10 + 48).astype(U8)
    if not zero_pad:
        out[(x[:, None] < powers) & (powers > 1)] = 0
    return out


def compact(blocks: list[Block]) -> Text:
    """Concatenate the blocks column-wise and drop the NUL padding."""
    matrix = np.hstack(blocks) if blocks else np.zeros((0, 0), dtype=U8)
    keep = matrix != 0
    lengths = keep.sum(axis=1, dtype=np.int64)
    return Text(matrix[keep].tobytes(), np.concatenate([[0], np.cumsum(lengths)]))


def number_table(n: int, width: int, *, zero_pad: bool = False) -> NDArray[np.bytes_]:
    """The decimal text of ``0 .. n-1`` as a byte-string table."""
    return (
        np.ascontiguousarray(digits(np.arange(n, dtype=np.int64), width, zero_pad=zero_pad))
        .view(f"S{width}")
        .ravel()
    )


def number_text(values: NDArray[np.int64]) -> NDArray[np.bytes_]:
    """Decimal text of each value (up to 10 digits)."""
    return np.ascontiguousarray(digits(values, 10)).view("S10").ravel()


class Formatter:
    """Lookup tables for one period and its campaigns."""

    MAX_EUROS = 999_999

    def __init__(self, period: Period, campaign_names: list[str]) -> None:
        self.period = period
        self.low4 = number_table(10_000, 4, zero_pad=True)
        self.high6 = number_table(1_000_000, 6, zero_pad=True)
        self.euros = number_table(self.MAX_EUROS + 1, 6)
        self.cents = number_table(100, 2, zero_pad=True)
        first = period.start - timedelta(days=PAD_DAYS)
        n = period.days + 2 * PAD_DAYS + 40
        self.day_text = table([f"{first + timedelta(days=i)}T".encode() for i in range(n)])
        clock = np.arange(SECONDS_PER_DAY, dtype=np.int64)
        self.clock = np.hstack(
            [digits(clock // 3600, 2, zero_pad=True), const(SECONDS_PER_DAY, b":"),
             digits(clock // 60 % 60, 2, zero_pad=True), const(SECONDS_PER_DAY, b":"),
             digits(clock % 60, 2, zero_pad=True), const(SECONDS_PER_DAY, b"+00:00")]
        )  # fmt: skip
        self.origin = period.start_epoch - PAD_DAYS * SECONDS_PER_DAY
        codes = [f"{c[:3].upper()}-{s:04d}" for c in CATEGORIES for s in range(SKUS_PER_CATEGORY)]
        cats = [c for c in CATEGORIES for _ in range(SKUS_PER_CATEGORY)]
        heads = [f'{{""sku"":""{s}"",""category"":""{c}"",""qty"":' for s, c in zip(codes, cats, strict=True)]  # fmt: skip
        self.item_head = table([h.encode() for h in heads] + [b"," + h.encode() for h in heads])
        self.qty_text = table([b"", b'1,""price"":', b'2,""price"":'])
        self.coupon_text = table([c.encode() for c in COUPONS])
        self.type_text = table([f"{t},".encode() for t in EVENT_TYPES])
        # Properties: a head from one table, then (email only) the customer number, then a tail.
        names = campaign_names or [""]
        self.n_campaigns = len(names)
        heads_email = [
            f'"{{""campaign"":""{name}"",""message_id"":""{c}.'.encode()
            for c, name in enumerate(names)
        ]
        heads_landing = [
            f'"{{""url"":""/landing/{name}"",""utm_campaign"":""{name}""}}"'.encode()
            for name in names
        ]
        heads_page = [f'"{{""url"":""{p}""}}"'.encode() for p in PAGES]
        heads_product = [
            f'"{{""sku"":""{s}"",""category"":""{c}""}}"'.encode()
            for s, c in zip(codes, cats, strict=True)
        ]
        self.prop_head = table(heads_email + heads_landing + heads_page + heads_product)
        self.prop_tail = table(
            [b"", f'@{MAIL_DOMAIN}""}}"'.encode(), f'@{MAIL_DOMAIN}"",""machine"":true}}"'.encode(),
             f'@{MAIL_DOMAIN}"",""bounce"":""hard""}}"'.encode(),
             f'@{MAIL_DOMAIN}"",""bounce"":""soft""}}"'.encode()]
        )  # fmt: skip

    def timestamp_blocks(self, epoch: NDArray[np.int64]) -> list[Block]:
        s = np.maximum(epoch - self.origin, 0)
        return [pick(self.day_text, s // SECONDS_PER_DAY), self.clock[s % SECONDS_PER_DAY]]

    def timestamps(self, epoch: NDArray[np.int64]) -> list[str]:
        text = compact([*self.timestamp_blocks(epoch), const(len(epoch), b"\n")])
        return text.data.decode().split("\n")[:-1]

    def amount_blocks(self, cents: NDArray[np.int64]) -> list[Block]:
        euros = np.minimum(cents // 100, self.MAX_EUROS)
        return [pick(self.euros, euros), const(len(cents), b"."), pick(self.cents, cents % 100)]

    def serials(self, first: int, m: int, width: int) -> list[Block]:
        """Zero-padded numbers ``first .. first+m-1`` (``width`` at most 10)."""
        ids = np.arange(first, first + m, dtype=np.int64)
        high = pick(self.high6, ids // 10_000)[:, 10 - width :]
        return [high, pick(self.low4, ids % 10_000)]

    def orders(
        self, first_id: int, customer_ids: NDArray[np.bytes_], customer: NDArray[np.int64],
        at: NDArray[np.int64], cents: NDArray[np.int64], coupon: NDArray[np.int64], baskets: Baskets,
    ) -> Text:  # fmt: skip
        m = len(at)
        k = baskets.per_order
        item_start = np.cumsum(k) - k
        within = np.arange(len(baskets.order)) - np.repeat(item_start, k)
        lead = (within > 0).astype(np.int64) * (len(CATEGORIES) * SKUS_PER_CATEGORY)
        item = np.hstack(
            [pick(self.item_head, lead + baskets.category * SKUS_PER_CATEGORY + baskets.sku),
             pick(self.qty_text, baskets.qty), *self.amount_blocks(baskets.unit_cents),
             const(len(within), b"}")]
        )  # fmt: skip
        kmax = int(k.max()) if m else 1
        items = np.zeros((m, kmax, item.shape[1]), dtype=U8)
        items[baskets.order, within] = item
        return compact(
            [const(m, b"O"), *self.serials(first_id, m, 9), const(m, b","), pick(customer_ids, customer),
             const(m, b","), *self.timestamp_blocks(at), const(m, b","), *self.amount_blocks(cents),
             const(m, f',{CURRENCY},"['.encode()), items.reshape(m, -1), const(m, b']",'),
             pick(self.coupon_text, coupon), const(m, b"\n")]
        )  # fmt: skip

    def events(self, first_id: int, ev: Events, customer_ids: NDArray[np.bytes_], customer_numbers: NDArray[np.bytes_]) -> Text:  # fmt: skip
        m = len(ev.at)
        c = self.n_campaigns
        email = ev.type <= 5
        landing = ev.page == LANDING
        product = ev.category >= 0
        head = np.where(
            email, ev.campaign,
            np.where(landing, c + ev.campaign,
                     np.where(product, 2 * c + len(PAGES) + ev.category * SKUS_PER_CATEGORY + ev.sku,
                              2 * c + ev.page)),
        )  # fmt: skip
        tail = np.where(email, np.where(ev.machine, 2, np.where(ev.type == 4, np.where(ev.hard_bounce, 3, 4), 1)), 0)  # fmt: skip
        number = pick(customer_numbers, ev.customer)
        number[~email] = 0
        return compact(
            [const(m, b"E"), *self.serials(first_id, m, 10), const(m, b","), pick(customer_ids, ev.customer),
             const(m, b","), pick(self.type_text, ev.type), *self.timestamp_blocks(ev.at), const(m, b","),
             pick(self.prop_head, head), number, pick(self.prop_tail, tail), const(m, b"\n")]
        )  # fmt: skip


class RowWriter(Protocol):
    """What ``csv.writer`` returns."""

    def writerow(self, row: Any, /) -> Any: ...


def header(columns: tuple[str, ...]) -> bytes:
    return (",".join(columns) + "\n").encode()
