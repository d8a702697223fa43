"""Purchases: the BG/NBD process, spend per order (Gamma-Gamma), basket contents and coupons,
for a whole chunk of customers at once (no per-order Python loop).

For each buyer: the first order is at acquisition. In warped time (see ``seasons``) repeat
purchases arrive as a Poisson process of the customer's rate; the customer drops out right
after the ``J``-th repeat purchase, ``J ~ Geometric(p)``. With ``K ~ Poisson(rate * window)``
arrivals in the window, the customer makes ``m = min(J, K)`` repeat purchases, at the first
``m`` order statistics of ``K`` uniforms, drawn directly as normalised partial sums of
exponentials: ``U(j) = (E1 + .. + Ej) / (E1 + .. + Em + G)`` with ``G ~ Gamma(K + 1 - m)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from numpy.typing import NDArray

from winback.generator.model import Period, ShopModel
from winback.generator.population import CATEGORIES, CATEGORY_WEIGHTS, Population, seconds_to_days
from winback.generator.seasons import Warp, black_friday, local_to_epoch, time_of_day

SKUS_PER_CATEGORY = 240
NO_TIME = np.iinfo(np.int64).max
MAX_CENTS = 9_999_999
"""Order amounts are capped at 99,999.99."""


@dataclass
class Orders:
    """Orders of a chunk, sorted by time; per-customer summaries indexed like the chunk."""

    customer: NDArray[np.int64]  # position in the chunk
    at: NDArray[np.int64]  # epoch seconds
    cents: NDArray[np.int64]
    first: NDArray[np.bool_]  # the customer's first order
    count: NDArray[np.int64]  # per customer
    revenue_cents: NDArray[np.int64]  # per customer
    last_at: NDArray[np.int64]  # per customer; NO_TIME when none
    dropped_out_at: NDArray[np.int64]  # per customer; NO_TIME while alive

    @property
    def alive(self) -> NDArray[np.bool_]:
        result: NDArray[np.bool_] = self.dropped_out_at == NO_TIME
        return result


def simulate_orders(
    rng: np.random.Generator,
    pop: Population,
    period: Period,
    warp: Warp,
    offsets: NDArray[np.int64],
    model: ShopModel,
) -> Orders:
    n = pop.n
    buyers = np.flatnonzero(pop.buyer)
    w0 = warp.forward(seconds_to_days(pop.acquired_at[buyers], period))
    window = np.maximum(warp.forward(np.array([float(period.days)]))[0] - w0, 0.0)
    rate = pop.rate[buyers]
    arrivals = rng.poisson(rate * window)
    limit = rng.geometric(pop.dropout[buyers])
    repeats = np.minimum(arrivals, limit)
    died = limit <= arrivals

    total = int(repeats.sum())
    owner = np.repeat(np.arange(len(buyers)), repeats)
    gaps = rng.standard_exponential(total)
    run = np.cumsum(gaps)
    starts = np.cumsum(repeats) - repeats
    before = np.concatenate([[0.0], run])[starts]  # sum of the previous customers' gaps
    partial = run - np.repeat(before, repeats)
    own_sum = np.bincount(owner, weights=gaps, minlength=len(buyers))
    rest = rng.gamma(np.maximum(arrivals - repeats + 1, 1).astype(np.float64))
    fraction = partial / np.repeat(own_sum + rest, repeats)
    warped = np.repeat(w0, repeats) + fraction * np.repeat(window, repeats)
    day = np.floor(warp.backward(warped)).astype(np.int64)
    cust_r = buyers[owner]
    at_r = local_to_epoch(period, day, time_of_day(rng, total), pop.zone[cust_r], offsets)
    at_r = np.maximum(
        at_r, pop.acquired_at[cust_r] + 60 * (1 + np.arange(total) - np.repeat(starts, repeats))
    )

    customer = np.concatenate([buyers, cust_r])
    at = np.minimum(np.concatenate([pop.acquired_at[buyers], at_r]), period.end_epoch - 1)
    first = np.concatenate([np.ones(len(buyers), bool), np.zeros(total, bool)])
    order = np.lexsort((customer, at))
    customer, at, first = customer[order], at[order], first[order]

    spend = rng.gamma(model.spend_p, pop.mean_spend[customer] / model.spend_p)
    cents = np.clip(np.rint(spend * 100).astype(np.int64), 199, MAX_CENTS)

    count = np.bincount(customer, minlength=n).astype(np.int64)
    revenue = np.bincount(customer, weights=cents, minlength=n).astype(np.int64)
    last_at = np.full(n, NO_TIME, dtype=np.int64)
    by_customer = np.lexsort((at, customer))
    ends = np.cumsum(count)[count > 0] - 1
    last_at[count > 0] = at[by_customer[ends]]
    dropped = np.full(n, NO_TIME, dtype=np.int64)
    dead = buyers[died]
    dropped[dead] = last_at[dead]
    return Orders(customer, at, cents, first, count, revenue, last_at, dropped)


@dataclass
class Baskets:
    """Items of a list of orders, flattened: ``order`` is the position in that list."""

    order: NDArray[np.int64]
    category: NDArray[np.int64]
    sku: NDArray[np.int64]
    qty: NDArray[np.int64]
    unit_cents: NDArray[np.int64]
    per_order: NDArray[np.int64]


def draw_products(
    rng: np.random.Generator, favourite: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Category (the customer's favourite 65% of the time) and a popular-first SKU number."""
    n = len(favourite)
    other = rng.choice(len(CATEGORIES), size=n, p=CATEGORY_WEIGHTS)
    category = np.where(rng.random(n) < 0.65, favourite, other).astype(np.int64)
    sku = np.floor(SKUS_PER_CATEGORY * rng.random(n) ** 2.2).astype(np.int64)
    return category, sku


def draw_baskets(
    rng: np.random.Generator, cents: NDArray[np.int64], favourite: NDArray[np.int64]
) -> Baskets:
    """1-6 items per order whose ``qty * price`` add up exactly to the order amount."""
    n = len(cents)
    k = np.minimum(1 + rng.poisson(0.7, n), 6)
    k = np.minimum(k, np.maximum(cents // 100, 1))  # at least 1.00 per item
    order = np.repeat(np.arange(n), k)
    weight = rng.gamma(2.0, 1.0, len(order))
    totals = np.bincount(order, weights=weight, minlength=n)
    share = np.floor(cents[order] * weight / totals[order]).astype(np.int64)
    share = np.maximum(share, 1)
    starts = np.cumsum(k) - k
    share[starts] += cents - np.bincount(order, weights=share, minlength=n).astype(np.int64)
    qty = np.where((share % 2 == 0) & (rng.random(len(order)) < 0.12), 2, 1)
    category, sku = draw_products(rng, favourite[order])
    return Baskets(order, category, sku, qty, share // qty, k)


def draw_coupons(
    rng: np.random.Generator,
    at: NDArray[np.int64],
    first: NDArray[np.bool_],
    period: Period,
    share: float,
) -> NDArray[np.int64]:
    """Coupon code index per order (0 = none) into ``COUPONS``."""
    n = len(at)
    code = np.zeros(n, dtype=np.int64)
    u = rng.random(n)
    code[u < share * 0.5] = rng.integers(3, len(COUPONS), int((u < share * 0.5).sum()))
    code[first & (u > 1 - share)] = 1
    for year in range(period.start.year, period.end.year + 1):
        bf = black_friday(year)
        lo = period.start_epoch + (bf - period.start).days * 86_400
        hi = lo + int(timedelta(days=4).total_seconds())
        in_bf = (at >= lo) & (at < hi) & (rng.random(n) < 0.5)
        code[in_bf] = 2
    return code


COUPONS = ("", "WELCOME10", "BLACKFRIDAY25", "SPRING10", "VIP15", "FREESHIP", "XMAS15")
