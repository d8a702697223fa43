"""CSV output in the canonical import format, formatted column-wise with NumPy.

A line is built left to right (:class:`Line`): runs of fixed-width fields (ids, customer ids,
timestamps, cents) are byte blocks cut from lookup tables or computed digit by digit and laid
side by side; variable-width fields (event types, properties, amounts, basket items) come
from byte-string tables and are joined with ``np.strings.add``, which skips the NUL padding.
A chunk's lines are then written with one ``bytes.join``; no Python code runs per order or
event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, cast

import numpy as np
from numpy.typing import NDArray

from winback.generator.engagement import (
    BOUNCED,
    EVENT_TYPES,
    LANDING,
    LAST_EMAIL_TYPE,
    PAGES,
    Events,
)
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

    data: bytes | bytearray
    offsets: NDArray[np.int64]

    @property
    def lines(self) -> int:
        return len(self.offsets) - 1

    def line(self, j: int) -> bytes:
        return bytes(self.data[self.offsets[j] : self.offsets[j + 1]])


def table(values: list[bytes]) -> NDArray[np.bytes_]:
    return np.array(values or [b""], dtype=np.bytes_)


def const(m: int, value: bytes) -> Block:
    return np.broadcast_to(np.frombuffer(value, dtype=U8), (m, len(value)))


def digits(x: NDArray[np.int64], width: int, *, zero_pad: bool = False) -> Block:
    """Decimal digits of non-negative integers; without ``zero_pad`` leading zeros are NUL."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    out = ((x[:, None] // powers) % 10 + 48).astype(U8)
    if not zero_pad:
        out[(x[:, None] < powers) & (powers > 1)] = 0
    return out


def left_numbers(n: int) -> NDArray[np.bytes_]:
    """The decimal text of ``0 .. n-1``, left-aligned (NUL padding at the end)."""
    return table([b"%d" % i for i in range(n)])


def fixed_numbers(n: int, width: int) -> Block:
    """The zero-padded decimal text of ``0 .. n-1`` as a block."""
    return digits(np.arange(n, dtype=np.int64), width, zero_pad=True)


def number_text(values: NDArray[np.int64]) -> NDArray[np.bytes_]:
    """Decimal text of each value, left-aligned (values below 10**10)."""
    return np.array([b"%d" % v for v in values.tolist()] or [b""], dtype=np.bytes_)


class Line:
    """A line built left to right from fixed-width blocks (no NUL inside) and variable-width
    byte strings (NUL-padded at the end): runs of fixed blocks are laid side by side, then
    the runs and variable parts are joined with ``np.strings.add``, which skips padding."""

    def __init__(self, m: int) -> None:
        self.m = m
        self.parts: list[NDArray[np.bytes_]] = []
        self.run: list[Block] = []

    def fixed(self, *blocks: Block) -> Line:
        self.run.extend(blocks)
        return self

    def const(self, value: bytes) -> Line:
        return self.fixed(const(self.m, value))

    def var(self, values: NDArray[np.bytes_]) -> Line:
        self._flush()
        self.parts.append(values)
        return self

    def _flush(self) -> None:
        if self.run:
            block = np.ascontiguousarray(np.hstack(self.run))
            self.parts.append(block.view(f"S{block.shape[1]}").ravel())
            self.run = []

    def build(self) -> NDArray[np.bytes_]:
        self._flush()
        out = self.parts[0]
        for part in self.parts[1:]:
            out = np.strings.add(out, part)
        return out


def to_text(lines: NDArray[np.bytes_]) -> Text:
    lengths = np.strings.str_len(lines).astype(np.int64)
    return Text(b"".join(lines.tolist()), np.concatenate([[0], np.cumsum(lengths)]))


def merge(n: int, groups: list[tuple[NDArray[np.int64], NDArray[np.bytes_]]]) -> Text:
    """Lines built in groups (``rows`` of the result, their lines) put back in row order."""
    if len(groups) == 1:
        return to_text(groups[0][1])
    merged = np.empty(n, dtype=object)
    lengths = np.zeros(n, dtype=np.int64)
    for rows, lines in groups:
        merged[rows] = np.fromiter(lines.tolist(), dtype=object, count=len(rows))
        lengths[rows] = np.strings.str_len(lines)
    return Text(b"".join(merged.tolist()), np.concatenate([[0], np.cumsum(lengths)]))


class Formatter:
    """Lookup tables for one period and its campaigns."""

    MAX_EUROS = 99_999

    def __init__(self, period: Period, campaign_names: list[str]) -> None:
        self.period = period
        self.low4 = fixed_numbers(10_000, 4)
        self.high6 = fixed_numbers(1_000_000, 6)
        self.euros = left_numbers(self.MAX_EUROS + 1)
        self.cents = fixed_numbers(100, 2)
        first = period.start - timedelta(days=PAD_DAYS)
        n = period.days + 2 * PAD_DAYS + 40
        self.day_text = np.vstack([np.frombuffer(f"{first + timedelta(days=i)}T".encode(), dtype=U8) for i in range(n)])  # fmt: skip
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
        # Item heads by (qty - 1, leading comma, SKU), each ending with the quantity.
        self.item_head = table(
            [
                f'{lead}{h}{qty},""price"":'.encode()
                for qty in (1, 2)
                for lead in ("", ",")
                for h in heads
            ]
        )
        self.coupon_text = table([f"{c}\n".encode() for c in COUPONS])
        self.type_text = table([f"{t},".encode() for t in EVENT_TYPES])
        # Properties: a head from one table, then (email only) the customer number, then a tail.
        names = campaign_names or [""]
        self.n_campaigns = len(names)
        heads_email = [
            f'"{{""campaign"":""{name}"",""message_id"":""{c}.'.encode()
            for c, name in enumerate(names)
        ]
        heads_landing = [f'"{{""url"":""/landing/{name}""}}"\n'.encode() for name in names]
        heads_page = [f'"{{""url"":""{p}""}}"\n'.encode() for p in PAGES]
        heads_product = [
            f'"{{""sku"":""{s}"",""category"":""{c}""}}"\n'.encode()
            for s, c in zip(codes, cats, strict=True)
        ]
        self.prop_head = table(heads_email + heads_landing + heads_page + heads_product)
        self.prop_tail = table(
            [b"", f'@{MAIL_DOMAIN}""}}"\n'.encode(), f'@{MAIL_DOMAIN}"",""machine"":true}}"\n'.encode(),
             f'@{MAIL_DOMAIN}"",""bounce"":""hard""}}"\n'.encode(),
             f'@{MAIL_DOMAIN}"",""bounce"":""soft""}}"\n'.encode()]
        )  # fmt: skip

    def timestamp_blocks(self, epoch: NDArray[np.int64]) -> list[Block]:
        s = np.maximum(epoch - self.origin, 0)
        return [self.day_text[s // SECONDS_PER_DAY], self.clock[s % SECONDS_PER_DAY]]

    def timestamp_text(self, epoch: NDArray[np.int64]) -> NDArray[np.bytes_]:
        block = np.ascontiguousarray(np.hstack(self.timestamp_blocks(epoch)))
        return block.view(f"S{block.shape[1]}").ravel()

    def decimal(self, values: NDArray[np.float64], places: int) -> NDArray[np.bytes_]:
        """Non-negative numbers with ``places`` (2, 4 or 6) decimals, below 100,000."""
        scale = 10**places
        fixed = np.rint(np.clip(values, 0, self.MAX_EUROS) * scale).astype(np.int64)
        fraction = {2: self.cents, 4: self.low4, 6: self.high6}[places]
        line = Line(len(values)).var(self.euros[fixed // scale]).const(b".")
        return line.fixed(fraction[fixed % scale]).build()

    def serials(self, first: int, m: int, width: int) -> list[Block]:
        """Zero-padded numbers ``first .. first+m-1`` (``width`` at most 10)."""
        ids = np.arange(first, first + m, dtype=np.int64)
        return [self.high6[ids // 10_000, 10 - width :], self.low4[ids % 10_000]]

    def amount(self, line: Line, cents: NDArray[np.int64]) -> Line:
        euros = np.minimum(cents // 100, self.MAX_EUROS)
        return line.var(self.euros[euros]).const(b".").fixed(self.cents[cents % 100])

    def orders(
        self, first_id: int, customer_ids: NDArray[np.bytes_], customer: NDArray[np.int64],
        at: NDArray[np.int64], cents: NDArray[np.int64], coupon: NDArray[np.int64], baskets: Baskets,
    ) -> Text:  # fmt: skip
        m = len(at)
        k = baskets.per_order
        item_start = np.cumsum(k) - k
        within = np.arange(len(baskets.order)) - np.repeat(item_start, k)
        heads_per_lead = range(len(CATEGORIES) * SKUS_PER_CATEGORY)
        lead = (within > 0).astype(np.int64) * len(heads_per_lead)
        item = Line(len(within)).var(
            self.item_head[
                (baskets.qty - 1) * 2 * len(heads_per_lead)
                + lead
                + baskets.category * SKUS_PER_CATEGORY
                + baskets.sku
            ]
        )
        items = self.amount(item, baskets.unit_cents).const(b"}").build()
        ids = customer_ids[customer]
        # Fixed-width head shared by all lines, then one group per basket size.
        head = Line(m).const(b"O").fixed(*self.serials(first_id, m, 9)).const(b",")
        head.fixed(ids.view(U8).reshape(m, -1)).const(b",").fixed(*self.timestamp_blocks(at)).const(
            b","
        )
        self.amount(head, cents).const(f',{CURRENCY},"['.encode())
        heads = head.build()
        out = []
        for size in np.unique(k).tolist():
            rows = np.flatnonzero(k == size)
            line = Line(len(rows)).var(heads[rows])
            for j in range(size):
                line.var(items[item_start[rows] + j])
            out.append((rows, line.const(b']",').var(self.coupon_text[coupon[rows]]).build()))
        return merge(m, out)

    def events(self, first_id: int, ev: Events, customer_ids: NDArray[np.bytes_], customer_numbers: NDArray[np.bytes_]) -> Text:  # fmt: skip
        m = len(ev.at)
        c = self.n_campaigns
        email = ev.type <= LAST_EMAIL_TYPE
        landing = ev.page == LANDING
        product = ev.category >= 0
        head = np.where(
            email, ev.campaign,
            np.where(landing, c + ev.campaign,
                     np.where(product, 2 * c + len(PAGES) + ev.category * SKUS_PER_CATEGORY + ev.sku,
                              2 * c + ev.page)),
        )  # fmt: skip
        tail = np.where(email, np.where(ev.machine, 2, np.where(ev.type == BOUNCED, np.where(ev.hard_bounce, 3, 4), 1)), 0)  # fmt: skip
        # The customer number and the tail come from one per-chunk table: (customer, tail).
        tails = np.strings.add(
            np.repeat(customer_numbers, len(self.prop_tail)),
            np.tile(self.prop_tail, len(customer_numbers)),
        )
        tails[:: len(self.prop_tail)] = b""
        number_tail = cast(NDArray[np.bytes_], tails[ev.customer * len(self.prop_tail) + tail])
        line = Line(m).const(b"E").fixed(*self.serials(first_id, m, 10)).const(b",")
        line.fixed(customer_ids[ev.customer].view(U8).reshape(m, -1)).const(b",")
        line.var(self.type_text[ev.type]).fixed(*self.timestamp_blocks(ev.at)).const(b",")
        line.var(self.prop_head[head]).var(number_tail)
        return to_text(line.build())


class RowWriter(Protocol):
    """What ``csv.writer`` returns."""

    def writerow(self, row: Any, /) -> Any: ...


def header(columns: tuple[str, ...]) -> bytes:
    return (",".join(columns) + "\n").encode()
