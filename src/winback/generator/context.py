"""The frame of a generated shop: validated arguments, the period, the seasonal clock, time
zone offsets, the campaigns, and the calibrated model; and the chunks of customers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date

import numpy as np
from numpy.typing import NDArray

from winback.errors import WinbackError
from winback.generator.engagement import simulate_emails, simulate_visits
from winback.generator.locales import MARKETS
from winback.generator.model import DEFAULT_END, GeneratorSettings, Period, ShopModel
from winback.generator.population import Population, calibrate_rate_scale, draw_population
from winback.generator.purchases import Orders, simulate_orders
from winback.generator.seasons import Campaigns, Warp, campaigns, utc_offsets

CHUNK = 20_000
"""Customers per chunk. Part of the output's definition: changing it changes the files."""


MAX_MEAN_ORDERS = 100
MAX_MEAN_EVENTS = 200
"""Upper bounds that keep a chunk's arrays within a few hundred MB."""


class InvalidGeneratorParameters(WinbackError):
    """A generator parameter is out of range."""


@dataclass
class Context:
    settings: GeneratorSettings
    period: Period
    warp: Warp
    offsets: NDArray[np.int64]
    campaigns: Campaigns
    chunk: int = CHUNK

    @property
    def chunks(self) -> int:
        return -(-self.settings.customers // self.chunk)


def make_context(customers: int, months: int, seed: int, end: date | None, dirty_share: float, mean_orders: float | None, model: ShopModel | None, mean_events: float | None = None) -> Context:  # fmt: skip
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
    if mean_orders is not None and not buyers < mean_orders <= MAX_MEAN_ORDERS:
        raise InvalidGeneratorParameters(
            f"mean orders per customer must be above {buyers:g} (every buyer has a first order; "
            f"{model.prospect_share:.0%} of contacts are prospects) and at most {MAX_MEAN_ORDERS}, got {mean_orders}"
        )
    if mean_events is not None and not 0.5 <= mean_events <= MAX_MEAN_EVENTS:
        raise InvalidGeneratorParameters(
            f"mean events per customer must be between 0.5 and {MAX_MEAN_EVENTS}, got {mean_events}"
        )
    period = Period.ending(end or DEFAULT_END, months)
    warp = Warp.for_period(period)
    scale = (
        1.0 if mean_orders is None else calibrate_rate_scale(seed, period, model, warp, mean_orders)
    )
    offsets = utc_offsets(period, [m.zone for m in MARKETS])
    shop_campaigns = campaigns(period, np.random.default_rng([seed, 0]))
    if mean_events is not None:
        model = calibrate_activity(customers, seed, period, warp, offsets, shop_campaigns, model, scale, mean_events)  # fmt: skip
    settings = GeneratorSettings(
        customers, months, seed, period.end, dirty_share, mean_orders, mean_events, model, scale
    )
    return Context(settings, period, warp, offsets, shop_campaigns)


PILOT = 40_000
"""At most this many pilot customers calibrate ``mean_events`` (at least 10,000)."""


def calibrate_activity(customers: int, seed: int, period: Period, warp: Warp, offsets: NDArray[np.int64], shop_campaigns: Campaigns, model: ShopModel, scale: float, target: float) -> ShopModel:  # fmt: skip
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


def population(ctx: Context, k: int) -> tuple[Population, Orders]:
    """Chunk ``k``'s customers and their orders."""
    s = ctx.settings
    lo = k * ctx.chunk
    index = np.arange(lo, min(lo + ctx.chunk, s.customers), dtype=np.int64)
    pop = draw_population(np.random.default_rng([s.seed, 1, k]), index, ctx.period, s.model, s.rate_scale, ctx.offsets)  # fmt: skip
    orders = simulate_orders(np.random.default_rng([s.seed, 2, k]), pop, ctx.period, ctx.warp, ctx.offsets, s.model)  # fmt: skip
    return pop, orders


def populations(ctx: Context) -> Iterator[tuple[int, Population, Orders]]:
    for k in range(ctx.chunks):
        yield (k, *population(ctx, k))
