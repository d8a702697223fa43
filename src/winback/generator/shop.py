"""Generate a whole shop: customers in fixed-size chunks (bounded memory, output independent
of the machine), each chunk simulated with NumPy and appended to the CSV files."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray

from winback.errors import WinbackError
from winback.generator.contacts import contact_lines, customer_ids
from winback.generator.dirty import (
    CONTACT_KINDS,
    DIRTY_COLUMNS,
    EVENT_KINDS,
    ORDER_KINDS,
    DirtyPlan,
    plan_dirty,
)
from winback.generator.engagement import Events, simulate_emails, simulate_visits
from winback.generator.locales import MARKETS
from winback.generator.model import DEFAULT_END, GeneratorSettings, Period, ShopModel
from winback.generator.population import Population, calibrate_rate_scale, draw_population
from winback.generator.purchases import NO_TIME, Orders, draw_baskets, draw_coupons, simulate_orders
from winback.generator.seasons import Campaigns, Warp, campaigns, utc_offsets
from winback.generator.truth import TRUTH_COLUMNS, ground_truth
from winback.generator.writer import (
    CONTACT_COLUMNS,
    EVENT_COLUMNS,
    ORDER_COLUMNS,
    Formatter,
    RowWriter,
    Text,
    header,
    number_text,
)

CHUNK = 20_000
"""Customers per chunk. Part of the output's definition: changing it changes the files."""

Progress = Callable[[int, int], None]
"""Called with (customers done, customers in all) after each chunk."""


class InvalidGeneratorParameters(WinbackError):
    """A generator parameter is out of range."""


@dataclass(frozen=True)
class GeneratedShop:
    """What :func:`generate_shop` wrote. Counts of ``orders`` and ``events`` are the good
    rows; ``*_lines`` include the dirty rows (header excluded)."""

    out_dir: Path
    contacts_path: Path
    orders_path: Path
    events_path: Path
    ground_truth_path: Path
    dirty_rows_path: Path
    parameters_path: Path
    customers: int
    orders: int
    events: int
    dirty_rows: int
    contacts_lines: int
    orders_lines: int
    events_lines: int
    start: date
    end: date
    seed: int

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}


@dataclass(frozen=True)
class OrdersArrays:
    """Orders as arrays (same orders as ``orders.csv`` for the same arguments, without the
    dirty rows): customer index (0-based; customer id ``C{index+1:07d}``), time, amount."""

    customer: NDArray[np.int64]
    ordered_at: NDArray[np.datetime64]
    amount: NDArray[np.float64]


@dataclass
class _Context:
    settings: GeneratorSettings
    period: Period
    warp: Warp
    offsets: NDArray[np.int64]
    campaigns: Campaigns


def _context(customers: int, months: int, seed: int, end: date | None, dirty_share: float, mean_orders: float | None, model: ShopModel | None, mean_events: float | None = None) -> _Context:  # fmt: skip
    model = model or ShopModel()
    if customers < 1:
        raise InvalidGeneratorParameters(f"customers must be at least 1, got {customers}")
    if customers > 9_999_999:
        raise InvalidGeneratorParameters(f"customers must be at most 9,999,999, got {customers}")
    if not 1 <= months <= 240:
        raise InvalidGeneratorParameters(f"months must be between 1 and 240, got {months}")
    if not 0 <= dirty_share <= 0.5:
        raise InvalidGeneratorParameters(
            f"dirty share must be between 0 and 0.5, got {dirty_share}"
        )
    buyers = 1 - model.prospect_share
    if mean_orders is not None and not buyers < mean_orders <= 1000:
        raise InvalidGeneratorParameters(
            f"mean orders per customer must be above {buyers:g} (every buyer has a first order; "
            f"{model.prospect_share:.0%} of contacts are prospects) and at most 1000, got {mean_orders}"
        )
    if mean_events is not None and not 0.5 <= mean_events <= 1000:
        raise InvalidGeneratorParameters(
            f"mean events per customer must be between 0.5 and 1000, got {mean_events}"
        )
    period = Period.ending(end or DEFAULT_END, months)
    warp = Warp.for_period(period)
    scale = (
        1.0 if mean_orders is None else calibrate_rate_scale(seed, period, model, warp, mean_orders)
    )
    offsets = utc_offsets(period, [m.zone for m in MARKETS])
    shop_campaigns = campaigns(period, np.random.default_rng([seed, 0]))
    if mean_events is not None:
        model = _calibrate_activity(customers, seed, period, warp, offsets, shop_campaigns, model, scale, mean_events)  # fmt: skip
    settings = GeneratorSettings(
        customers, months, seed, period.end, dirty_share, mean_orders, mean_events, model, scale
    )
    return _Context(settings, period, warp, offsets, shop_campaigns)


PILOT = 40_000
"""At most this many pilot customers calibrate ``mean_events`` (at least 10,000)."""


def _calibrate_activity(customers: int, seed: int, period: Period, warp: Warp, offsets: NDArray[np.int64], shop_campaigns: Campaigns, model: ShopModel, scale: float, target: float) -> ShopModel:  # fmt: skip
    """The model whose ``activity`` gives about ``target`` events per contact, found by a
    few fixed-point steps on a pilot sample of customers (events grow about linearly)."""
    pilot = min(PILOT, max(customers, 10_000))
    index = np.arange(pilot, dtype=np.int64)
    pop = draw_population(
        np.random.default_rng([seed, 98, 1]), index, period, model, scale, offsets
    )
    orders = simulate_orders(
        np.random.default_rng([seed, 98, 2]), pop, period, warp, offsets, model
    )
    items = (np.zeros(len(orders.at), np.int64), np.zeros(len(orders.at), np.int64))
    for step in range(4):
        emails = simulate_emails(np.random.default_rng([seed, 98, 3, step]), pop, orders, shop_campaigns, period, model)  # fmt: skip
        visits = simulate_visits(np.random.default_rng([seed, 98, 4, step]), pop, orders, items, period, warp, offsets, model)  # fmt: skip
        per_customer = (len(emails.at) + len(visits.at)) / pilot
        model = replace(model, activity=model.activity * target / max(per_customer, 1e-9))
    return model


def _chunks(ctx: _Context) -> Iterator[tuple[int, Population, Orders]]:
    s = ctx.settings
    for k, lo in enumerate(range(0, s.customers, CHUNK)):
        index = np.arange(lo, min(lo + CHUNK, s.customers), dtype=np.int64)
        pop = draw_population(
            np.random.default_rng([s.seed, 1, k]),
            index,
            ctx.period,
            s.model,
            s.rate_scale,
            ctx.offsets,
        )
        orders = simulate_orders(
            np.random.default_rng([s.seed, 2, k]), pop, ctx.period, ctx.warp, ctx.offsets, s.model
        )
        yield k, pop, orders


def generate_orders_arrays(
    customers: int, months: int, seed: int, end: date | None = None, *, mean_orders: float | None = None,
    model: ShopModel | None = None,
) -> OrdersArrays:  # fmt: skip
    """The orders of :func:`generate_shop` as NumPy arrays, without writing files."""
    ctx = _context(customers, months, seed, end, 0.0, mean_orders, model)
    parts = [(pop.index[o.customer], o.at, o.cents) for _, pop, o in _chunks(ctx)]
    return OrdersArrays(
        customer=np.concatenate([p[0] for p in parts]),
        ordered_at=np.concatenate([p[1] for p in parts]).astype("datetime64[s]"),
        amount=np.concatenate([p[2] for p in parts]) / 100.0,
    )


class _Output:
    """One CSV file being written, with its line count (header = line 1)."""

    def __init__(self, fh: BinaryIO, name: str, columns: tuple[str, ...]) -> None:
        self.fh, self.name, self.lines = fh, name, 1
        fh.write(header(columns))

    def write(self, text: Text, plan: DirtyPlan, dirty: RowWriter) -> None:
        """Write one chunk's lines with the dirty ones inserted or substituted."""
        edits = sorted(
            [(pos, 0, line) for pos, line in plan.inserts]
            + [(idx, 1, line) for idx, line in plan.replacements.items()],
            key=lambda e: (e[0], e[1]),
        )
        data, offsets, prev = text.data, text.offsets, 0
        for pos, replaces, line in edits:
            self.fh.write(data[prev : offsets[pos]])
            self.fh.write(line)
            prev = int(offsets[pos + replaces])
        self.fh.write(data[prev:])
        for offset, kind, value in sorted(plan.records, key=lambda r: r[0]):
            dirty.writerow(
                [self.name, self.lines + 1 + offset, kind.name, kind.field, kind.expect, value]
            )
        self.lines += text.lines + len(plan.inserts)


def generate_shop(
    out_dir: Path,
    *,
    customers: int,
    months: int,
    seed: int,
    end: date | None = None,
    dirty_share: float = 0.01,
    mean_orders: float | None = None,
    mean_events: float | None = None,
    model: ShopModel | None = None,
    progress: Progress | None = None,
) -> GeneratedShop:
    """Write ``contacts.csv``, ``orders.csv``, ``events.csv`` (canonical import format),
    ``ground_truth.csv``, ``dirty_rows.csv`` and ``parameters.json`` into ``out_dir``.
    Same arguments, same bytes."""
    ctx = _context(customers, months, seed, end, dirty_share, mean_orders, model, mean_events)
    s, period = ctx.settings, ctx.period
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        name: out_dir / f"{name}.csv"
        for name in ("contacts", "orders", "events", "ground_truth", "dirty_rows")
    }
    fmt = Formatter(period, ctx.campaigns.names)
    n_orders = n_events = 0
    with ExitStack() as stack:
        files = {
            k: stack.enter_context(p.open("wb", buffering=1 << 20))
            for k, p in paths.items()
            if k != "dirty_rows"
        }
        contacts = _Output(files["contacts"], "contacts.csv", CONTACT_COLUMNS)
        orders_out = _Output(files["orders"], "orders.csv", ORDER_COLUMNS)
        events_out = _Output(files["events"], "events.csv", EVENT_COLUMNS)
        truth_fh = files["ground_truth"]
        truth_fh.write(header(TRUTH_COLUMNS))
        dirty_text = stack.enter_context(
            paths["dirty_rows"].open("w", newline="", encoding="utf-8")
        )
        dirty_text.write(",".join(DIRTY_COLUMNS) + "\n")
        dirty = csv.writer(dirty_text, lineterminator="\n")
        for k, pop, orders in _chunks(ctx):
            ids = customer_ids(pop.index)
            # Orders.
            rng = np.random.default_rng([s.seed, 3, k])
            baskets = draw_baskets(rng, orders.cents, pop.favourite[orders.customer])
            coupon = draw_coupons(rng, orders.at, orders.first, period, s.model.coupon_share)
            text = fmt.orders(
                n_orders + 1, ids, orders.customer, orders.at, orders.cents, coupon, baskets
            )
            rng = np.random.default_rng([s.seed, 7, k, 1])
            orders_out.write(
                text, plan_dirty(rng, text.lines, ORDER_KINDS, dirty_share, text.line), dirty
            )
            n_orders += text.lines
            # Events.
            first_items = (baskets.category[np.cumsum(baskets.per_order) - baskets.per_order],
                           baskets.sku[np.cumsum(baskets.per_order) - baskets.per_order])  # fmt: skip
            emails = simulate_emails(
                np.random.default_rng([s.seed, 4, k]), pop, orders, ctx.campaigns, period, s.model
            )
            visits = simulate_visits(np.random.default_rng([s.seed, 5, k]), pop, orders, first_items, period, ctx.warp, ctx.offsets, s.model)  # fmt: skip
            events = Events.concat([emails, visits], pop.n)
            events.unsubscribed = emails.unsubscribed
            n_events += _write_events(
                fmt, events, ids, pop, n_events + 1, events_out, dirty, s.seed, k, dirty_share
            )
            # Contacts and truth.
            lines = [x.encode() for x in contact_lines(np.random.default_rng([s.seed, 6, k]), pop, orders, events.unsubscribed, period, fmt, s.model)]  # fmt: skip
            text = Text.from_lines(lines)
            rng = np.random.default_rng([s.seed, 7, k, 0])
            contacts.write(
                text, plan_dirty(rng, text.lines, CONTACT_KINDS, dirty_share, text.line), dirty
            )
            truth_fh.write(_truth_text(pop, orders, ctx, ids, fmt))
            if progress is not None:
                progress(int(pop.index[-1]) + 1, s.customers)
    dirty_count = sum(1 for _ in paths["dirty_rows"].open(encoding="utf-8")) - 1
    params_path = out_dir / "parameters.json"
    params = s.as_dict() | {
        "start": period.start.isoformat(),
        "campaigns": len(ctx.campaigns.names),
        "chunk": CHUNK,
    }
    params_path.write_text(json.dumps(params, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return GeneratedShop(
        out_dir=out_dir,
        contacts_path=paths["contacts"],
        orders_path=paths["orders"],
        events_path=paths["events"],
        ground_truth_path=paths["ground_truth"],
        dirty_rows_path=paths["dirty_rows"],
        parameters_path=params_path,
        customers=s.customers,
        orders=n_orders,
        events=n_events,
        dirty_rows=dirty_count,
        contacts_lines=contacts.lines - 1,
        orders_lines=orders_out.lines - 1,
        events_lines=events_out.lines - 1,
        start=period.start,
        end=period.end,
        seed=s.seed,
    )


def _write_events(fmt: Formatter, ev: Events, ids: NDArray[np.bytes_], pop: Population, first_id: int,
                  out: _Output, dirty: RowWriter, seed: int, k: int, share: float) -> int:  # fmt: skip
    numbers = number_text(pop.index + 1)
    text = fmt.events(first_id, ev, ids, numbers)
    plan = plan_dirty(
        np.random.default_rng([seed, 7, k, 2]), text.lines, EVENT_KINDS, share, text.line
    )
    out.write(text, plan, dirty)
    return text.lines


def _truth_text(
    pop: Population, orders: Orders, ctx: _Context, ids: NDArray[np.bytes_], fmt: Formatter
) -> bytes:
    t = ground_truth(pop, orders, ctx.period, ctx.warp, ctx.settings.model)
    dropped = np.where(t.dropped_out_at == NO_TIME, 0, t.dropped_out_at)
    dropped_text = fmt.timestamps(dropped)
    rows = zip(ids.astype(str).tolist(), t.purchase_rate_per_year.tolist(), t.dropout_p.tolist(),
               t.alive_at_end.tolist(), t.p_no_contact.tolist(), t.p_if_contacted.tolist(),
               t.mean_spend.tolist(), (t.dropped_out_at != NO_TIME).tolist(), dropped_text, strict=True)  # fmt: skip
    out = []
    for cid, rate, p, alive, p0, p1, spend, has_drop, drop in rows:
        out.append(
            f"{cid},{rate:.4f},{'' if math.isnan(p) else f'{p:.4f}'},{'true' if alive else 'false'},"
            f"{p0:.6g},{p1:.6g},{spend:.2f},{drop if has_drop else ''}\n"
        )
    return "".join(out).encode()
