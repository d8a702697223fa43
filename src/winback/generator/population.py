"""Who the customers are: latent behaviour (purchase rate, dropout, spend, engagement) and
profile (acquisition time, market, consent, birthday) for a chunk of customers.

Everything is drawn with NumPy for a whole chunk at once from a generator seeded by
``(seed, stream, chunk)``, so the output does not depend on the machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from winback.generator.locales import ACQUISITION_WEIGHTS, MARKETS
from winback.generator.model import SECONDS_PER_DAY, Period, ShopModel
from winback.generator.seasons import Warp, local_to_epoch, time_of_day

DAYS_PER_YEAR = 365.25
CATEGORIES = ("shoes", "apparel", "accessories", "beauty", "home", "sport", "kids", "gifts")
CATEGORY_WEIGHTS = np.array([0.18, 0.24, 0.14, 0.12, 0.1, 0.1, 0.07, 0.05])


@dataclass
class Population:
    """Latent and profile attributes of ``n`` customers with global indices ``index``."""

    index: NDArray[np.int64]
    buyer: NDArray[np.bool_]
    acquired_at: NDArray[np.int64]  # epoch seconds; a buyer's first order
    rate: NDArray[np.float64]  # purchases per warped day while alive
    dropout: NDArray[np.float64]
    mean_spend: NDArray[np.float64]
    engagement: NDArray[np.float64]
    proxy: NDArray[np.bool_]
    bad_address: NDArray[np.bool_]
    tracked: NDArray[np.bool_]
    sleeping_dog: NDArray[np.bool_]
    email_consent: NDArray[np.bool_]
    sms_consent: NDArray[np.bool_]
    push_consent: NDArray[np.bool_]
    zone: NDArray[np.int64]
    favourite: NDArray[np.int64]
    channel: NDArray[np.int64]

    @property
    def n(self) -> int:
        return len(self.index)


def draw_latent(
    rng: np.random.Generator, n: int, model: ShopModel, rate_scale: float
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Purchase rate per (warped) day, dropout probability and mean spend per order."""
    rate = rng.gamma(model.r, 1.0 / model.alpha, n) * rate_scale
    rate = np.minimum(rate, model.max_rate_per_year) / DAYS_PER_YEAR
    dropout = rng.beta(model.a, model.b, n)
    nu = rng.gamma(model.spend_q, 1.0 / model.spend_gamma, n)
    return rate, dropout, model.spend_p / nu


def draw_acquisition_day(
    rng: np.random.Generator, n: int, period: Period, growth: float
) -> NDArray[np.float64]:
    """Days since the start, with a density growing like ``exp(growth * years)``."""
    u = rng.random(n)
    g = growth / DAYS_PER_YEAR
    if abs(g) < 1e-12:
        return u * period.days
    result: NDArray[np.float64] = np.log1p(u * np.expm1(g * period.days)) / g
    return result


def draw_population(
    rng: np.random.Generator,
    index: NDArray[np.int64],
    period: Period,
    model: ShopModel,
    rate_scale: float,
    offsets: NDArray[np.int64],
) -> Population:
    n = len(index)
    rate, dropout, mean_spend = draw_latent(rng, n, model, rate_scale)
    buyer = rng.random(n) >= model.prospect_share
    zone = rng.choice(len(MARKETS), size=n, p=_weights([m.weight for m in MARKETS]))
    day = draw_acquisition_day(rng, n, period, model.growth_per_year).astype(np.int64)
    acquired = local_to_epoch(period, day, time_of_day(rng, n), zone, offsets)
    acquired = np.clip(acquired, period.start_epoch, period.end_epoch - 3600)
    engagement = rng.beta(1.3, 3.5, n)
    email = rng.random(n) < model.email_consent
    proxy = rng.random(n) < model.privacy_proxy_share
    return Population(
        index=index,
        buyer=buyer,
        acquired_at=acquired,
        rate=rate,
        dropout=dropout,
        mean_spend=mean_spend,
        engagement=engagement,
        proxy=proxy,
        bad_address=rng.random(n) < model.bad_address_share,
        tracked=rng.random(n) < model.tracked_share,
        sleeping_dog=rng.random(n) < model.sleeping_dog_share,
        email_consent=email,
        # SMS and push consent are likelier among email subscribers.
        sms_consent=rng.random(n) < model.sms_consent * np.where(email, 1.25, 0.42),
        push_consent=rng.random(n) < model.push_consent,
        zone=zone.astype(np.int64),
        favourite=rng.choice(len(CATEGORIES), size=n, p=CATEGORY_WEIGHTS).astype(np.int64),
        channel=rng.choice(len(ACQUISITION_WEIGHTS), size=n, p=_weights(ACQUISITION_WEIGHTS)),
    )


def expected_orders(
    rate: NDArray[np.float64], dropout: NDArray[np.float64], window: NDArray[np.float64]
) -> NDArray[np.float64]:
    """BG/NBD expected repeat purchases in a (warped) window: ``(1 - exp(-lambda p t)) / p``."""
    return -np.expm1(-rate * dropout * window) / dropout


def calibrate_rate_scale(
    seed: int, period: Period, model: ShopModel, warp: Warp, mean_orders: float
) -> float:
    """The factor on every purchase rate that gives ``mean_orders`` orders per contact on
    average (prospects included), found by bisection on a fixed sample."""
    rng = np.random.default_rng([seed, 99])
    n = 200_000
    rate, dropout, _ = draw_latent(rng, n, model, 1.0)
    rate = rate * DAYS_PER_YEAR  # back to per year, before the cap
    day = draw_acquisition_day(rng, n, period, model.growth_per_year)
    window = warp.forward(np.full(n, float(period.days))) - warp.forward(day)
    buyers = 1.0 - model.prospect_share
    lo, hi = -12.0, 12.0
    for _ in range(45):
        mid = (lo + hi) / 2
        scaled = np.minimum(rate * np.exp(mid), model.max_rate_per_year) / DAYS_PER_YEAR
        mean = buyers * (1.0 + expected_orders(scaled, dropout, window).mean())
        lo, hi = (mid, hi) if mean < mean_orders else (lo, mid)
    return float(np.exp((lo + hi) / 2))


def seconds_to_days(epoch: NDArray[np.int64], period: Period) -> NDArray[np.float64]:
    return (epoch - period.start_epoch) / SECONDS_PER_DAY


def _weights(values: tuple[float, ...] | list[float]) -> NDArray[np.float64]:
    w = np.asarray(values, dtype=np.float64)
    result: NDArray[np.float64] = w / w.sum()
    return result
