"""Ground truth: each customer's latent state at the end of the period and how they respond
to a contact, so that later campaigns can be measured against the truth.

Response model (docs/generator.md has the full definitions): within 30 days after the end
(or after a contact made at the end), the customer buys at least once with probability
``p_no_contact`` when left alone and ``p_if_contacted`` when contacted.

- alive buyers: ``p_no = 1 - exp(-lambda * S30)`` where ``S30`` is the seasonal demand of the
  next 30 days; a contact multiplies the rate by ``1 + boost`` with ``boost = 0.1 + 0.6 e``
  (``e`` the customer's email engagement); "sleeping dogs" instead buy with ``0.4 p_no``;
- buyers who dropped out: ``p_no = 0``; a contact brings them back with probability
  ``reactivation_max * value * exp(-days_since_dropout / reactivation_days) * (0.5 + e)``,
  ``value = min(1, sqrt(revenue / 400))``: high for recently lapsed, high-value customers,
  near zero for long-dead ones;
- prospects (never bought): ``p_no = 0``; a contact converts with probability
  ``0.03 * (0.3 + e) * exp(-days_since_signup / 365)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from winback.generator.model import SECONDS_PER_DAY, Period, ShopModel
from winback.generator.population import DAYS_PER_YEAR, Population
from winback.generator.purchases import NO_TIME, Orders
from winback.generator.seasons import Warp

TRUTH_COLUMNS = (
    "customer_id",
    "purchase_rate_per_year",
    "dropout_p",
    "alive_at_end",
    "p_buy_30d_no_contact",
    "p_buy_30d_if_contacted",
    "mean_spend",
    "dropped_out_at",
)


@dataclass
class Truth:
    purchase_rate_per_year: NDArray[np.float64]  # 0 for prospects
    dropout_p: NDArray[np.float64]  # NaN for prospects
    alive_at_end: NDArray[np.bool_]
    p_no_contact: NDArray[np.float64]
    p_if_contacted: NDArray[np.float64]
    mean_spend: NDArray[np.float64]
    dropped_out_at: NDArray[np.int64]  # NO_TIME while alive


def ground_truth(
    pop: Population, orders: Orders, period: Period, warp: Warp, model: ShopModel
) -> Truth:
    end = period.end_epoch
    s30 = warp.cumulative[period.days + 30] - warp.cumulative[period.days]
    buyer = pop.buyer
    alive = buyer & orders.alive
    e = pop.engagement

    p_no = np.where(alive, -np.expm1(-pop.rate * s30), 0.0)
    boost = 0.1 + 0.6 * e
    p_alive = np.where(pop.sleeping_dog, 0.4 * p_no, -np.expm1(-pop.rate * s30 * (1 + boost)))

    value = np.minimum(1.0, np.sqrt(orders.revenue_cents / 100 / 400))
    dropped = np.minimum(orders.dropped_out_at, end)
    since_drop = (end - dropped) / SECONDS_PER_DAY
    p_dead = (
        model.reactivation_max * value * np.exp(-since_drop / model.reactivation_days) * (0.5 + e)
    )
    since_signup = (end - pop.acquired_at) / SECONDS_PER_DAY
    p_prospect = 0.03 * (0.3 + e) * np.exp(-since_signup / 365.0)

    p_if = np.where(alive, p_alive, np.where(buyer, np.minimum(p_dead, 0.6), p_prospect))
    return Truth(
        purchase_rate_per_year=np.where(buyer, pop.rate * DAYS_PER_YEAR, 0.0),
        dropout_p=np.where(buyer, pop.dropout, np.nan),
        alive_at_end=alive,
        p_no_contact=p_no,
        p_if_contacted=p_if,
        mean_spend=pop.mean_spend,
        dropped_out_at=np.where(buyer, orders.dropped_out_at, NO_TIME),
    )
