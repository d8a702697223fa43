"""The parameters of the synthetic shop, and the period it covers.

Every distribution the generator draws from is named here with its literature parameters, so
that analytics can be checked against the truth (e.g. a BG/NBD fit on the generated orders
should recover ``r``, ``alpha``, ``a`` and ``b`` roughly). See docs/generator.md.
"""

from __future__ import annotations

import calendar
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

DEFAULT_END = date(2026, 3, 1)
"""End of the generated period (exclusive) when none is given: fixed, so output is
reproducible from the seed alone."""

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class ShopModel:
    """Latent-behaviour parameters (rates are per year unless said otherwise).

    Purchases follow BG/NBD (Fader, Hardie and Lee 2005): while alive, a customer buys as a
    Poisson process with rate ``lambda ~ Gamma(shape=r, rate=alpha)`` (per year, before
    seasonality); after each repeat purchase they drop out with probability
    ``p ~ Beta(a, b)``. Spend per order follows Gamma-Gamma (Fader, Hardie and Lee 2005b):
    ``z ~ Gamma(shape=spend_p, rate=nu)`` with ``nu ~ Gamma(shape=spend_q, rate=spend_gamma)``,
    so a customer's mean spend is ``spend_p / nu``.
    """

    r: float = 0.55
    alpha: float = 0.12
    a: float = 0.70
    b: float = 2.60
    spend_p: float = 6.0
    spend_q: float = 4.0
    spend_gamma: float = 30.0
    max_rate_per_year: float = 120.0
    prospect_share: float = 0.20
    """Share of contacts who signed up (newsletter, account) but never bought."""
    growth_per_year: float = 0.45
    """Acquisitions grow exponentially: the last year has ``exp(growth)`` times the first's."""
    email_consent: float = 0.70
    sms_consent: float = 0.30
    push_consent: float = 0.20
    phone_share: float = 0.55
    birthday_share: float = 0.80
    privacy_proxy_share: float = 0.35
    """Share of email recipients whose mail client pre-fetches images (e.g. Apple Mail
    Privacy Protection): every delivered email is 'opened' by a machine within seconds."""
    bad_address_share: float = 0.02
    emails_per_month: float = 0.5
    """Marketing emails a subscriber receives per month on average (weekly campaigns, each
    to a share of the subscribers, plus holiday campaigns)."""
    activity: float = 1.0
    """Multiplier of all email sends and site visits (``mean_events`` calibrates it)."""
    tracked_share: float = 0.70
    """Share of customers whose site visits are tracked (the rest block the tracker)."""
    visits_per_purchase: float = 1.0
    """Tracked browsing sessions per expected purchase while alive."""
    base_visits_per_year: float = 1.0
    sleeping_dog_share: float = 0.05
    """Share of alive buyers whom a contact annoys: contacting them lowers their purchase
    probability (negative uplift)."""
    reactivation_max: float = 0.25
    """Probability that a contact brings back a just-lapsed, high-value customer."""
    reactivation_days: float = 120.0
    """e-folding time of that probability after the customer dropped out."""
    coupon_share: float = 0.15


@dataclass(frozen=True)
class Period:
    """The generated period ``[start, end)`` in whole UTC days."""

    start: date
    end: date
    months: int

    @classmethod
    def ending(cls, end: date, months: int) -> Period:
        year, month = end.year, end.month - months
        while month < 1:
            month += 12
            year -= 1
        day = min(end.day, calendar.monthrange(year, month)[1])
        return cls(start=date(year, month, day), end=end, months=months)

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    @property
    def start_epoch(self) -> int:
        return int(
            datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC).timestamp()
        )

    @property
    def end_epoch(self) -> int:
        return self.start_epoch + self.days * SECONDS_PER_DAY


@dataclass(frozen=True)
class GeneratorSettings:
    """Everything that determines the output, for the record (``parameters.json``)."""

    customers: int
    months: int
    seed: int
    end: date
    dirty_share: float
    mean_orders: float | None
    mean_events: float | None = None
    model: ShopModel = field(default_factory=ShopModel)
    rate_scale: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["end"] = self.end.isoformat()
        return data
